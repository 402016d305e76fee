"""Shared fixtures: one local SparkSession with Delta for the whole test run."""

from __future__ import annotations

import os
import sys

import pytest

# Spark's Python workers must run the interpreter of this venv.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


SPARK_MODES = ("classic", "connect")


def _process_state():
    """MLflow's global URIs, its MLFLOW_* environment and the SIGTERM/SIGINT handlers."""
    import signal

    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return {
        "handlers": {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)},
        "environ": {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")},
        "tracking": tracking_utils._tracking_uri,
        "registry": registry_utils._registry_uri,
    }


def _restore_process_state(state) -> None:
    import signal

    import mlflow

    # set_tracking_uri/set_registry_uri export MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI, and
    # set_registry_uri(None) never unsets its variable: set the URIs first, then the environment.
    mlflow.set_tracking_uri(state["tracking"])
    mlflow.set_registry_uri(state["registry"])
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if key not in state["environ"]:
            del os.environ[key]
    os.environ.update(state["environ"])
    for signum, handler in state["handlers"].items():
        if signal.getsignal(signum) is not handler and handler is not None:
            signal.signal(signum, handler)


@pytest.fixture(autouse=True, scope="module")
def _mlflow_process_state_is_per_module():
    """A module-scoped fixture that sets MLflow's global URIs (a store for a whole module)
    starts after this one and ends before it: nothing it set outlives its module."""
    state = _process_state()
    yield
    _restore_process_state(state)


@pytest.fixture(autouse=True)
def _mlflow_process_state_is_per_test():
    """Tests that drive entry points in-process (the CLI sets MLflow's HTTP bounds, `score`
    its global URIs) or call mlflow.set_experiment (which exports MLFLOW_EXPERIMENT_ID) must
    not leak that process state into later tests or the subprocesses they start."""
    state = _process_state()
    yield
    _restore_process_state(state)


def pytest_addoption(parser):
    parser.addoption(
        "--spark-mode", choices=SPARK_MODES,
        default=os.environ.get("ORCHESTRATOR_TEST_SPARK", "classic"),
        help="the shared `spark` fixture: a classic local[2] session, or a Spark Connect "
             "session on a local[2] server in this process (default $ORCHESTRATOR_TEST_SPARK "
             "or classic)")


def spark_mode(config) -> str:
    return config.getoption("--spark-mode")


def pytest_report_header(config):
    return f"spark mode: {spark_mode(config)}"


def pytest_collection_modifyitems(config, items):
    """On Connect, skip the tests marked classic_only, with the reason the marker gives."""
    if spark_mode(config) != "connect":
        return
    for item in items:
        marker = item.get_closest_marker("classic_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "needs a classic SparkSession"
            item.add_marker(pytest.mark.skip(reason=f"classic Spark only: {reason}"))


@pytest.fixture(scope="session")
def spark_is_connect(request) -> bool:
    """True when the shared session is Spark Connect (--spark-mode=connect)."""
    return spark_mode(request.config) == "connect"


@pytest.fixture(scope="session")
def spark(tmp_path_factory, request):
    """One local[2] SparkSession with Delta for every Spark test (UI off, few partitions).

    With ``--spark-mode=connect`` (or ORCHESTRATOR_TEST_SPARK=connect) it is a
    Spark Connect session on a local[2] server that pyspark starts in this
    process with the same settings.
    """
    from orchestrator.io.session import get_spark
    from orchestrator.cluster import worker_spark_conf

    connect = spark_mode(request.config) == "connect"
    warehouse = tmp_path_factory.mktemp("warehouse")
    if connect:
        # With SPARK_TESTING pyspark binds the local Connect server to a free port and
        # the client reads it back (as pyspark's own tests do), instead of port 15002,
        # which another server on the machine may hold. Only the server JVM keeps it.
        os.environ["SPARK_TESTING"] = "1"
    try:
        session = get_spark(
            "orchestrator-tests",
            **({"remote": "local[2]"} if connect else {"master": "local[2]"}),
            conf={
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": "2",
                "spark.default.parallelism": "2",
                "spark.sql.warehouse.dir": str(warehouse),
                "spark.driver.extraJavaOptions": f"-Dderby.system.home={warehouse}",
                "spark.databricks.delta.snapshotPartitions": "2",
                # Python workers forked from a daemon that preloaded scikit-learn (tuning trials).
                **worker_spark_conf("local[2]"),
            },
        )
    finally:
        if connect:
            os.environ.pop("SPARK_TESTING", None)
    if not connect:
        session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
