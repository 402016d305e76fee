"""Command line: ``orchestrator validate|run|score|demo-data|report|reproduce|compare``.

One ``main(argv)`` per job serves the console scripts, ``spark-submit jobs/...``
and Databricks ``python_wheel_task`` entry points alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from orchestrator.errors import OrchestratorError, SpecError

logger = logging.getLogger("orchestrator")

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC = 0, 1, 2

_DESCRIPTION = """\
Run spec-driven ML training workflows on Spark and Delta Lake.

A job is one YAML config holding every spec (features, model, data,
validation, and the optional tuning, calibration and mlflow sections).
"""
_EPILOG = """\
examples:
  orchestrator validate conf/demo.yml          check a config; starts no Spark, reads no data
  orchestrator demo-data --output data/demo    write the demo Delta tables
  orchestrator run conf/demo.yml               train, validate and print the summary
  orchestrator score --model-uri models:/churn@champion --input data/demo/churn \\
      --output data/demo/churn_predictions     batch-score a Delta table into a Delta table
  spark-submit jobs/train.py --config conf/demo.yml   the same, through spark-submit

exit codes: 0 success, 1 a step failed, 2 bad config, specs or arguments,
  130 interrupted (Ctrl-C), 143 stopped by SIGTERM

Each command has its own page: orchestrator COMMAND --help. By default a run
prints one line per step, progress, warnings and the summary; Spark's own
output goes to a log file named in the last line (--verbose shows everything).
"""


def setup_logging(level: str = "INFO") -> None:
    """Log lines with a timestamp to stderr; quiet Spark's py4j chatter."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much progress to log (default: INFO)")
    parser.add_argument("--version", action="version", version=_version_text())
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="show every log line and Spark's own output on the console "
                        "(default: off)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a config without starting Spark",
                                   description="Validate every spec of a job config and report "
                                   "all problems at once. Reads no data and starts no Spark.")
    validate.add_argument("config", help="path to the job's YAML config")

    run = commands.add_parser("run", help="run the training workflow of a config",
                              description="Load the data, build, tune, fit, calibrate, "
                              "validate and track the model a config describes, then print the "
                              "workflow summary.")
    _add_run_arguments(run)

    score = commands.add_parser("score", help="batch-score a Delta table with an MLflow model",
                                description="Score a Delta table with an MLflow model "
                                "(mlflow.pyfunc.spark_udf) and append labels, class "
                                "probabilities, the model version and a timestamp to a Delta "
                                "table. Re-running for the same input version appends nothing.")
    _add_score_arguments(score)

    demo = commands.add_parser("demo-data", help="write the demo Delta tables",
                               description="Generate the customer-churn demo data and write it "
                               "as Delta tables: churn, customer_features, churn_labels.")
    demo.add_argument("--output", default="data/demo", help="directory for the tables "
                      "(default: data/demo)")
    demo.add_argument("--customers", type=int, default=5000, help="customers to generate "
                      "(default: 5000)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    demo.add_argument("--master", help="Spark master for a new session (default: "
                      "$SPARK_MASTER or local[*])")
    demo.add_argument("--remote", help="Spark Connect URL for a new session instead of a "
                      "master: sc://host:15002 or local[2] (default: $SPARK_REMOTE)")
    _add_trust_commands(commands)
    for name in ("run", "score", "demo-data", "reproduce"):
        _add_console_arguments(commands.choices[name])
    _document_commands(commands)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser, *, config_flag: bool = False) -> None:
    if config_flag:
        parser.add_argument("--config", required=True, help="path to the job's YAML config")
    else:
        parser.add_argument("config", help="path to the job's YAML config")
    parser.add_argument("--master", help="Spark master for a new session (default: the config's "
                        "spark.master, $SPARK_MASTER, or local[*]); ignored when a session is "
                        "active, as on Databricks")
    parser.add_argument("--remote", help="Spark Connect URL for a new session instead of a "
                        "master: sc://host:15002 or local[2] (default: the config's "
                        "spark.remote or $SPARK_REMOTE)")
    parser.add_argument("--output-dir", help="where plots and artifacts go (default: the "
                        "config's output_dir)")
    parser.add_argument("--fail-on-reject", action="store_true", help="exit 1 when the "
                        "config's promotion gate rejects the model (default: exit 0 either way)")


def _add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-uri", required=True, help="runs:/<run_id>/model, "
                        "models:/<name>/<version>, models:/<name>@<alias> or a model directory")
    parser.add_argument("--input", required=True, help="the Delta table to score: a path "
                        "(contains '/') or a table name (catalog.schema.table)")
    parser.add_argument("--output", required=True, help="the Delta table receiving the "
                        "predictions (path or name; created on the first run)")
    parser.add_argument("--input-version", type=int, help="the input's Delta version to score "
                        "(default: the latest)")
    parser.add_argument("--keep-columns", help="comma-separated input columns copied to the "
                        "output, e.g. the row key (default: all)")
    parser.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: "
                        "$MLFLOW_TRACKING_URI)")
    parser.add_argument("--master", help="Spark master for a new session (default: "
                        "$SPARK_MASTER or local[*]); ignored when a session is active")
    parser.add_argument("--remote", help="Spark Connect URL for a new session instead of a "
                        "master: sc://host:15002 or local[2] (default: $SPARK_REMOTE)")


def command_score(args: argparse.Namespace) -> int:
    from orchestrator.scoring import score_table
    from orchestrator.io.session import get_spark

    if args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)
        mlflow.set_registry_uri(args.tracking_uri)
    keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()] \
        if args.keep_columns else None
    spark = get_spark("orchestrator-score", master=args.master,
                      remote=_remote_for_new_session(args.master, getattr(args, "remote", None)),
                      **(getattr(args, "session_options", None) or {}))
    if not logger.isEnabledFor(logging.DEBUG):
        _mute_spark()
    result = score_table(spark, args.model_uri, args.input, args.output,
                         input_version=args.input_version, keep_columns=keep)
    model = (f"{result.model_name} v{result.model_version}" if result.model_version
             else result.model_uri)
    if result.skipped:
        print(f"{result.input} version {result.input_version} was already scored with {model}; "
              f"{result.output} unchanged (version {result.output_version}).")
    else:
        print(f"wrote {result.rows_written} predictions of {result.input} version "
              f"{result.input_version} by {model} to {result.output} (version "
              f"{result.output_version}).")
    from orchestrator.entrypoints.notebook_support import set_task_value

    set_task_value("predictions_version", result.output_version)
    return EXIT_OK


def _mute_spark() -> None:
    from orchestrator.entrypoints.process import mute_spark_console_errors

    mute_spark_console_errors()


def _quiet_spark(spark) -> None:
    """Spark logs WARN and above, so our step lines stand out from its INFO chatter."""
    from pyspark.errors import PySparkException

    _mute_spark()
    try:
        spark.sparkContext.setLogLevel("WARN")
    except PySparkException:
        logger.debug("no SparkContext to quiet (Spark Connect)")


def command_validate(config_path: str) -> int:
    from orchestrator.config import load_config
    from orchestrator.entrypoints.training import validate_job

    config = load_config(config_path)
    specs = validate_job(config)
    optional = [name for name in ("tuning", "calibration", "mlflow")
                if getattr(specs, name) is not None]
    print(f"{config_path}: valid. {len(specs.features)} feature spec(s), model "
          f"{specs.model.estimator} ({specs.model.task}), validation "
          f"{specs.validation.strategy}; optional steps: {', '.join(optional) or 'none'}.")
    return EXIT_OK


def command_run(config_path: str, *, master: str | None = None,
                output_dir: str | None = None, fail_on_reject: bool = False,
                session_options: dict | None = None, remote: str | None = None) -> int:
    from orchestrator.entrypoints.training import run_config
    from orchestrator.summary import get_workflow_summary

    results = run_config(config_path, master=master, remote=remote, output_dir=output_dir,
                         on_session=None if logger.isEnabledFor(logging.DEBUG) else _quiet_spark,
                         session_options=session_options)
    print(get_workflow_summary(results))
    from orchestrator.entrypoints.notebook_support import set_task_value, training_task_values

    # For a train-then-score job: the score task reads {{tasks.train.values.model_version}}.
    for key, value in training_task_values(results).items():
        set_task_value(key, value)
    promotion = results.promotion or {}
    if fail_on_reject and promotion.get("decision") == "rejected":
        print(f"error: the promotion gate rejected the model: {promotion.get('reason')}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def command_demo_data(output: str, *, customers: int, seed: int, master: str | None,
                      session_options: dict | None = None, remote: str | None = None) -> int:
    from orchestrator.io.demo_data import write_demo_tables
    from orchestrator.io.session import get_spark

    spark = get_spark("orchestrator-demo-data", master=master,
                      remote=_remote_for_new_session(master, remote), **(session_options or {}))
    if not logger.isEnabledFor(logging.DEBUG):
        _mute_spark()
    tables = write_demo_tables(spark, output, n_customers=customers, seed=seed)
    for name, location in tables.items():
        print(f"{name}: {location}")
    return EXIT_OK


# ----------------------------------------------------------------------------- issue 13:
# report, reproduce, compare (one block; the commands read runs back from MLflow)


def _add_trust_commands(commands) -> None:
    report = commands.add_parser("report", help="write a run's HTML report",
                                 description="Write the self-contained HTML report (summary, "
                                 "lineage, metrics, tuning, calibration, plots, warnings, "
                                 "promotion) of any tracked run, from what the run logged.")
    report.add_argument("run_id", help="the MLflow run id")
    report.add_argument("-o", "--output", default="report.html",
                        help="the HTML file to write (default: report.html)")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db)")

    reproduce = commands.add_parser(
        "reproduce", help="re-run a tracked run pinned to the data versions it read",
        description="Re-run a tracked run from its logged resolved config, every Delta table "
        "(data, feature-store labels and lookups) pinned to the version the run read, with the "
        "same seeds, in a new MLflow run in the same store tagged "
        "orchestrator.reproduction_of=RUN_ID (nothing is registered, no alias moves). Prints "
        "each metric's logged value, new value and whether they agree within the tolerance. "
        "Exit 1 when a metric disagrees or a pinned version can no longer be read (VACUUM "
        "removed its files: the message names the table and version); exit 2 when the logged "
        "config holds redacted secrets (named), which a reproduction cannot know.")
    reproduce.add_argument("run_id", help="the MLflow run id to reproduce")
    reproduce.add_argument("--tracking-uri", help="MLflow tracking URI of the run (default: "
                           "$MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db)")
    reproduce.add_argument("--tolerance", type=float, help="relative tolerance of the metric "
                           "comparison (default: 0, exact, when the run is deterministic given "
                           "its seeds: the estimator's random_state set or absent, n_jobs 1, "
                           "tuning seeded and sequential; else 1e-9)")
    reproduce.add_argument("--output-dir", help="where plots and artifacts go (default: the "
                           "logged config's output_dir)")
    reproduce.add_argument("--master", help="Spark master for a new session (default: the "
                           "logged config's spark.master, $SPARK_MASTER, or local[*]); ignored "
                           "when a session is active, as on Databricks")
    reproduce.add_argument("--remote", help="Spark Connect URL for a new session instead of a "
                           "master: sc://host:15002 or local[2] (default: the logged config's "
                           "spark.remote or $SPARK_REMOTE)")

    compare = commands.add_parser(
        "compare", help="show how two tracked runs differ",
        description="Show the differences between two tracked runs: specs (the resolved "
        "configs), data versions (lineage), library versions (lib.* params) and metrics.")
    compare.add_argument("run_a", help="the first MLflow run id")
    compare.add_argument("run_b", help="the second MLflow run id")
    compare.add_argument("--json", action="store_true", help="print the differences as JSON "
                         "(default: text, one line per difference)")
    compare.add_argument("--tracking-uri", help="MLflow tracking URI of both runs (default: "
                         "$MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db)")


def _client_for(tracking_uri: str | None):
    from orchestrator.tracking import default_tracking_uri
    from orchestrator.tracking.uri import client_for

    return client_for(tracking_uri or default_tracking_uri())


def command_report(args: argparse.Namespace) -> int:
    from orchestrator.tracking.report import write_report

    path = write_report(_client_for(args.tracking_uri), args.run_id, args.output)
    print(f"wrote the report of run {args.run_id} to {path}")
    return EXIT_OK


def command_reproduce(args: argparse.Namespace, session_options: dict | None = None) -> int:
    from orchestrator.entrypoints.reproduction import reproduce_run

    outcome = reproduce_run(
        args.run_id, tracking_uri=args.tracking_uri, tolerance=args.tolerance,
        output_dir=args.output_dir, master=args.master, remote=args.remote,
        session_options=session_options,
        on_session=None if logger.isEnabledFor(logging.DEBUG) else _quiet_spark)
    print(outcome["text"])
    return EXIT_OK if outcome["agree"] else EXIT_FAILED


def command_compare(args: argparse.Namespace) -> int:
    import json

    from orchestrator.tracking.reproduce import diff_runs, format_comparison, read_logged_run

    client = _client_for(args.tracking_uri)
    diff = diff_runs(read_logged_run(client, args.run_a), read_logged_run(client, args.run_b))
    print(json.dumps(diff, indent=2, default=str) if args.json else format_comparison(diff))
    return EXIT_OK


_TRUST_COMMANDS = {"report": command_report, "reproduce": command_reproduce,
                   "compare": command_compare}


def _guarded(action) -> int:
    """Run a command; every failure becomes one clear message on stderr and an exit code.

    2 for bad input (a spec, config or argument), 1 for a step that failed. Our
    errors carry their own message; the errors libraries raise for expected
    reasons (Spark analysis errors, a JVM that cannot start, MLflow, the file
    system) are shown as their first line, without the Java or Python trace,
    which ``--log-level DEBUG`` still logs.
    """
    from orchestrator.entrypoints.process import termination_signals_raise

    received: list[int] = []
    try:
        with termination_signals_raise() as received:
            code = action()
        if received:  # the stop reached no step (it came as the work ended): still say so
            print(f"error: stopped by signal {received[0]} (SIGTERM) as the work ended",
                  file=sys.stderr)
            return 128 + received[0]
        return code
    except Exception as exc:  # noqa: BLE001 - sorted below
        if received:  # stopped by SIGTERM, whatever the interrupted library made of it
            logger.debug("stopped by signal %s", received[0], exc_info=True)
            print(f"error: stopped by signal {received[0]} (SIGTERM)", file=sys.stderr)
            return 128 + received[0]
        return _report_failure(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _report_failure(exc: Exception) -> int:
    """One line on stderr for ``exc``; the exit code: 2 bad input, 1 a failed step."""
    try:
        raise exc
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except OrchestratorError as exc:
        logger.debug("job failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the one place a library's trace becomes a line
        logger.debug("job failed", exc_info=True)
        print(f"error: {library_error_message(exc)}", file=sys.stderr)
        return EXIT_FAILED


def library_error_message(exc: BaseException) -> str:
    """One line for an error raised inside Spark, py4j, MLflow or the OS.

    Examples
    --------
    >>> library_error_message(PermissionError(13, "Permission denied", "/out"))
    "cannot access '/out': Permission denied (PermissionError)"
    """
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot access {str(exc.filename)!r}: {exc.strerror} ({type(exc).__name__})"
    text = ""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            text = str(java.toString())
        except Exception:  # noqa: BLE001 - the JVM may be gone; fall back to the Python text
            text = ""
    if not text:
        get_message = getattr(exc, "getMessage", None)
        try:
            text = str(get_message()) if callable(get_message) else str(exc)
        except Exception:  # noqa: BLE001
            text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Java traces and py4j's preamble carry no news for a user: keep the first real line.
    lines = [line for line in lines if not line.startswith(("at ", "py4j.", "Traceback",
                                                             "File \"", "JVM stacktrace"))]
    first = lines[0] if lines else type(exc).__name__
    if len(first) > 500:
        first = first[:497] + "..."
    return f"{first} ({type(exc).__name__})"


def _check_master(parser: argparse.ArgumentParser, master: str | None) -> None:
    """A malformed --master is an argument error (exit 2), not a JVM trace."""
    if master is None:
        return
    from orchestrator.config import master_url_problem

    problem = master_url_problem(master)
    if problem:
        parser.error(f"--master: {problem}")


def _check_remote(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--master (classic Spark) and --remote (Spark Connect) exclude each other."""
    if getattr(args, "master", None) and getattr(args, "remote", None):
        parser.error("--master and --remote: give one (classic Spark or Spark Connect), "
                     "not both")


def _remote_for_new_session(master: str | None, remote: str | None) -> str | None:
    """The Connect URL of a new session; a local server's workers get this interpreter."""
    from orchestrator.entrypoints.process import workers_use_this_interpreter
    from orchestrator.io.session import choose_remote

    remote = choose_remote(remote, master, os.environ)
    workers_use_this_interpreter(remote)
    return remote


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``orchestrator``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo-data" and args.customers < 1:
        parser.error(f"--customers: expected a positive integer, got {args.customers}")
    _check_master(parser, getattr(args, "master", None))
    _check_remote(parser, args)
    from orchestrator.entrypoints.console import setup_console

    setup_console(args.log_level, verbose=args.verbose)
    if args.command == "reproduce":  # a whole training run: quiet console, log file, jars cached
        return _guarded(lambda: _logged(args, lambda options: command_reproduce(args, options)))
    if args.command in _TRUST_COMMANDS:
        return _guarded(lambda: _TRUST_COMMANDS[args.command](args))
    if args.command == "validate":
        return _guarded(lambda: command_validate(args.config))
    if args.command == "run":
        return _guarded(lambda: _logged(args, lambda options: command_run(
            args.config, master=args.master, output_dir=args.output_dir,
            fail_on_reject=args.fail_on_reject, session_options=options, remote=args.remote)))
    if args.command == "score":
        return _guarded(lambda: _logged(args, lambda options: command_score(
            argparse.Namespace(**vars(args), session_options=options))))
    return _guarded(lambda: _logged(args, lambda options: command_demo_data(
        args.output, customers=args.customers, seed=args.seed, master=args.master,
        session_options=options, remote=args.remote)))


# ----------------------------------------------------------------------------- issue 16:
# a quiet console (log file for Spark's output), --version, a manual page per command


def _version_text() -> str:
    from orchestrator._version import __version__

    return f"orchestrator {__version__} (Python {sys.version.split()[0]})"


def _add_console_arguments(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: "orchestrator -v run" and "orchestrator run -v" both work, neither overrides.
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show every log line and Spark's own output (Ivy, log4j) on the "
                        "console instead of the log file (default: off)")
    parser.add_argument("--log-dir", help="directory of the log file (default: "
                        + _LOG_DIR_DEFAULTS[parser.prog.split()[-1]] + ")")


_LOG_DIR_DEFAULTS = {"run": "<output dir>/logs", "score": "./orchestrator-logs",
                     "demo-data": "<--output>/_logs",
                     "reproduce": "<--output-dir>/logs, else ./orchestrator-logs"}

_EXIT_CODES = """EXIT STATUS
  0    success
  1    a step failed (the message says which and why)
  2    bad config, specs or arguments (nothing was run)
  130  interrupted (Ctrl-C)
  143  stopped by SIGTERM (a scheduler ending the job)
"""
_EXAMPLES = {
    "validate": """  orchestrator validate conf/demo.yml
      Check every spec of the demo job; prints one line, or every problem at once.""",
    "run": """  orchestrator run conf/demo.yml
      Train the demo job: one line per step, then the summary; the last line
      names the log file holding Spark's output.
  orchestrator run conf/demo_full.yml --master local[2] --output-dir out/
      Tune, calibrate and track with two local cores; plots and logs under out/.
  orchestrator run conf/demo.yml --verbose
      The same with every log line and Spark's own output on the console.""",
    "score": """  orchestrator score --model-uri models:/churn_classifier@champion \\
      --input data/demo/churn --output data/demo/churn_predictions --keep-columns customer_id
      Append the champion's predictions for the input's latest version; a re-run
      for the same version appends nothing.""",
    "demo-data": """  orchestrator demo-data --output data/demo
      Write the churn, customer_features and churn_labels tables (5,000 customers).
  orchestrator demo-data --output /tmp/demo --customers 500 --seed 7
      A small set for a quick try.""",
    "report": """  orchestrator report 3f2a9c... -o churn-report.html
      Write the HTML report of a tracked run from the default MLflow store.""",
    "reproduce": """  orchestrator reproduce 3f2a9c... --tracking-uri sqlite:///mlruns/mlflow.db
      Re-run the run pinned to the Delta versions it read; exit 1 on any disagreement.
      As with run, the last line names the log file holding Spark's output.""",
    "compare": """  orchestrator compare 3f2a9c... 8b1d0e... --json
      The differences in specs, data versions, libraries and metrics, as JSON.""",
}


def _document_commands(commands) -> None:
    """Give every subcommand a manual page: examples and exit status after its options."""
    for name, sub in commands.choices.items():
        example = _EXAMPLES.get(name, f"  orchestrator {name} --help")
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        if sub.description and "\n" not in sub.description:  # raw from here on: wrap it once
            sub.description = textwrap.fill(sub.description, 78)
        sub.epilog = f"EXAMPLES\n{example}\n\n{_EXIT_CODES}"


def _log_dir(args: argparse.Namespace) -> str:
    if args.log_dir:
        return args.log_dir
    if args.command == "demo-data":
        return os.path.join(args.output, "_logs")
    if args.command == "reproduce" and args.output_dir:
        return os.path.join(os.path.expanduser(args.output_dir), "logs")
    if args.command == "run":
        from orchestrator.config import load_config

        output = args.output_dir or load_config(args.config).workflow_kwargs.get("output_dir")
        return os.path.join(os.path.expanduser(output or "output"), "logs")
    return "orchestrator-logs"


def _logged(args: argparse.Namespace, command) -> int:
    """Run a Spark command with its full log, and the JVM's output, in a file named at the end.

    ``command(session_options)`` passes the options to ``get_spark``. With
    ``--verbose`` everything stays on the console; the Delta jars are cached either way.
    """
    from orchestrator.entrypoints import console

    options = {"jars_cache_dir": console.jars_cache_dir()}
    if args.verbose:
        return command(options)
    # MLflow draws a progress bar for every artifact it downloads (a run's config, a model):
    # console noise that no log file keeps. The user's own setting wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    log_path = console.attach_log_file(console.default_log_path(_log_dir(args), args.command))
    options["jvm_log_path"] = log_path
    try:
        return command(options)
    finally:
        sys.stderr.flush()
        print(f"log: {log_path} (every log line and Spark's output)", flush=True)


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the train job: ``--config CONFIG`` (spark-submit, wheel tasks)."""
    parser = argparse.ArgumentParser(prog="orchestrator-train", description="Train the model a "
                                     "job config describes and print the workflow summary.")
    _add_run_arguments(parser, config_flag=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    _check_master(parser, args.master)
    _check_remote(parser, args)
    setup_logging(args.log_level)
    return _guarded(lambda: command_run(args.config, master=args.master,
                                        remote=args.remote, output_dir=args.output_dir,
                                        fail_on_reject=args.fail_on_reject))


def score_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the batch scoring job (spark-submit jobs/score.py, wheel tasks)."""
    parser = argparse.ArgumentParser(prog="orchestrator-score", description="Score a Delta "
                                     "table with an MLflow model into a Delta table, "
                                     "idempotently.")
    _add_score_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    _check_master(parser, args.master)
    _check_remote(parser, args)
    setup_logging(args.log_level)
    return _guarded(lambda: command_score(args))


def console_main() -> None:
    sys.exit(main())


def console_train_main() -> None:
    sys.exit(train_main())


def console_score_main() -> None:
    sys.exit(score_main())


if __name__ == "__main__":
    console_main()
