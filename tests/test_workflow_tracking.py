"""The workflow with MLflow on: a real sqlite store, run status, and degradation."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from orchestrator import get_workflow_summary, run_ml_workflow
from orchestrator.errors import DataError

FEATURES = [{"columns": [f"f{i}" for i in range(6)], "type": "numeric"},
            {"name": "segment", "type": "categorical"}]


@pytest.fixture(scope="module")
def data():
    raw = load_breast_cancer(as_frame=True)
    X = raw.data.iloc[:, :6].copy()
    X.columns = [f"f{i}" for i in range(6)]
    X["segment"] = np.where(raw.data.iloc[:, 7] > raw.data.iloc[:, 7].median(), "a", "b")
    return X, raw.target


@pytest.fixture()
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_a_tracked_run_holds_metrics_model_and_registry_version(data, store, tmp_path):
    X, y = data
    results = run_ml_workflow(
        FEATURES, {"estimator": "logistic_regression", "params": {"max_iter": 500}}, X=X, y=y,
        validation_params={"cv_folds": 3}, calibration_spec={"method": "sigmoid", "cv": 3},
        mlflow_spec={"tracking_uri": store, "experiment_name": "workflow-test",
                     "run_name": "lr", "registered_model_name": "wf_model",
                     "model_alias": "challenger", "tags": {"team": "growth"}},
        output_dir=tmp_path / "out")
    run_id = results["mlflow_run_id"]
    assert run_id and not [w for w in results["warnings"] if w["step"].startswith("mlflow")]
    run = _client(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["roc_auc"] == pytest.approx(results["cv_score"])
    assert run.data.tags["team"] == "growth"
    assert "timing/training_s" in run.data.metrics
    version = _client(store).get_model_version_by_alias("wf_model", "challenger")
    assert version.run_id == run_id
    import mlflow

    mlflow.set_tracking_uri(store)
    try:
        loaded = mlflow.pyfunc.load_model("models:/wf_model@challenger")
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_array_equal(loaded.predict(X.head(50)),
                                  results["pipeline"].predict(X.head(50)))
    summary = get_workflow_summary(results)
    assert run_id in summary and "model_version" in summary
    artifacts = {a.path for a in _client(store).list_artifacts(run_id)}
    assert any("roc" in path for path in artifacts) or any(
        "roc" in a.path for a in _client(store).list_artifacts(run_id, "plots"))


def test_unreachable_server_degrades_within_the_timeout(data, tmp_path):
    X, y = data
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    start = time.perf_counter()
    results = run_ml_workflow(FEATURES, {"estimator": "logistic_regression"}, X=X, y=y,
                              validation_strategy="none",
                              mlflow_spec={"tracking_uri": f"http://127.0.0.1:{dead_port}",
                                           "timeout_s": 2},
                              output_dir=tmp_path)
    assert time.perf_counter() - start < 15
    assert results["mlflow_run_id"] is None
    assert results["pipeline"] is not None
    assert [w["step"] for w in results["warnings"]] == ["mlflow_tracking"]


def test_a_failing_workflow_marks_the_run_failed(data, store, tmp_path):
    X, y = data
    X = X.assign(f0="not a number")
    with pytest.raises(DataError):  # issue 15: refused at loading, naming the column
        run_ml_workflow(FEATURES, {"estimator": "logistic_regression"}, X=X, y=y,
                        mlflow_spec={"tracking_uri": store, "experiment_name": "failing"},
                        output_dir=tmp_path)
    experiment = _client(store).get_experiment_by_name("failing")
    runs = _client(store).search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_two_workflows_in_two_threads_track_to_their_own_stores(data, tmp_path):
    """No process-global MLflow state: each run's params, metrics and model land in its store."""
    import threading

    import mlflow

    X, y = data
    stores = [f"sqlite:///{tmp_path / f'store_{i}.db'}" for i in range(2)]
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = run_ml_workflow(
                FEATURES, {"estimator": "logistic_regression",
                           "params": {"C": [0.5, 2.0][index], "max_iter": 500}},
                X=X, y=y, validation_params={"cv_folds": 3},
                mlflow_spec={"tracking_uri": stores[index], "experiment_name": f"thread-{index}",
                             "registered_model_name": f"thread_model_{index}"},
                output_dir=tmp_path / f"out_{index}")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    uri_before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert (mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None) == uri_before
    for index, store in enumerate(stores):
        outcome = results[index]
        assert not outcome.warnings, outcome.warnings
        client = _client(store)
        run = client.get_run(outcome.mlflow_run_id)
        assert run.data.params["model.params.C"] == str([0.5, 2.0][index])
        assert run.data.metrics["roc_auc"] == pytest.approx(outcome.cv_score)
        # Only this thread's run and model are in this store.
        experiments = [e.name for e in client.search_experiments()]
        assert f"thread-{index}" in experiments and f"thread-{1 - index}" not in experiments
        versions = client.search_model_versions()
        assert [(v.name, v.run_id) for v in versions] == [
            (f"thread_model_{index}", outcome.mlflow_run_id)]
        model_id = outcome.mlflow_model["model_uri"].split("/")[-1]
        logged = client.get_logged_model(model_id)
        assert (logged.source_run_id, logged.experiment_id) == (outcome.mlflow_run_id,
                                                                run.info.experiment_id)
        assert client.list_logged_model_artifacts(model_id)
        other = results[1 - index]
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.get_run(other.mlflow_run_id)
