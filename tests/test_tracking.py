"""MLflow tracking against a real local sqlite store and a real ``mlflow server``.

Oracles: what the store holds is read back with MlflowClient and compared with
what was produced (metrics computed here with scikit-learn, predictions of the
pipeline itself); secrets are searched for byte by byte in every file the
store wrote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _mlflow_server import free_port, running_mlflow_server, silent_server
from orchestrator.redaction import REDACTED
from orchestrator.specs import Problems
from orchestrator.specs.mlflow import MLflowSpec, parse_mlflow_spec
from orchestrator.tracking import (
    ModelLoggingError,
    TrackingUnavailableError,
    child_run,
    default_tracking_uri,
    ensure_run_ends,
    flatten_params,
    start_tracking,
    to_model_input,
    trusted_model_types,
)

REPO = Path(__file__).resolve().parents[1]
SECRET_TOKEN = "dapi" + "5f3c9a1b" * 4
SECRET_PASSWORD = "Hunter2-correct-horse"


# ----------------------------------------------------------------------------- fixtures


def _frame(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "age": pd.array(rng.integers(18, 80, n), dtype="Int64"),
        "active": rng.random(n) > 0.5,
        "promo": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "spend": rng.normal(50, 15, n),
    })
    X.loc[::9, "age"] = pd.NA
    logit = 0.08 * (X["spend"] - 50) + 1.2 * X["active"] - 0.03 * (X["age"].fillna(45) - 45)
    y = pd.Series(np.where(rng.random(n) < 1 / (1 + np.exp(-logit.astype(float))),
                           "churned", "stayed"), name="label")
    return X, y


def _pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from orchestrator.steps.transformers import BooleanToFloat, CategoryToString

    preprocess = ColumnTransformer([
        ("numeric_0", Pipeline([("imputer", SimpleImputer(strategy="median")),
                                ("scaler", StandardScaler())]), ["age", "spend"]),
        ("boolean_1", Pipeline([("to_float", BooleanToFloat()),
                                ("imputer", SimpleImputer(strategy="most_frequent"))]),
         ["active", "promo"]),
        ("categorical_2", Pipeline([("to_string", CategoryToString()),
                                    ("imputer", SimpleImputer(strategy="most_frequent")),
                                    ("encoder", OneHotEncoder(handle_unknown="ignore"))]),
         ["plan"]),
    ])
    return Pipeline([("preprocess", preprocess), ("model", LogisticRegression(C=0.7))])


@pytest.fixture(scope="module")
def fitted():
    X, y = _frame()
    return _pipeline().fit(X, y), X, y


@pytest.fixture(scope="session")
def sqlite_uri(tmp_path_factory):
    """One local sqlite store for the session (creating one runs ~10 s of migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


def _config():
    return {
        "model_spec": {"estimator": "logistic_regression", "params": {"C": 0.7}},
        "data_spec": {"path": "/data/churn", "label": "label"},
        "feature_specs": [{"name": "age", "type": "numeric"}, {"name": "plan",
                                                               "type": "categorical"}],
        "feature_store_spec": {"lookup_key": "customer_id", "databricks_token": SECRET_TOKEN},
        "source": {"jdbc_url": f"postgresql://etl:{SECRET_PASSWORD}@db.internal:5432/crm"},
    }


def _results(pipeline, X, y, tmp_path):
    from matplotlib.figure import Figure

    reliability = tmp_path / "reliability_diagram.png"
    figure = Figure(figsize=(3, 3))
    figure.add_subplot().plot([0, 1], [0, 1])
    figure.savefig(reliability)
    return {
        "pipeline": pipeline,
        "task": "classification",
        "primary_metric": "roc_auc",
        "pos_label": "stayed",
        "metrics": {"roc_auc": {"mean": 0.71, "std": 0.02, "folds": [0.7, 0.69, 0.74]},
                    "accuracy": {"mean": 0.66, "std": 0.03, "folds": [0.63, 0.66, 0.69]}},
        "tuning_summary": {"backend": "local", "best_score": 0.73, "trials_run": 3,
                           "best_params": {"model__C": 0.7},
                           "trials": [{"number": 0, "score": 0.7}, {"number": 1, "score": 0.73},
                                      {"number": 2, "score": None}]},
        "calibration_summary": {"method": "sigmoid", "decision": "calibrated",
                                "metrics_before": {"brier": 0.22},
                                "metrics_after": {"brier": 0.2}},
        "timings": {"load_data": 1.5, "training": 0.25},
        "data": {"location": "/data/churn", "delta_version": 3, "row_count": len(X),
                 "feature_lookups": [{"table": "main.fs.customer_features", "version": 7}]},
        "summary_text": f"roc_auc 0.71; token {SECRET_TOKEN}",
        "artifacts": {"reliability_diagram": str(reliability)},
    }


@contextlib.contextmanager
def _global_tracking_uri(uri: str):
    """models:/ and runs:/ URIs resolve against the global tracking URI."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _all_bytes_under(*roots: Path) -> bytes:
    chunks = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                chunks.append(path.read_bytes())
    return b"\n".join(chunks)


# ----------------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize("environ, expected", [
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "http://mlflow:5000"),
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000", "DATABRICKS_RUNTIME_VERSION": "15.4"},
     "http://mlflow:5000"),
    ({"DATABRICKS_RUNTIME_VERSION": "15.4"}, "databricks"),
    ({"MLFLOW_TRACKING_URI": "  "}, "sqlite:////work/job/mlruns/mlflow.db"),
    ({}, "sqlite:////work/job/mlruns/mlflow.db"),
])
def test_default_tracking_uri(environ, expected):
    assert default_tracking_uri(environ, "/work/job") == expected


def test_flatten_params_redacts_secret_keys_and_values_but_keeps_data_keys():
    flat = flatten_params(_config())
    assert flat["model_spec.params.C"] == "0.7"
    assert flat["feature_specs.1.type"] == "categorical"
    assert flat["feature_store_spec.lookup_key"] == "customer_id"
    assert flat["feature_store_spec.databricks_token"] == REDACTED
    assert flat["source.jdbc_url"] == f"postgresql://etl:{REDACTED}@db.internal:5432/crm"
    assert not any(SECRET_TOKEN in v or SECRET_PASSWORD in v for v in flat.values())


def test_to_model_input_casts_nullable_columns_without_touching_the_input():
    X, _ = _frame(20)
    cast = to_model_input(X)
    assert cast["age"].dtype == np.float64 and cast["age"].isna().sum() == X["age"].isna().sum()
    assert cast["promo"].dtype == object
    assert set(cast["promo"].map(repr)) <= {"True", "False", "None"}
    assert cast["active"].dtype == bool and cast["spend"].dtype == np.float64
    assert X["age"].dtype == "Int64" and X["promo"].dtype == "boolean"


class ForeignScaler:
    """A module-level transformer outside the package: not trusted unless declared."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def test_trusted_types_are_ours_sklearns_and_declared_ones(fitted):
    from sklearn.pipeline import Pipeline

    pipeline, _, _ = fitted
    trusted, untrusted = trusted_model_types(pipeline)
    assert "orchestrator.steps.transformers.BooleanToFloat" in trusted
    assert "orchestrator.steps.transformers.CategoryToString" in trusted
    assert untrusted == []
    wrapped = Pipeline([("foreign", ForeignScaler()), ("inner", pipeline)])
    trusted, untrusted = trusted_model_types(wrapped)
    assert untrusted == [f"{__name__}.ForeignScaler"]
    trusted, untrusted = trusted_model_types(wrapped, (f"{__name__}.*",))
    assert untrusted == [] and f"{__name__}.ForeignScaler" in trusted


def test_calibrated_model_is_trusted_and_shows_its_fitted_pipelines_importance(fitted):
    from orchestrator.steps.calibration import CalibratedModel
    from orchestrator.tracking.plots import feature_importance

    _, X, y = fitted
    model = CalibratedModel(_pipeline(), method="sigmoid", cv=3, ensemble=False,
                            random_state=0).fit(X, y)
    trusted, untrusted = trusted_model_types(model)
    assert untrusted == [] and "orchestrator.steps.calibration.CalibratedModel" in trusted
    names, values, label = feature_importance(model)
    inner = model.calibrator_.calibrated_classifiers_[0].estimator
    inner = getattr(inner, "estimator", inner)  # FrozenEstimator when ensemble is off
    np.testing.assert_allclose(values, np.abs(inner.named_steps["model"].coef_[0]))
    assert list(names) == list(inner[:-1].get_feature_names_out())
    assert "coefficient" in label
    # The unfitted template in model.estimator is never mistaken for the fitted pipeline.
    assert feature_importance(CalibratedModel(_pipeline())) is None


# ----------------------------------------------------------------------------- sqlite store


def _spec(uri: str, **options) -> MLflowSpec:
    problems = Problems()
    spec = parse_mlflow_spec({"tracking_uri": uri, "timeout_s": 5, **options}, problems)
    assert not problems, problems.messages
    return spec


def test_run_holds_params_metrics_lineage_artifacts_and_model(sqlite_uri, fitted, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    pipeline, X, y = fitted
    spec = _spec(sqlite_uri, experiment_name="churn-tests", run_name="full",
                 tags={"team": "growth"})
    tracker = start_tracking(spec, resolved_config=_config())
    results = _results(pipeline, X, y, tmp_path)
    with ensure_run_ends(tracker):
        logged = tracker.log_results(results, X_sample=X.head(120), y_sample=y.head(120),
                                     output_dir=tmp_path / "out")
    assert logged["warnings"] == []
    client = MlflowClient(sqlite_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "full"
    assert run.data.tags["team"] == "growth"
    assert client.get_experiment(run.info.experiment_id).name == "churn-tests"

    params = run.data.params
    assert params["model_spec.params.C"] == "0.7"
    assert params["final_model.C"] == "0.7"
    assert params["final_model.class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert params["feature_store_spec.databricks_token"] == REDACTED
    assert params["lib.mlflow"] == mlflow.__version__
    assert params["data.delta_version"] == "3"

    metrics = run.data.metrics
    assert metrics["roc_auc"] == pytest.approx(0.71)
    assert metrics["roc_auc_std"] == pytest.approx(0.02)
    folds = sorted(client.get_metric_history(tracker.run_id, "roc_auc_fold"),
                   key=lambda m: m.step)
    assert [(m.step, m.value) for m in folds] == [(0, 0.7), (1, 0.69), (2, 0.74)]
    assert metrics["tuning/best_score"] == pytest.approx(0.73)
    assert metrics["tuning/trials_run"] == 3
    trials = client.get_metric_history(tracker.run_id, "tuning/trial_score")
    assert sorted((m.step, m.value) for m in trials) == [(0, 0.7), (1, 0.73)]
    assert params["tuning_result.best_params.model__C"] == "0.7"
    assert params["tuning_result.backend"] == "local"
    assert params["calibration_result.method"] == "sigmoid"
    assert params["final_model.max_iter"] == "100"
    assert params["final_model.class_weight"] == "None"
    assert "final_model.wrapper" not in params
    assert metrics["calibration/before/brier"] == pytest.approx(0.22)
    assert metrics["calibration/after/brier"] == pytest.approx(0.2)
    assert metrics["timing/load_data_s"] == pytest.approx(1.5)

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"churn", "main.fs.customer_features"}
    assert '"delta_table_version": 3' in inputs["churn"].dataset.source
    assert {t.key: t.value for t in inputs["churn"].tags}["row_count"] == str(len(X))
    assert '"delta_table_version": 7' in inputs["main.fs.customer_features"].dataset.source

    artifacts = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"config", "summary.txt", "lineage.json", "plots", "tuning_summary.json",
            "calibration_summary.json"} <= artifacts
    plots = {Path(a.path).name for a in client.list_artifacts(tracker.run_id, "plots")}
    assert plots == {"roc_curve.png", "precision_recall_curve.png", "confusion_matrix.png",
                     "feature_importance.png", "reliability_diagram.png"}
    with _global_tracking_uri(sqlite_uri):
        config_text = mlflow.artifacts.load_text(f"runs:/{tracker.run_id}/config/"
                                                 "resolved_config.yaml")
        summary = mlflow.artifacts.load_text(f"runs:/{tracker.run_id}/summary.txt")
        model = mlflow.pyfunc.load_model(logged["model_uri"])
    assert "lookup_key: customer_id" in config_text and REDACTED in config_text
    assert SECRET_TOKEN not in config_text and SECRET_PASSWORD not in config_text
    assert summary == f"roc_auc 0.71; token {REDACTED}"

    # The model: a signature despite the nullable Int64/boolean columns, same predictions.
    inputs_schema = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert inputs_schema == {"age": "double", "active": "boolean", "promo": "boolean",
                             "plan": "string", "spend": "double"}
    np.testing.assert_array_equal(model.predict(to_model_input(X)), pipeline.predict(X))
    np.testing.assert_allclose(model.get_raw_model().predict_proba(to_model_input(X)),
                               pipeline.predict_proba(X))
    assert model.metadata.metadata["classes"] == ["churned", "stayed"]
    # Any feature may be missing when scoring (the pipeline imputes): the schema allows it.
    scoring = to_model_input(X).assign(spend=np.nan, plan=None)
    np.testing.assert_array_equal(model.predict(scoring), pipeline.predict(scoring))
    flavor = model.metadata.flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert "orchestrator.steps.transformers.BooleanToFloat" in flavor["skops_trusted_types"]


def test_no_secret_reaches_the_store(sqlite_uri, fitted, tmp_path):
    """Every byte the store wrote (database and artifacts) is free of the secrets."""
    pipeline, X, y = fitted
    spec = _spec(sqlite_uri, experiment_name="secrets", tags={"api_key": SECRET_TOKEN},
                 log_model=False, log_plots=False)
    tracker = start_tracking(spec, resolved_config=_config())
    with ensure_run_ends(tracker):
        tracker.log_results(_results(pipeline, X, y, tmp_path), X_sample=X.head(50),
                            output_dir=tmp_path)
    store_dir = Path(sqlite_uri[len("sqlite:///"):]).parent
    written = _all_bytes_under(store_dir)
    assert len(written) > 10_000
    assert SECRET_TOKEN.encode() not in written
    assert SECRET_PASSWORD.encode() not in written
    assert REDACTED.encode() in written


def test_untrusted_model_type_is_refused_not_pickled(sqlite_uri, fitted, tmp_path):
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    pipeline, X, y = fitted
    wrapped = Pipeline([("foreign", ForeignScaler()), ("inner", pipeline)])
    tracker = start_tracking(_spec(sqlite_uri, log_plots=False), resolved_config={})
    with pytest.raises(ModelLoggingError, match=r"test_tracking.ForeignScaler.*trusted_types"):
        with ensure_run_ends(tracker):
            tracker.log_results({"pipeline": wrapped, "metrics": {}}, X_sample=X.head(20),
                                output_dir=tmp_path)
    client = MlflowClient(sqlite_uri)
    assert client.get_run(tracker.run_id).info.status == "FAILED"
    assert client.search_logged_models(experiment_ids=[tracker.experiment_id],
                                       filter_string=f"source_run_id = '{tracker.run_id}'") == []


@pytest.mark.parametrize("raised, status", [(ValueError("step 4 failed"), "FAILED"),
                                            (KeyboardInterrupt(), "KILLED")])
def test_run_status_when_the_workflow_raises(sqlite_uri, raised, status):
    from mlflow import MlflowClient

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    environ_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI",
                                                     "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    tracker = start_tracking(_spec(sqlite_uri), resolved_config={})
    with pytest.raises(type(raised)):
        with ensure_run_ends(tracker):
            # Library code sets no signal handler, environment variable or global URI.
            assert {s: signal.getsignal(s) for s in before} == before
            assert {k: os.environ.get(k) for k in environ_before} == environ_before
            raise raised
    assert MlflowClient(sqlite_uri).get_run(tracker.run_id).info.status == status
    assert {s: signal.getsignal(s) for s in before} == before
    assert {k: os.environ.get(k) for k in environ_before} == environ_before


def test_run_is_killed_on_sigterm(sqlite_uri, tmp_path):
    from mlflow import MlflowClient

    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from orchestrator.entrypoints.process import termination_signals_raise
        from orchestrator.specs.mlflow import MLflowSpec
        from orchestrator.tracking import ensure_run_ends, start_tracking

        tracker = start_tracking(MLflowSpec(tracking_uri={sqlite_uri!r}, timeout_s=5),
                                 resolved_config={{"job": "sigterm"}})
        # The entry point turns SIGTERM into SystemExit(143); the library ends the run KILLED.
        with termination_signals_raise(), ensure_run_ends(tracker):
            print(tracker.run_id, flush=True)
            time.sleep(120)
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, process.stderr.read()
        assert MlflowClient(sqlite_uri).get_run(run_id).info.status == "RUNNING"
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == 128 + signal.SIGTERM
    assert MlflowClient(sqlite_uri).get_run(run_id).info.status == "KILLED"


def test_child_runs_point_to_their_parent_from_threads(sqlite_uri):
    from concurrent.futures import ThreadPoolExecutor

    from mlflow import MlflowClient

    tracker = start_tracking(_spec(sqlite_uri, experiment_name="tuning"), resolved_config={})

    def trial(index):
        with child_run(tracker.context, f"trial-{index}",
                       params={"model__C": 0.1 * (index + 1)}) as child:
            child.log_metrics({"loss": 1.0 / (index + 1)})
            if index == 2:
                raise ValueError("trial diverged")
            return child.run_id

    with ensure_run_ends(tracker), ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(trial, i) for i in range(3)]
        done = [f.result() for f in futures[:2]]
        with pytest.raises(ValueError):
            futures[2].result()
    client = MlflowClient(sqlite_uri)
    children = client.search_runs([tracker.experiment_id],
                                  f"tags.mlflow.parentRunId = '{tracker.run_id}'")
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {"trial-0", "trial-1", "trial-2"}
    assert {by_name[f"trial-{i}"].info.run_id for i in range(2)} == set(done)
    assert by_name["trial-1"].data.params["model__C"] == "0.2"
    assert by_name["trial-1"].data.metrics["loss"] == pytest.approx(0.5)
    assert [by_name[f"trial-{i}"].info.status for i in range(3)] == ["FINISHED", "FINISHED",
                                                                    "FAILED"]
    with child_run(None, "untracked") as nothing:
        nothing.log_metrics({"loss": 1.0})
    assert nothing.run_id is None


# ----------------------------------------------------------------------------- unreachable


@pytest.mark.parametrize("server", ["dead_port", "silent"])
def test_unreachable_server_degrades_within_the_timeout(server, monkeypatch):
    timeout = 2.0
    # Entry points run in-process by earlier tests may have bounded MLflow's requests; this
    # test checks that the library itself sets nothing, so it starts without them.
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"):
        monkeypatch.delenv(name, raising=False)

    def attempt(uri):
        started = time.monotonic()
        with pytest.raises(TrackingUnavailableError, match="MLflow tracking"):
            start_tracking(MLflowSpec(tracking_uri=uri, timeout_s=timeout), resolved_config={})
        return time.monotonic() - started

    if server == "dead_port":
        elapsed = attempt(f"http://127.0.0.1:{free_port()}")
    else:
        with silent_server() as uri:
            elapsed = attempt(uri)
            assert elapsed >= timeout * 0.9  # it really waited for an answer
    assert elapsed < timeout + 1.0
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_server_hanging_mid_run_fails_each_call_within_the_bound(fitted, tmp_path, caplog,
                                                                 monkeypatch):
    """After a good start, a server that stops answering costs seconds, not minutes."""
    from orchestrator.entrypoints.process import bound_mlflow_requests
    from orchestrator.tracking import Tracker, TrackingError, bounded_http_env

    pipeline, X, y = fitted
    timeout = 1.0
    for name in bounded_http_env(timeout):
        monkeypatch.delenv(name, raising=False)
    with silent_server() as uri:
        # What the CLI does for a job with an mlflow section (monkeypatch restores it).
        bound_mlflow_requests(timeout)
        for name in bounded_http_env(timeout):
            monkeypatch.setenv(name, os.environ[name])
        tracker = Tracker(MLflowSpec(tracking_uri=uri, timeout_s=timeout), tracking_uri=uri,
                          run_id="0" * 32, experiment_id="0")
        results = _results(pipeline, X, y, tmp_path)
        started = time.monotonic()
        with pytest.raises(TrackingError, match="logging results"):
            tracker.log_results(results, X_sample=X.head(10), output_dir=tmp_path)
        logging_took = time.monotonic() - started
        started = time.monotonic()
        tracker.end("FAILED")
        ending_took = time.monotonic() - started
    # One request: timeout, one retry after 1 s backoff, timeout again (+ import overhead).
    bound = 2 * timeout + 1 + 3
    assert logging_took < bound and ending_took < bound, (logging_took, ending_took)
    assert "could not mark run" in caplog.text


def test_regression_run_has_residuals_and_a_signature(sqlite_uri, fitted, tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import Pipeline

    _, X, _ = fitted
    target = X["spend"] * 2 + np.arange(len(X)) % 7
    model = Pipeline([("preprocess", _pipeline().steps[0][1]),
                      ("model", RandomForestRegressor(n_estimators=10, random_state=0))])
    model.fit(X, target)
    tracker = start_tracking(_spec(sqlite_uri, experiment_name="regression"),
                             resolved_config={"model_spec": {"estimator": "random_forest"}})
    with ensure_run_ends(tracker):
        logged = tracker.log_results({"pipeline": model, "task": "regression",
                                      "metrics": {"r2": {"value": 0.9}}},
                                     X_sample=X.head(60), y_sample=target.head(60),
                                     output_dir=tmp_path)
    client = MlflowClient(sqlite_uri)
    plots = {Path(a.path).name for a in client.list_artifacts(tracker.run_id, "plots")}
    assert plots == {"residuals.png", "feature_importance.png"}
    assert client.get_run(tracker.run_id).data.metrics["r2"] == pytest.approx(0.9)
    with _global_tracking_uri(sqlite_uri):
        loaded = mlflow.pyfunc.load_model(logged["model_uri"])
    assert "classes" not in loaded.metadata.metadata
    # The tree's sklearn.tree._tree.Tree is trusted as scikit-learn's own.
    assert "sklearn.tree._tree.Tree" in loaded.metadata.flavors["sklearn"]["skops_trusted_types"]
    np.testing.assert_allclose(loaded.predict(to_model_input(X)), model.predict(X))


# ----------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.mark.mlflow_server
def test_server_run_registry_version_and_alias(mlflow_server, fitted, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    pipeline, X, y = fitted
    spec = _spec(mlflow_server, experiment_name="/Shared/churn", run_name="churn-lr",
                 registered_model_name="churn_classifier", model_alias="challenger")
    client = MlflowClient(mlflow_server)

    first = start_tracking(spec, resolved_config=_config())
    with ensure_run_ends(first):
        logged_1 = first.log_results(_results(pipeline, X, y, tmp_path), X_sample=X.head(80),
                                     y_sample=y.head(80), output_dir=tmp_path / "one")
    assert logged_1["model_version"] == "1"
    client.set_registered_model_alias("churn_classifier", "champion", "1")

    second = start_tracking(spec, resolved_config=_config())
    with ensure_run_ends(second):
        logged_2 = second.log_results(_results(pipeline, X, y, tmp_path), X_sample=X.head(80),
                                      output_dir=tmp_path / "two")
    assert logged_2["model_version"] == "2"
    v1 = client.get_model_version("churn_classifier", "1")
    v2 = client.get_model_version("churn_classifier", "2")
    assert v1.aliases == ["champion"]
    assert v2.aliases == ["challenger"]
    assert v2.run_id == second.run_id

    run = client.get_run(second.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["feature_store_spec.databricks_token"] == REDACTED
    assert run.data.metrics["roc_auc"] == pytest.approx(0.71)
    with _global_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model("models:/churn_classifier@challenger")
    np.testing.assert_array_equal(model.predict(to_model_input(X)), pipeline.predict(X))
    np.testing.assert_allclose(model.get_raw_model().predict_proba(to_model_input(X)),
                               pipeline.predict_proba(X))


@pytest.mark.mlflow_server
def test_server_failed_run_status(mlflow_server):
    from mlflow import MlflowClient

    tracker = start_tracking(_spec(mlflow_server, experiment_name="failures"),
                             resolved_config={})
    with pytest.raises(RuntimeError, match="boom"):
        with ensure_run_ends(tracker):
            raise RuntimeError("boom")
    assert MlflowClient(mlflow_server).get_run(tracker.run_id).info.status == "FAILED"
