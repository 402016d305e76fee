"""Issue 15: faults injected for real, and what survives them.

* the MLflow server killed after the run started, before the model is logged;
* a new version committed to the training table while a run reads it;
* SIGTERM during each step of ``orchestrator run`` (loading, tuning, training,
  validation, logging);
* the output directory's disk full (a small tmpfs; skipped where mounting is
  not allowed).
* a Spark Python worker SIGKILLed in the middle of a tuning trial.

Two scoring jobs on the same input and model at once are covered by
tests/test_scoring.py::test_dotted_column_names_and_concurrent_jobs_write_each_row_once.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import run_ml_workflow

FEATURES = [{"columns": [f"f{i}" for i in range(6)], "type": "numeric"}]


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"f{i}" for i in range(6)])
    frame["label"] = (frame["f0"] + frame["f1"] * frame["f2"] + rng.normal(size=n) > 0
                      ).astype(int)
    return frame


# ---------------------------------------------------------------- MLflow server killed


class _KillOnStep(logging.Handler):
    """Runs ``action`` in the workflow's thread when the step's "started" line is logged."""

    def __init__(self, step: str, action):
        super().__init__()
        self.step, self.action, self.fired = step, action, False

    def emit(self, record):
        if not self.fired and record.getMessage().endswith(f"{self.step}: started"):
            self.fired = True
            self.action()


@pytest.mark.mlflow_server
def test_mlflow_server_killed_before_the_model_is_logged(tmp_path, monkeypatch):
    import mlflow

    from _mlflow_server import MLFLOW_BIN, free_port, stop_process_group
    from orchestrator.tracking.uri import bounded_http_env

    for name, value in bounded_http_env(10).items():  # what the CLI sets for a job
        monkeypatch.setenv(name, value)
    root = tmp_path / "server"
    root.mkdir()

    def start_server():
        port = free_port()
        process = subprocess.Popen(
            [str(MLFLOW_BIN), "server", "--backend-store-uri", f"sqlite:///{root / 'db.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd=root)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                return process, url
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.5)

    server, url = start_server()
    killer = _KillOnStep("mlflow_logging", lambda: stop_process_group(server))
    workflow_logger = logging.getLogger("orchestrator.workflow")
    workflow_logger.addHandler(killer)
    level = workflow_logger.level
    workflow_logger.setLevel(logging.INFO)  # the step lines are INFO
    frame = _frame(300)
    try:
        results = run_ml_workflow(
            FEATURES, {"estimator": "logistic_regression"}, X=frame.drop(columns="label"),
            y=frame["label"], validation_params={"cv_folds": 3},
            mlflow_spec={"tracking_uri": url, "experiment_name": "faults", "timeout_s": 10},
            output_dir=tmp_path / "out")
    finally:
        workflow_logger.removeHandler(killer)
        workflow_logger.setLevel(level)
        stop_process_group(server)
    assert results.mlflow_run_id and killer.fired, results.warnings
    # Nothing trained is lost: the model and the summary are under the output directory.
    model_dir = Path(results.artifacts["local_model"])
    assert model_dir == tmp_path / "out" / "model"
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    assert len(loaded.predict(frame.drop(columns="label").head(5))) == 5
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "saved locally" in summary and results.cv_score is not None
    steps = {w.step for w in results.warnings}
    assert "mlflow_logging" in steps and "mlflow_tracking" in steps, results.warnings
    ending = next(w.reason for w in results.warnings if w.step == "mlflow_tracking")
    # The run shows RUNNING in the store, and the warning says exactly how to end it.
    store = mlflow.MlflowClient(f"sqlite:///{root / 'db.db'}")
    assert store.get_run(results.mlflow_run_id).info.status == "RUNNING"
    command = re.search(r'python -c "(.*)"$', ending).group(1)
    server, new_url = start_server()
    try:
        subprocess.run([sys.executable, "-c", command.replace(url, new_url)], check=True,
                       timeout=120)
    finally:
        stop_process_group(server)
    assert store.get_run(results.mlflow_run_id).info.status == "FAILED"


# ---------------------------------------------------------------- concurrent table writer


@pytest.mark.spark
def test_a_run_reads_one_version_while_a_writer_commits(spark, tmp_path):
    from orchestrator.io.training_data import load_training_data
    from orchestrator.specs.data import parse_data_spec
    from orchestrator.specs.problems import Problems

    path = str(tmp_path / "training")
    batch = 200

    def rows(version):
        frame = _frame(batch, seed=version)
        frame["batch"] = float(version)
        return spark.createDataFrame(frame)

    rows(0).write.format("delta").save(path)
    stop = threading.Event()
    committed = [0]

    def writer():
        version = 0
        while not stop.is_set():
            version += 1
            rows(version).write.format("delta").mode("append").save(path)
            committed[0] = version

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    problems = Problems()
    spec = parse_data_spec({"path": path, "label": "label"}, problems)
    problems.raise_if_any()
    reads = []
    try:
        deadline = time.monotonic() + 120
        while (len(reads) < 3 or committed[0] < 2) and time.monotonic() < deadline:
            before = committed[0]
            loaded = load_training_data(spark, spec, feature_columns=["f0", "batch"])
            reads.append((before, committed[0], loaded))
    finally:
        stop.set()
        thread.join(120)
    assert committed[0] >= 2, "the writer never committed during the reads"
    for before, after, loaded in reads:
        version = loaded.lineage["delta_version"]
        # One consistent snapshot: exactly the rows of versions 0..version, recorded as read.
        assert before <= version <= after + 1
        assert len(loaded.X) == batch * (version + 1)
        assert sorted(loaded.X["batch"].unique()) == [float(v) for v in range(version + 1)]


# ---------------------------------------------------------------- SIGTERM in each step


_NO_VALIDATION = "validation: {strategy: none}\n"
_SIGTERM_STEPS = {  # step -> the config lines that reach it soon and make it last seconds
    "data_loading": _NO_VALIDATION,
    "tuning": _NO_VALIDATION + (
        "tuning: {backend: local, max_evals: 200, cv_folds: 3, search_space: "
        "{max_depth: {dist: randint, low: 8, high: 12}}}\n"),
    "training": _NO_VALIDATION,
    "validation": "validation: {strategy: cross_validation, params: {cv_folds: 3}}\n",
    "mlflow_logging": _NO_VALIDATION,  # logging a 300-tree forest (and its signature) takes s
}


def _default_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture(scope="module")
def sigterm_table(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("sigterm") / "table"
    spark.createDataFrame(_frame(20_000)).write.format("delta").save(str(path))
    return path


@pytest.mark.spark
@pytest.mark.parametrize("step", list(_SIGTERM_STEPS))
def test_sigterm_in_each_step_exits_143_and_ends_the_run_killed(step, sigterm_table,
                                                                tmp_path):
    import mlflow
    from deltalake import DeltaTable

    version_before = DeltaTable(str(sigterm_table)).version()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "job.yml").write_text(
        "features: [{columns: [f0, f1, f2, f3, f4, f5], type: numeric}]\n"
        "model: {estimator: random_forest, params: {n_estimators: 300, n_jobs: 1}}\n"
        f"data: {{path: {sigterm_table}, label: label}}\n"
        f"mlflow: {{tracking_uri: '{store}', experiment_name: sigterm}}\n"
        f"output_dir: {tmp_path / 'out'}\n" + _SIGTERM_STEPS[step])
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    # Started the way a scheduler starts a job: default signal dispositions (a disposition the
    # test process happens to have must not be inherited).
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "job.yml",
                                "--master", "local[1]", "--verbose"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_default_signals)
    lines, sent = [], None
    try:
        for line in process.stdout:
            lines.append(line)
            if sent is None and re.search(rf"Step \d/8 {step}: started", line):
                process.send_signal(signal.SIGTERM)
                sent = time.monotonic()
                break
        assert sent is not None, "".join(lines[-40:])
        code = process.wait(timeout=120)
        took = time.monotonic() - sent
        lines.extend(process.stdout.readlines())
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines)
    assert code == 143, output[-4000:]
    assert took < 30, f"exited {took:.1f} s after SIGTERM"
    runs = mlflow.MlflowClient(store).search_runs(
        [mlflow.MlflowClient(store).get_experiment_by_name("sigterm").experiment_id])
    assert [r.info.status for r in runs if "parentRunId" not in str(r.data.tags)] == \
        ["KILLED"], output[-4000:]
    assert DeltaTable(str(sigterm_table)).version() == version_before
    assert "Traceback" not in output, output[-4000:]


# ---------------------------------------------------------------- disk full


@pytest.fixture
def full_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_output_disk_is_a_clear_error_naming_the_directory(full_disk, tmp_path):
    from orchestrator.errors import StepError

    filler = full_disk / "filler"
    filler.write_bytes(b"\x01" * (1024 * 1024 - 64 * 1024))  # the disk is (almost) full
    frame = _frame(200)
    output = full_disk / "out"
    with pytest.raises(StepError, match=re.escape(repr(str(output))) + " has only .* KiB free"):
        run_ml_workflow(FEATURES, {"estimator": "logistic_regression"},
                        X=frame.drop(columns="label"), y=frame["label"],
                        validation_strategy="none", output_dir=output)
    # Nothing else damaged: the other file on that disk is intact, nothing is left beside it.
    assert filler.read_bytes() == b"\x01" * (1024 * 1024 - 64 * 1024)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# ---------------------------------------------------------------- worker killed mid-trial


@pytest.mark.spark
@pytest.mark.classic_only("kills a classic Python worker forked by the local daemon")
def test_a_worker_killed_in_a_tuning_trial_is_one_failed_trial(spark):
    from pyspark import cloudpickle
    from sklearn.pipeline import Pipeline

    import _fault_estimators
    from orchestrator.specs import parse_specs
    from orchestrator.steps.metrics import MetricScorer
    from orchestrator.steps.pipeline import build_preprocessor
    from orchestrator.tuning import tune

    # Specs name only scikit-learn's own classes, so the killing model is put in by hand.
    cloudpickle.register_pickle_by_value(_fault_estimators)
    specs = parse_specs(
        feature_specs=FEATURES, model_spec={"estimator": "logistic_regression"},
        tuning_spec={"backend": "spark", "max_evals": 6, "parallelism": 2, "seed": 3,
                     "cv_folds": 2, "algo": "random",
                     "search_space": {"C": {"dist": "loguniform", "low": 0.01, "high": 10}}},
        data_given=True)
    import dataclasses

    from orchestrator.specs.tuning import Distribution

    space = {**specs.tuning.search_space,
             "kill_worker": Distribution(kind="choice", options=(0, 1))}
    tuning = dataclasses.replace(specs.tuning, search_space=space)
    pipeline = Pipeline([("preprocess", build_preprocessor(specs.features)),
                         ("model", _fault_estimators.WorkerKillingClassifier(
                             driver_pid=os.getpid()))])
    frame = _frame(300)
    outcome = tune(pipeline, frame.drop(columns="label"), frame["label"], tuning,
                   model_spec=specs.model, scoring=MetricScorer("binary", "roc_auc", 1),
                   spark=spark)
    summary = outcome.summary
    trials = summary["trials"]
    killed = [t for t in trials if t["params"]["kill_worker"] == 1]
    assert killed, "the seed drew no killing trial; the test would prove nothing"
    assert summary["trials_run"] == 6 and len(trials) == 6  # the search went on
    for trial in killed:  # each killed worker is exactly one failed trial, with the reason
        assert trial["status"] == "fail" and trial["error"], trial
    finished = [t for t in trials if t["status"] == "ok"]
    assert finished and all(t["params"]["kill_worker"] == 0 for t in finished)
    assert outcome.best_params["model__kill_worker"] == 0
    assert summary["best_score"] == max(t["score"] for t in finished)
