"""Validation folds as cluster tasks, nested CV, and splits that respect groups and time.

Every score is checked against scikit-learn's own ``cross_validate`` (or its nested
recipe, ``GridSearchCV`` inside ``cross_validate``) on the same folds, on the cluster
path (real local[2] Spark tasks) and on the driver path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import DataError, SpecError, StepError
from orchestrator.workflow import run_ml_workflow

FEATURES = [{"name": f"x{i}", "type": "numeric"} for i in range(4)]
LOGISTIC = {"estimator": "logistic_regression", "params": {"max_iter": 300}}


@pytest.fixture(scope="module")
def data():
    """300 rows, 4 features, 20 groups and a timestamp (neither is a feature)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=[f"x{i}" for i in range(4)])
    y = pd.Series((X["x0"] + 0.5 * X["x1"] + rng.normal(scale=0.8, size=300) > 0).astype(int))
    X["customer"] = rng.integers(0, 20, size=300)
    X["event_ts"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(300), unit="h")
    return X, y


def _sklearn_scores(X, y, folds, metric="roc_auc"):
    from sklearn.model_selection import cross_validate

    from orchestrator.specs import parse_specs
    from orchestrator.steps.pipeline import build_ml_pipeline

    specs = parse_specs(feature_specs=FEATURES, model_spec=LOGISTIC, data_given=True)
    pipeline = build_ml_pipeline(specs.features, specs.model)
    scores = cross_validate(pipeline, X[[f["name"] for f in FEATURES]], y, cv=folds,
                            scoring=metric)
    return list(scores["test_score"])


def _folds(details):
    return details["fold_sizes"]


@pytest.mark.spark
@pytest.mark.parametrize("strategy, params", [
    ("cross_validation", {"cv_folds": 4}),
    ("group_k_fold", {"cv_folds": 4, "groups": "customer"}),
    ("time_series", {"cv_folds": 3, "order_by": "event_ts", "gap": 5, "max_train_size": 150}),
])
def test_folds_on_the_cluster_and_on_the_driver_equal_scikit_learn(spark, data, strategy, params):
    from orchestrator.specs import parse_specs
    from orchestrator.steps.validation import make_folds

    X, y = data
    cluster = run_ml_workflow(FEATURES, LOGISTIC, X, y, validation_strategy=strategy,
                              validation_params=params, spark=spark)
    driver = run_ml_workflow(FEATURES, LOGISTIC, X, y, validation_strategy=strategy,
                             validation_params={**params, "on_driver": True}, spark=spark)
    assert cluster.validation_details["ran"] == "cluster"
    assert cluster.validation_details["parallelism"] == 2
    assert driver.validation_details["ran"] == "driver"
    assert "on_driver" in driver.validation_details["placement"]

    specs = parse_specs(feature_specs=FEATURES, model_spec=LOGISTIC, validation_strategy=strategy,
                        validation_params=params, data_given=True)
    folds = make_folds(specs.validation, "binary", X, y, X[["customer", "event_ts"]])
    expected = _sklearn_scores(X, y, folds)
    np.testing.assert_allclose(cluster.metrics["roc_auc"]["folds"], expected, rtol=1e-9)
    np.testing.assert_allclose(driver.metrics["roc_auc"]["folds"], expected, rtol=1e-9)
    assert cluster.cv_score == pytest.approx(np.mean(expected))
    # The grouping/ordering columns were loaded for splitting, not used as features.
    assert list(cluster.pipeline.feature_names_in_) == [f["name"] for f in FEATURES]
    if strategy == "group_k_fold":
        for train, test in folds:
            assert not set(X["customer"].iloc[train]) & set(X["customer"].iloc[test])
    if strategy == "time_series":
        for train, test in folds:
            assert len(train) <= 150
            assert X["event_ts"].iloc[train].max() < X["event_ts"].iloc[test].min()
            # gap rows between the last training row and the first test row
            ranked = X["event_ts"].rank().astype(int)
            assert ranked.iloc[test].min() - ranked.iloc[train].max() == 5 + 1


def test_with_parallelism_one_the_folds_run_on_the_driver_like_scikit_learn(data):
    from sklearn.model_selection import StratifiedKFold

    X, y = data
    results = run_ml_workflow(FEATURES, LOGISTIC, X, y,
                              validation_params={"cv_folds": 3, "parallelism": 1})
    folds = list(StratifiedKFold(3, shuffle=True, random_state=42).split(X, y))
    np.testing.assert_allclose(results.metrics["roc_auc"]["folds"], _sklearn_scores(X, y, folds),
                               rtol=1e-9)
    assert results.validation_details["ran"] == "driver"
    assert "parallelism is 1" in results.validation_details["placement"]


def test_time_ordered_holdout_is_the_latest_rows_after_the_gap(data):
    X, y = data
    results = run_ml_workflow(FEATURES, LOGISTIC, X, y, validation_strategy="train_test",
                              validation_params={"test_size": 0.2, "order_by": "event_ts",
                                                 "gap": 10})
    assert results.validation_rows == {"train_rows": 230, "test_rows": 60}
    assert results.validation_details["split"]["kind"] == "time_ordered_holdout"
    # The hold-out is the latest 60 rows: the model never saw them.
    latest = X.sort_values("event_ts").tail(60)
    from sklearn.metrics import roc_auc_score

    proba = results.pipeline.predict_proba(latest[[f["name"] for f in FEATURES]])[:, 1]
    assert results.cv_score == pytest.approx(roc_auc_score(y.loc[latest.index], proba))


def _ridge_problem():
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=120, n_features=4, noise=30.0, random_state=3)
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(4)]), pd.Series(y)


RIDGE = {"estimator": "ridge", "task": "regression", "metric": "r2"}
GRID = [0.01, 10.0, 300.0]


def _nested_tuning():
    # A choice-only space with enough evaluations to try every grid point (seeded: repeatable).
    return {"search_space": {"alpha": {"dist": "choice", "options": GRID}}, "max_evals": 15,
            "algo": "random", "cv_folds": 3, "seed": 7, "backend": "local"}


@pytest.mark.spark
def test_nested_cv_matches_grid_search_inside_cross_validate(spark):
    from sklearn.model_selection import GridSearchCV, KFold, cross_validate

    from orchestrator.specs import parse_specs
    from orchestrator.steps.pipeline import build_ml_pipeline

    X, y = _ridge_problem()
    kwargs = dict(validation_strategy="nested_cross_validation", tuning_spec=_nested_tuning())
    cluster = run_ml_workflow(FEATURES, RIDGE, X, y, spark=spark,
                              validation_params={"outer_folds": 4}, **kwargs)
    driver = run_ml_workflow(FEATURES, RIDGE, X, y, spark=spark,
                             validation_params={"outer_folds": 4, "on_driver": True}, **kwargs)
    specs = parse_specs(feature_specs=FEATURES, model_spec=RIDGE, data_given=True)
    grid = GridSearchCV(build_ml_pipeline(specs.features, specs.model),
                        {"model__alpha": GRID}, scoring="r2",
                        cv=KFold(3, shuffle=True, random_state=7))
    outer = KFold(4, shuffle=True, random_state=42)
    expected = cross_validate(grid, X, y, cv=outer, scoring="r2", return_estimator=True)
    chosen = [e.best_params_["model__alpha"] for e in expected["estimator"]]
    for results in (cluster, driver):
        nested = results.validation_details["nested"]
        np.testing.assert_allclose([f["outer_score"] for f in nested], expected["test_score"],
                                   rtol=1e-9)
        assert [f["best_params"]["alpha"] for f in nested] == chosen
        assert results.cv_score == pytest.approx(np.mean(expected["test_score"]))
        assert results.validation_note is None
        # The final model is still tuned and fitted on all rows.
        assert results.tuning_summary["trials_run"] == 15
    assert cluster.validation_details["ran"] == "cluster"
    assert driver.validation_details["ran"] == "driver"
    assert "outer fold 0: score" in cluster.summary_text


def test_nested_cv_logs_the_chosen_params_of_every_outer_fold_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    X, y = _ridge_problem()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tuning = {**_nested_tuning(), "max_evals": 4}
    results = run_ml_workflow(FEATURES, RIDGE, X, y, validation_strategy="nested_cross_validation",
                              validation_params={"outer_folds": 2}, tuning_spec=tuning,
                              mlflow_spec={"tracking_uri": store, "experiment_name": "nested",
                                           "log_model": False},
                              output_dir=tmp_path / "out")
    run = MlflowClient(tracking_uri=store).get_run(results.mlflow_run_id)
    nested = results.validation_details["nested"]
    for fold in nested:
        assert float(run.data.params[f"validation_result.nested.fold{fold['fold']}.alpha"]) \
            == fold["best_params"]["alpha"]
    assert run.data.params["validation_result.split.kind"] == "k_fold"
    assert run.data.params["validation_result.split.outer_folds"] == "2"


def test_tuning_inner_folds_follow_the_groups(data):
    from orchestrator.specs import parse_specs
    from orchestrator.workflow import _tuning_folds

    X, y = data
    specs = parse_specs(feature_specs=FEATURES, model_spec=LOGISTIC,
                        validation_strategy="group_k_fold",
                        validation_params={"groups": "customer"},
                        tuning_spec={"search_space": {"C": {"dist": "loguniform", "low": 0.01,
                                                            "high": 10}}, "cv_folds": 3},
                        data_given=True)
    folds = _tuning_folds(specs, "binary", X, y, X[["customer"]])
    assert len(folds) == 3
    for train, test in folds:
        assert not set(X["customer"].iloc[train]) & set(X["customer"].iloc[test])


@pytest.mark.parametrize("strategy, params, tuning, message", [
    ("nested_cross_validation", {"outer_folds": 3}, None, r"nested_cross_validation tunes inside "
     r"each outer fold and needs a tuning_spec"),
    ("group_k_fold", {}, None, r"missing required key 'groups'"),
    ("time_series", {"order_by": "t", "gapp": 1}, None, r"unknown key 'gapp' \(did you mean 'gap'"),
    ("time_series", {"order_by": "t", "gap": -1}, None, r"gap: expected an integer >= 0, got -1"),
    ("train_test", {"gap": 3}, None, r"a gap needs time-ordered rows; set order_by"),
    ("train_test", {"order_by": "t", "stratify": True}, None, r"cannot be stratified"),
    ("cross_validation", {"parallelism": 0}, None, r"parallelism: expected an integer >= 1"),
])
def test_validation_specs_are_checked_before_anything_runs(data, strategy, params, tuning,
                                                           message):
    X, y = data
    with pytest.raises(SpecError, match=message):
        run_ml_workflow(FEATURES, LOGISTIC, X, y, validation_strategy=strategy,
                        validation_params=params, tuning_spec=tuning)


@pytest.mark.parametrize("strategy, params, error, message", [
    ("group_k_fold", {"groups": "shop"}, DataError, r"'shop'"),
    ("group_k_fold", {"groups": "x0_bucket", "cv_folds": 4}, DataError,
     r"'x0_bucket' has 3 distinct group\(s\), fewer than the 4 folds"),
    ("time_series", {"order_by": "event_ts", "cv_folds": 5, "gap": 260}, DataError,
     r"300 rows cannot make 5 time-ordered folds with gap=260"),
    ("train_test", {"order_by": "event_ts", "gap": 250}, DataError,
     r"gap=250 of 300 rows leave 0 training and 60 hold-out rows"),
])
def test_data_that_cannot_be_split_gets_a_clear_error(data, strategy, params, error, message):
    X, y = data
    X = X.assign(x0_bucket=pd.cut(X["x0"], 3, labels=False))
    with pytest.raises(error, match=message):
        run_ml_workflow(FEATURES, LOGISTIC, X, y, validation_strategy=strategy,
                        validation_params=params)


def test_random_folds_on_feature_store_rows_with_a_label_timestamp_warn():
    from orchestrator.results import WorkflowResult
    from orchestrator.specs import parse_specs
    from orchestrator.workflow import _warn_random_folds_on_time

    store = {"labels": {"path": "/labels", "keys": ["id"], "timestamp": "event_ts",
                        "label": "churned"},
             "lookups": [{"path": "/features", "keys": ["id"], "timestamp_key": "as_of"}]}
    for strategy, params, warned in (("cross_validation", {}, True),
                                     ("time_series", {"order_by": "event_ts"}, False)):
        specs = parse_specs(feature_specs=FEATURES, model_spec=LOGISTIC,
                            validation_strategy=strategy, validation_params=params,
                            feature_store_spec=store)
        results = WorkflowResult()
        _warn_random_folds_on_time(specs, results)
        assert bool(results.warnings) == warned
        if warned:
            assert "train on the future" in results.warnings[0].reason
            assert "time_series with order_by: event_ts" in results.warnings[0].reason


@pytest.mark.spark
def test_a_failing_fold_on_the_cluster_is_one_clear_error(spark):
    from orchestrator.cluster.tasks import run_on_cluster
    from orchestrator.errors import ClusterTaskError

    def divide(shared, args):  # local: pickled by value, as the workers cannot import tests/
        return shared / args

    with pytest.raises(ClusterTaskError, match=r"fold 2 failed: ZeroDivisionError") as info:
        run_on_cluster(spark, divide, [1, 0, 2], 6, 2, description="fold")
    assert "ZeroDivisionError" in info.value.remote_traceback
    assert isinstance(info.value, StepError)
    assert run_on_cluster(spark, divide, [1, 2, 3], 6, 2) == [6.0, 3.0, 2.0]
