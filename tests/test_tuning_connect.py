"""Tuning on Spark Connect: the Connect task runner and both search libraries on it.

A real Spark Connect server runs as a separate process (spark-submit of
SparkConnectServer on loopback, local[2], workers on this venv's Python with the
package on PYTHONPATH), because a Connect session started in-process cannot
coexist with the classic session the other tests share. Under
``ORCHESTRATOR_TEST_SPARK=connect`` (the shared session is Connect already) the
shared ``spark`` fixture is used instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from orchestrator.cluster.connect import (
    TASK_CANCELLED,
    TASK_FAILED,
    TASK_OK,
    ConnectTaskRunner,
    run_on_cluster,
)
from orchestrator.errors import ClusterTaskError
from orchestrator.tuning import choose_backend, tune

from test_tuning import METRIC, SPACE, _check_value_types, _cv_score, _pipeline, _specs

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark.sql.connect.session")
pytest.importorskip("grpc")

REPO = Path(__file__).resolve().parents[1]

# The tasks below travel by value: the workers cannot import this test module.
from pyspark import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process, log: Path, deadline_s: float = 240) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"the Connect server exited:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the Connect server did not listen in time:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def connect_spark(request, tmp_path_factory):
    """A Spark Connect session against a loopback server process (module-scoped)."""
    if os.environ.get("ORCHESTRATOR_TEST_SPARK") == "connect":
        yield request.getfixturevalue("spark")
        return
    from pyspark.find_spark_home import _find_spark_home

    from orchestrator.cluster import WORKER_DAEMON_MODULE

    port = _free_port()
    log = tmp_path_factory.mktemp("connect_server") / "server.log"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                          if p))
    env.pop("SPARK_REMOTE", None)
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    submit = Path(_find_spark_home()) / "bin" / "spark-submit"
    command = [str(submit), "--master", "local[2]",
               "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
               "--conf", f"spark.connect.grpc.binding.port={port}",
               "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
               "--conf", "spark.ui.enabled=false",
               "--conf", "spark.sql.shuffle.partitions=2",
               "--conf", "spark.default.parallelism=2",
               "--conf", f"spark.python.daemon.module={WORKER_DAEMON_MODULE}",
               "--conf", f"spark.executorEnv.PYTHONPATH={env['PYTHONPATH']}",
               "--conf", "spark.driver.memory=1g"]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    monkeypatch = pytest.MonkeyPatch()
    session = None
    try:
        _wait_for_port(port, server, log)
        # pyspark's functions pick their Connect implementation from this variable.
        monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        session = ConnectSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
        yield session
    finally:
        if session is not None:
            session.stop()
        monkeypatch.undo()
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=3)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]), pd.Series(y, name="label")


# ---------------------------------------------------------------- the runner


def _rows_and_pid(shared, arg):
    X, _y = shared
    if arg == "boom":
        raise ValueError("no such thing")
    return len(X), arg, os.getpid()


def _sleep(shared, seconds):
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("dispatch", ["slots", "jobs"])
def test_runner_runs_tasks_on_executors_with_data_staged_once(connect_spark, data, dispatch):
    with ConnectTaskRunner(connect_spark, data, parallelism=2, dispatch=dispatch) as runner:
        assert runner.slots_in_use == (dispatch == "slots")
        staged = Path(runner._data_path.removeprefix("file://"))
        assert staged.is_dir() and list(staged.glob("*.parquet"))
        results = runner.map(_rows_and_pid, [1, 2, "boom", 4])
    assert not staged.exists()  # cleaned up on close
    assert not Path(f"{staged}_slots").exists()
    ok = [r for r in results if r.status == TASK_OK]
    assert len(ok) == 3, [(r.status, r.error, r.traceback) for r in results]
    assert [r.value[:2] for r in ok] == [(200, 1), (200, 2), (200, 4)]
    assert {r.value[2] for r in ok} - {os.getpid()} == {r.value[2] for r in ok}  # not us
    assert all(r.worker_pid == r.value[2] for r in ok)
    # Each Python worker read the staged rows at most once.
    first_loads = [r for r in results if r.load_s and r.load_s > 0]
    assert len(first_loads) <= len({r.worker_pid for r in results})
    failed = results[2]
    assert failed.status == TASK_FAILED and failed.error == "ValueError: no such thing"
    assert "_rows_and_pid" in failed.traceback
    with pytest.raises(ClusterTaskError, match="no such thing"):
        failed.unwrap()


def test_run_on_cluster_returns_values_in_order_and_raises_the_first_failure(connect_spark,
                                                                              data):
    values = run_on_cluster(connect_spark, _rows_and_pid, [3, 1, 2], data, 2)
    assert [v[:2] for v in values] == [(200, 3), (200, 1), (200, 2)]
    with pytest.raises(ClusterTaskError, match="ValueError: no such thing") as info:
        run_on_cluster(connect_spark, _rows_and_pid, [1, "boom"], data, 2)
    assert "Traceback" in info.value.remote_traceback


@pytest.mark.parametrize("dispatch", ["slots", "jobs"])
def test_cancel_interrupts_running_tasks_quickly(connect_spark, data, dispatch):
    with ConnectTaskRunner(connect_spark, data, parallelism=2, dispatch=dispatch) as runner:
        runner.map(_sleep, [0, 0])  # warm workers, so the sleeps below are running
        futures = [runner.submit(_sleep, 120) for _ in range(2)]
        time.sleep(5)
        started = time.monotonic()
        runner.cancel()
        results = [f.result(timeout=60) for f in futures]
        waited = time.monotonic() - started
    assert [r.status for r in results] == [TASK_CANCELLED, TASK_CANCELLED]
    assert waited < 60


def _kill_own_worker(shared, arg):
    import signal

    if arg == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(arg)
    return os.getpid()


def test_a_dead_worker_fails_only_its_task_and_its_slot_starts_again(connect_spark, data):
    with ConnectTaskRunner(connect_spark, data, parallelism=2, dispatch="slots") as runner:
        runner.map(_sleep, [0, 0])
        dead, innocent = runner.map(_kill_own_worker, ["die", 3])
        after = runner.map(_kill_own_worker, [0.5, 0.5])
        assert runner.slots_in_use
        assert sorted(slot.restarts for slot in runner._slots._slots) == [0, 1]
    assert dead.status == TASK_FAILED and "Python worker exited unexpectedly" in dead.error
    assert innocent.status == TASK_OK  # the other slot's task is not its victim
    assert [r.status for r in after] == [TASK_OK, TASK_OK]


def test_more_slots_than_the_cluster_has_cores_still_run_every_task(connect_spark, data):
    # local[2]: the third slot's job waits for a core as long as the others live; it must
    # never be given a task (it would hold it forever).
    with ConnectTaskRunner(connect_spark, data, parallelism=3, dispatch="slots") as runner:
        results = [f.result(timeout=120) for f in
                   [runner.submit(_sleep, 0.2) for _ in range(6)]]
    assert [r.status for r in results] == [TASK_OK] * 6


class _ElsewhereRunner(ConnectTaskRunner):
    """Executors that see the staged data but not the slots' directory (another file system)."""

    def _executor_path(self, path):
        view = super()._executor_path(path)
        return view.replace("_slots", "_nowhere") if view.endswith("_slots") else view


def test_slots_the_executors_cannot_see_fall_back_to_a_job_per_task(connect_spark, data):
    with _ElsewhereRunner(connect_spark, data, parallelism=2, dispatch="slots") as runner:
        results = runner.map(_rows_and_pid, [1, 2, 3])
        assert not runner.slots_in_use
    assert [(r.status, r.value[:2]) for r in results] == [
        (TASK_OK, (200, 1)), (TASK_OK, (200, 2)), (TASK_OK, (200, 3))]


def test_a_cluster_master_needs_a_staging_dir():
    class FakeConf:  # a session that reports a cluster master; nothing runs
        def get(self, key, default=None):
            return "spark://cluster:7077" if key == "spark.master" else default

    class FakeSession:
        conf = FakeConf()

    runner = ConnectTaskRunner(FakeSession(), None, parallelism=1)
    with pytest.raises(ClusterTaskError, match="staging_dir.*Volume"):
        runner.start()


# ---------------------------------------------------------------- tuning on Connect


def test_choose_backend_on_a_connect_session():
    reason = "the session is Spark Connect, which has no SparkContext"
    assert choose_backend("auto", spark_reason=reason, hyperopt_installed=True,
                          optuna_installed=True, connect_session=True)[0] == "connect"
    assert choose_backend("auto", spark_reason=reason, hyperopt_installed=False,
                          optuna_installed=True, connect_session=True)[0] == "optuna"
    assert choose_backend("spark", spark_reason=reason, hyperopt_installed=True,
                          optuna_installed=True, connect_session=True)[0] == "connect"


def _tune(spark, data, backend, max_evals=6, **extra):
    X, y = data
    model, spec = _specs({"search_space": SPACE, "max_evals": max_evals, "backend": backend,
                          "seed": 7, **extra})
    pipeline = _pipeline(model, X.columns)
    reports = []
    outcome = tune(pipeline, X, y, spec, model_spec=model, scoring=METRIC, spark=spark,
                   progress=reports.append)
    return outcome, pipeline, reports


def test_auto_on_connect_runs_hyperopt_trials_on_executors(connect_spark, data):
    outcome, pipeline, reports = _tune(connect_spark, data, "auto", parallelism=2)
    summary = outcome.summary
    assert summary["backend"] == "connect" and "Spark Connect" in summary["backend_reason"]
    assert summary["parallelism"] == 2
    assert summary["trials_run"] == summary["trials_ok"] == 6
    assert sorted(t["number"] for t in summary["trials"]) == list(range(6))
    assert [r.completed for r in reports] == list(range(1, 7))
    X, y = data
    assert summary["best_score"] == pytest.approx(
        _cv_score(pipeline, X, y, outcome.best_params, seed=7), abs=1e-9)
    assert all(t["duration_s"] > 0 and t["wall_s"] >= t["duration_s"] - 0.01
               and t["end_ms"] >= t["start_ms"] for t in summary["trials"])
    _check_value_types(outcome)


def test_same_points_and_scores_as_the_driver_backends_at_parallelism_1(connect_spark, data):
    pytest.importorskip("optuna")
    for on_cluster, on_driver in (("auto", "local"), ("optuna", "optuna")):
        cluster, _, _ = _tune(connect_spark, data, on_cluster, max_evals=4, parallelism=1)
        driver, _, _ = _tune(None, data, on_driver, max_evals=4, parallelism=1)
        assert "on executors" in cluster.summary["backend_reason"]
        assert "on the driver" in driver.summary["backend_reason"] or on_driver == "local"
        assert ([(t["params"], t["score"]) for t in cluster.summary["trials"]]
                == [(t["params"], t["score"]) for t in driver.summary["trials"]])


def test_failed_trials_are_results_with_their_error(connect_spark, data):
    X, y = data
    model, spec = _specs({"search_space": {"l1_ratio": {"dist": "uniform", "low": 2,
                                                        "high": 3}},
                          "max_evals": 3, "backend": "auto", "parallelism": 2},
                         params={"C": 1.0})
    with pytest.raises(Exception) as info:
        tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC,
             spark=connect_spark)
    summary = info.value.summary
    assert summary["backend"] == "connect" and summary["trials_failed"] == 3
    assert all(t["status"] == "fail" and "l1_ratio" in t["error"] for t in summary["trials"])


def test_early_stopping_on_connect_cancels_the_rest(connect_spark, data):
    X, y = data
    model, spec = _specs({"search_space": {"tol": {"dist": "uniform", "low": 0.001,
                                                   "high": 0.002}},
                          "max_evals": 30, "early_stopping_rounds": 2, "backend": "optuna",
                          "parallelism": 2, "algo": "random"}, params={"C": 1.0})
    pytest.importorskip("optuna")
    outcome = tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC,
                   spark=connect_spark)
    summary = outcome.summary
    assert summary["stop_reason"] == "early stopping"
    assert summary["trials_run"] < 10
    assert "on executors" in summary["backend_reason"]


def test_timeout_on_connect_cancels_running_trials(connect_spark, data):
    X, y = data
    model, spec = _specs({"search_space": {"n_estimators": {"dist": "randint", "low": 3000,
                                                            "high": 4000}},
                          "max_evals": 20, "timeout_s": 8, "backend": "auto", "parallelism": 2,
                          "cv_folds": 5}, estimator="random_forest_classifier", params={})
    big_X = pd.concat([X] * 20, ignore_index=True)
    big_y = pd.concat([y] * 20, ignore_index=True)
    started = time.monotonic()
    with pytest.raises(Exception) as info:  # no trial finishes inside 8 s
        tune(_pipeline(model, X.columns), big_X, big_y, spec, model_spec=model,
             scoring=METRIC, spark=connect_spark)
    elapsed = time.monotonic() - started
    summary = info.value.summary
    assert summary["stop_reason"] == "timeout"
    assert summary["trials_cancelled"] == 2 and summary["trials_run"] == 2
    assert elapsed < 90  # the running trials were interrupted, not waited for


# ------------------------------------------- validation and calibration folds on Connect


def test_validation_folds_on_connect_equal_sklearn_cross_validate(connect_spark, data):
    from sklearn.model_selection import StratifiedKFold, cross_validate

    from orchestrator.workflow import run_ml_workflow

    X, y = data
    features = [{"name": c, "type": "numeric"} for c in X.columns]
    model = {"estimator": "logistic_regression", "params": {"max_iter": 300}}
    results = run_ml_workflow(features, model, X, y, spark=connect_spark,
                              validation_params={"cv_folds": 4})
    assert results.validation_details["ran"] == "cluster"
    assert results.validation_details["parallelism"] == 2
    folds = list(StratifiedKFold(4, shuffle=True, random_state=42).split(X, y))
    expected = cross_validate(results.pipeline, X, y, cv=folds, scoring="roc_auc")["test_score"]
    np.testing.assert_allclose(results.metrics["roc_auc"]["folds"], expected, rtol=1e-9)


def test_calibration_folds_on_connect_give_the_driver_model(connect_spark, data, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from orchestrator.specs.calibration import CalibrationSpec
    from orchestrator.steps.calibration import calibrate

    X, y = data
    spec = CalibrationSpec(method="sigmoid", cv=3, keep_if_worse=True)
    driver = calibrate(LogisticRegression(), X, y, spec, output_dir=tmp_path / "driver")
    cluster = calibrate(LogisticRegression(), X, y, spec, output_dir=tmp_path / "cluster",
                        session=connect_spark)
    assert cluster.summary["folds_placement"] == "on the cluster: 2 of the 3 folds at once"
    np.testing.assert_allclose(cluster.model.predict_proba(X), driver.model.predict_proba(X),
                               rtol=1e-9)


def test_the_joblib_backend_on_connect_runs_again_after_a_failed_call(connect_spark, data):
    from joblib import Parallel, delayed

    from orchestrator.cluster.joblib_backend import cluster_parallel

    X, _ = data
    with cluster_parallel(connect_spark, 2, description="fold"):
        with pytest.raises(ClusterTaskError, match="fold .* failed: ValueError"):
            Parallel()(delayed(int)(text) for text in ("1", "two", "3", "4"))
        # The aborted call cancelled its runner; the next call stages the rows on a new one.
        assert Parallel()(delayed(len)(X) for _ in range(3)) == [len(X)] * 3
