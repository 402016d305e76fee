"""What the command line prints: version, manual pages, a short run with Spark's output in a file."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator._version import __version__
from orchestrator.entrypoints.cli import _guarded, main
from orchestrator.entrypoints.console import ConsoleFilter

SUBCOMMANDS = ["validate", "run", "score", "demo-data", "report", "reproduce", "compare"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip().startswith(f"orchestrator {__version__} ")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_each_command_has_a_manual_page(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    page = capsys.readouterr().out
    examples = page.split("EXAMPLES", 1)[1]
    assert re.search(rf"^\s+orchestrator {re.escape(command)} \S", examples, re.M), page
    for code, meaning in (("0", "success"), ("1", "a step failed"), ("2", "bad config"),
                          ("130", r"interrupted \(Ctrl-C\)$"), ("143", "stopped by SIGTERM")):
        assert re.search(rf"^\s+{code}\s+{meaning}", page, re.M), (code, page)
    # A backslash continuation in the example source must stay one on the page.
    assert not re.search(r"\S {4,}--", examples), examples
    # Every option states its default (or that it is required).
    options = [line for line in page.splitlines() if re.match(r"\s+--?\w", line)]
    assert options
    body = page.split("options:", 1)[1].split("EXAMPLES", 1)[0]
    for block in re.split(r"\n(?=  -)", body.strip()):
        if block.lstrip().startswith("-h, --help"):
            continue
        required = block.split()[0] in ("--model-uri", "--input", "--output") \
            and command == "score"
        assert "default" in block or required, block


def test_top_level_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    page = capsys.readouterr().out
    assert "0 success, 1 a step failed, 2 bad config" in page
    assert "130 interrupted (Ctrl-C), 143 stopped by SIGTERM" in page
    assert not re.search(r"\S {4,}--output", page), page  # the score example's line break
    assert "--version" in page and "--verbose" in page


@pytest.mark.parametrize("signum, code, meaning", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                                   (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_a_signal_exits_with_the_code_the_manual_page_gives(signum, code, meaning, capsys):
    def stopped() -> int:
        os.kill(os.getpid(), signum)
        time.sleep(10)  # the signal's handler raises before this ends
        return 0

    try:
        exit_code = _guarded(stopped)
    except SystemExit as exc:  # SIGTERM unwinds as SystemExit(143), which the process exits with
        exit_code = exc.code
    assert exit_code == code
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}", capsys.readouterr().out, re.M)


def _record(msg, args=(), name="orchestrator.tuning.objective", level=logging.INFO):
    return logging.LogRecord(name, level, __file__, 0, msg, args, None)


def test_console_filter_keeps_what_matters():
    times = iter([0.0, 1.0, 2.0, 6.5, 7.0])
    console = ConsoleFilter(progress_every_s=5.0, clock=lambda: next(times))
    progress = "Tuning: %d/%d trials done (%d failed), best %s %s, %.1f s elapsed"
    shown = [console.filter(_record(progress, (n, 5, 0, "roc_auc", "0.8", 1.0)))
             for n in (1, 2, 3, 4, 5)]
    # The first, the next after 5 s, and the last trial always.
    assert shown == [True, False, False, True, True]
    step = "orchestrator.workflow"
    assert not console.filter(_record("Step %d/8 %s: started", (1, "data_loading"), step))
    assert console.filter(_record("Step %d/8 %s: finished in %.2f s", (1, "x", 1.0), step))
    assert not console.filter(_record("Closing down clientserver connection", name="py4j"))
    assert console.filter(_record("disk full", name="py4j", level=logging.WARNING))


# ------------------------------------------------------------------ a real run, end to end

_CONFIG = """\
data: {{path: {data}/churn, label: churned}}
features:
  - {{columns: [age, tenure_months, monthly_charges], type: numeric}}
  - {{columns: [plan, region], type: categorical}}
model: {{estimator: logistic_regression, params: {{max_iter: 200}}}}
validation: {{strategy: cross_validation, params: {{cv_folds: 2}}}}
output_dir: {out}
"""


@pytest.fixture(scope="module")
def small_job(spark, tmp_path_factory):
    """A 300-customer demo table and a config training on it."""
    from orchestrator.io.demo_data import write_demo_tables

    root = tmp_path_factory.mktemp("cli_output")
    write_demo_tables(spark, str(root / "data"), n_customers=300, seed=3)
    config = root / "job.yml"
    config.write_text(_CONFIG.format(data=root / "data", out=root / "out"))
    return config, root / "out"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def _summary_lines(stdout: str) -> int:
    rulers = [i for i, line in enumerate(stdout.splitlines()) if set(line) == {"="}]
    return rulers[-1] - rulers[0] + 1 if len(rulers) >= 2 else 0


@pytest.mark.spark
def test_run_prints_steps_and_summary_and_names_its_log(small_job):
    config, out = small_job
    result = _run("run", str(config), "--master", "local[1]")
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    lines = console.splitlines()
    # Our lines (steps, warnings, the log file) besides the summary: a screenful at most.
    assert len(lines) - _summary_lines(result.stdout) <= 30, console
    assert "Step 1/8 data_loading: finished in" in console
    assert "Step 6/8 validation: finished in" in console
    assert "ML workflow summary" in result.stdout
    for noise in (":: resolution report", "Ivy Default Cache", " WARN ", "log4j",
                  "Using incubator modules"):
        assert noise not in console, noise
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("log: "), last
    log = Path(last.split()[1])
    assert log.is_file() and log.parent == out / "logs"
    text = log.read_text()
    assert "INFO SparkContext: Running Spark version" in text  # log4j writes to it
    assert "Step 1/8 data_loading: started" in text            # and every Python log line


@pytest.mark.spark
def test_verbose_shows_everything(small_job):
    config, _ = small_job
    result = _run("run", str(config), "--master", "local[1]", "--verbose")
    assert result.returncode == 0, result.stderr
    # Lines the default console hides: step starts, and the JVM's own output.
    assert "orchestrator.workflow: Step 1/8 data_loading: started" in result.stderr
    assert "Using incubator modules" in result.stderr or " WARN " in result.stderr
    assert not result.stdout.rstrip().splitlines()[-1].startswith("log: ")


def _exit_code(job) -> int:
    """The code the CLI exits with for ``job`` (SIGTERM unwinds as SystemExit(143))."""
    try:
        return _guarded(job)
    except SystemExit as exc:
        return exc.code


class _SigtermInFinalizer:
    """Sends SIGTERM from its finalizer and stays there while the handler runs."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # bytecode runs: the handler runs in here
            pass


def test_a_sigterm_landing_in_a_finalizer_still_stops_the_job(capsys):
    # Python drops an exception raised in a finalizer ("Exception ignored in ..."); py4j
    # finalizes Java object references on every garbage collection, so a SIGTERM can land
    # there. It must stop the job right after the finalizer, not be lost.
    def job() -> int:
        _SigtermInFinalizer()  # finalized at once, SIGTERM inside
        time.sleep(10)
        return 0

    started = time.monotonic()
    exit_code = _exit_code(job)
    assert exit_code == 143
    assert time.monotonic() - started < 5
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_sigterm_the_work_outlived_still_gives_its_exit_code(capsys, monkeypatch):
    from orchestrator.entrypoints import process

    # As if every frame were a finalizer: the stop is deferred past the end of the work.
    monkeypatch.setattr(process, "in_finalizer", lambda frame: True)

    def job() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    assert _guarded(job) == 143
    assert "stopped by signal 15 (SIGTERM) as the work ended" in capsys.readouterr().err


def test_a_sigterm_a_library_swallows_still_stops_the_job():
    # Some library code catches BaseException around a blocking call; the stop must come again.
    swallowed = []

    def job() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except BaseException as exc:  # noqa: BLE001 - the careless library
            swallowed.append(exc)
        time.sleep(20)
        return 0

    started = time.monotonic()
    exit_code = _exit_code(job)
    assert exit_code == 143
    assert time.monotonic() - started < 10
    assert [type(exc) for exc in swallowed] == [SystemExit]  # it was swallowed once
