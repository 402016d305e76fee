"""Row weights (``sample_weight``) in every fit and every score.

Known answers: a row of weight 2 is the same row twice (LogisticRegression's coefficients
agree), class weights and row weights multiply, weighting the minority class raises its
recall, and every fold score equals scikit-learn's ``cross_validate`` with the weights
routed to the model and the scorers, on the driver and on the cluster. An estimator that
refuses to fit without the right weights proves they reach tuning trials, calibration
and the threshold step.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import sklearn
from pyspark import cloudpickle
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold, cross_validate

from orchestrator import get_workflow_summary, run_ml_workflow
from orchestrator.errors import DataError, MissingColumnError, SpecError
from orchestrator.specs import parse_specs
from orchestrator.steps.pipeline import build_ml_pipeline
from orchestrator.steps.weights import request_sample_weight

# Trials and folds on Spark's Python workers unpickle the test estimator below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Unscaled, so that preprocessing (which learns unweighted) is the same for repeated rows.
UNSCALED = [{"columns": ["signal", "noise"], "type": "numeric", "scale": "none"}]
SCALED = [{"columns": ["signal", "noise"], "type": "numeric"}]
LOGISTIC = {"estimator": "logistic_regression", "params": {"max_iter": 2000, "tol": 1e-10}}


def _rows(n: int = 400, seed: int = 0, minority: float = 0.3):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n)})
    score = 1.5 * X["signal"] + rng.normal(size=n)
    y = pd.Series((score > np.quantile(score, 1 - minority)).astype(int), name="churned")
    weight = pd.Series(rng.choice([0.5, 1.0, 2.0, 3.0], size=n), name="weight")
    return X, y, weight


class WeightCheckingClassifier(LogisticRegression):
    """Fits only with the rows' own weights: ``1 + (first column > 0)`` (the signal)."""

    def fit(self, X, y, sample_weight=None):
        if sample_weight is None:
            raise ValueError("fit got no sample_weight")
        expected = 1.0 + (np.asarray(X)[:, 0] > 0)
        if not np.allclose(sample_weight, expected):
            raise ValueError("fit got the weights of other rows")
        return super().fit(X, y, sample_weight=sample_weight)


def _checking_pipeline():
    specs = parse_specs(feature_specs=UNSCALED, model_spec=LOGISTIC, data_given=True)
    pipeline = build_ml_pipeline(specs.features, specs.model)
    pipeline.steps[-1] = ("model", WeightCheckingClassifier())
    return request_sample_weight(pipeline)


def _checked_weights(X: pd.DataFrame) -> np.ndarray:
    return 1.0 + (X["signal"].to_numpy() > 0)


# ---- specs and data: clear errors


@pytest.mark.parametrize("model, kwargs, message", [
    ({"estimator": "sklearn.neighbors.KNeighborsClassifier"}, {"sample_weight": "weight"},
     r"KNeighborsClassifier \(model_spec.estimator 'sklearn.neighbors.KNeighborsClassifier'\) "
     "takes no sample_weight in fit"),
    (LOGISTIC, {"sample_weight": "signal"}, "'signal' is also a feature"),
    (LOGISTIC, {"sample_weight": True}, "expected a column name or an array"),
])
def test_bad_weight_specs_are_refused_before_anything_runs(model, kwargs, message):
    X, y, weight = _rows(50)
    with pytest.raises(SpecError, match=message):
        run_ml_workflow(UNSCALED, model, X=X.assign(weight=weight), y=y, **kwargs)


@pytest.mark.parametrize("data, kwargs, message", [
    ({"label": "churned", "sample_weight": "churned"}, {}, "is the label column"),
    ({"label": "churned", "sample_weight": "weight"}, {"sample_weight": "w2"},
     "'w2' differs from data_spec.sample_weight 'weight'"),
    ({"label": "churned"}, {"sample_weight": np.ones(3)}, "needs the rows as X and y"),
    ({"label": "churned", "sample_weight": "wieght", "columns": ["signal", "noise", "weight"]},
     {}, "not among the projected columns.*did you mean 'weight'"),
    ({"label": "churned", "sample_weight": 3}, {},
     "data_spec.sample_weight: expected a non-empty string"),
])
def test_bad_weight_columns_in_the_data_spec(data, kwargs, message):
    with pytest.raises(SpecError, match=message):
        run_ml_workflow(UNSCALED, LOGISTIC, data_spec={"path": "nowhere", **data}, **kwargs)


def test_every_weight_problem_is_reported_at_once():
    with pytest.raises(SpecError) as raised:
        run_ml_workflow(UNSCALED, {"estimator": "sklearn.neighbors.KNeighborsClassifier"},
                        data_spec={"path": "nowhere", "label": "churned",
                                   "sample_weight": "signal"})
    assert len(raised.value.problems) == 2
    assert "also a feature" in str(raised.value) and "takes no sample_weight" in str(raised.value)


@pytest.mark.parametrize("values, message", [
    ([1.0, None, -2.0, -3.0] + [1.0] * 46,
     r"sample_weight \(column 'weight'\).*1 value\(s\) are missing, at rows 1; 2 value\(s\) are "
     r"negative \(row 2: -2.0, row 3: -3.0\)"),
    ([0.0] * 50, "all 50 weights are zero"),
    (["heavy"] + [1.0] * 49, r"1 value\(s\) are not numbers \(row 0: 'heavy'\)"),
    ([True, False] * 25, "weights must be numbers, got dtype bool"),
    ([np.inf] + [1.0] * 49, r"1 value\(s\) are infinite"),
])
def test_bad_weight_values_name_the_column_and_the_rows(values, message):
    X, y, _ = _rows(50)
    with pytest.raises(DataError, match=message):
        run_ml_workflow(UNSCALED, LOGISTIC, X=X.assign(weight=pd.Series(values, dtype=None)),
                        y=y, sample_weight="weight", validation_strategy="none")


def test_a_missing_weight_column_and_an_array_of_the_wrong_length():
    X, y, _ = _rows(50)
    with pytest.raises(MissingColumnError, match="'wieght' .did you mean 'weight'"):
        run_ml_workflow(UNSCALED, LOGISTIC, X=X.assign(weight=1.0), y=y, sample_weight="wieght")
    with pytest.raises(DataError, match="49 weights for 50 rows"):
        run_ml_workflow(UNSCALED, LOGISTIC, X=X, y=y, sample_weight=np.ones(49))


# ---- known answers


def test_a_row_of_weight_two_fits_like_the_row_twice(tmp_path):
    X, y, _ = _rows(300)
    weight = np.where(np.arange(len(X)) % 3 == 0, 2.0, 1.0)
    twice = np.repeat(np.arange(len(X)), weight.astype(int))
    weighted = run_ml_workflow(UNSCALED, LOGISTIC, X=X, y=y, sample_weight=weight,
                               validation_strategy="none", output_dir=tmp_path / "w")
    repeated = run_ml_workflow(UNSCALED, LOGISTIC, X=X.iloc[twice].reset_index(drop=True),
                               y=y.iloc[twice].reset_index(drop=True),
                               validation_strategy="none", output_dir=tmp_path / "r")
    plain = run_ml_workflow(UNSCALED, LOGISTIC, X=X, y=y, validation_strategy="none",
                            output_dir=tmp_path / "p")
    coef = {name: r.pipeline.named_steps["model"].coef_.ravel()
            for name, r in (("weighted", weighted), ("repeated", repeated), ("plain", plain))}
    np.testing.assert_allclose(coef["weighted"], coef["repeated"], rtol=1e-5)
    assert not np.allclose(coef["weighted"], coef["plain"], rtol=1e-3)  # the weights mattered
    assert weighted.data["sample_weight"] == "an array passed to run_ml_workflow"
    assert "row weights:   an array passed to run_ml_workflow" in get_workflow_summary(weighted)


def test_class_weight_and_sample_weight_multiply(tmp_path):
    X, y, weight = _rows(300)
    both = run_ml_workflow(UNSCALED, {**LOGISTIC, "class_weight": {0: 1, 1: 4}},
                           X=X.assign(weight=weight), y=y, sample_weight="weight",
                           validation_strategy="none", output_dir=tmp_path / "b")
    product = weight * np.where(y == 1, 4.0, 1.0)
    one = run_ml_workflow(UNSCALED, LOGISTIC, X=X.assign(weight=product), y=y,
                          sample_weight="weight", validation_strategy="none",
                          output_dir=tmp_path / "o")
    np.testing.assert_allclose(both.pipeline.named_steps["model"].coef_,
                               one.pipeline.named_steps["model"].coef_, rtol=1e-5)


def test_a_heavier_minority_class_raises_its_recall(tmp_path):
    X, y, _ = _rows(2000, minority=0.05)
    heavy = np.where(y == 1, 19.0, 1.0)
    runs = {name: run_ml_workflow(
        SCALED, LOGISTIC, X=X, y=y, sample_weight=weights, validation_strategy="train_test",
        validation_params={"test_size": 0.3, "random_state": 1}, output_dir=tmp_path / name)
        for name, weights in (("plain", None), ("heavy", heavy))}
    # The hold-out's recall is weighted too, but recall only counts minority rows, whose
    # weights are all equal: it is the plain recall of the minority class.
    assert runs["heavy"].metrics["recall"]["value"] > runs["plain"].metrics["recall"]["value"] + 0.15


def _sklearn_fold_scores(X, y, weight, metrics, cv_folds):
    """scikit-learn's cross_validate on the same folds, the weights routed to the model step
    and to every scorer."""
    specs = parse_specs(feature_specs=SCALED, model_spec=LOGISTIC, data_given=True)
    pipeline = build_ml_pipeline(specs.features, specs.model)
    with sklearn.config_context(enable_metadata_routing=True):
        pipeline.named_steps["model"].set_fit_request(sample_weight=True)
        pipeline.set_params(preprocess__numeric_0__scaler=pipeline.get_params()[
            "preprocess__numeric_0__scaler"].set_fit_request(sample_weight=False))
        scoring = {name: get_scorer(name).set_score_request(sample_weight=True)
                   for name in metrics}
        found = cross_validate(pipeline, X, y, scoring=scoring,
                               cv=StratifiedKFold(cv_folds, shuffle=True, random_state=42),
                               params={"sample_weight": np.asarray(weight)})
    return {name: found[f"test_{name}"] for name in metrics}


_FOLD_METRICS = ("roc_auc", "average_precision", "accuracy", "balanced_accuracy", "f1",
                 "precision", "recall", "neg_log_loss", "neg_brier_score")


def test_driver_fold_scores_equal_sklearn_cross_validate_with_routed_weights(tmp_path):
    X, y, weight = _rows(300)
    results = run_ml_workflow(SCALED, LOGISTIC, X=X.assign(weight=weight), y=y,
                              sample_weight="weight",
                              validation_params={"cv_folds": 4, "on_driver": True},
                              output_dir=tmp_path)
    assert results.validation_details["ran"] == "driver"
    expected = _sklearn_fold_scores(X, y, weight, _FOLD_METRICS, 4)
    for name in _FOLD_METRICS:
        np.testing.assert_allclose(results.metrics[name]["folds"], expected[name], rtol=1e-9,
                                   err_msg=name)
    unweighted = run_ml_workflow(SCALED, LOGISTIC, X=X, y=y,
                                 validation_params={"cv_folds": 4, "on_driver": True},
                                 output_dir=tmp_path / "plain")
    assert unweighted.metrics["roc_auc"]["folds"] != results.metrics["roc_auc"]["folds"]


@pytest.mark.spark
def test_cluster_fold_scores_equal_sklearn_cross_validate_with_routed_weights(spark, tmp_path):
    X, y, weight = _rows(300)
    results = run_ml_workflow(SCALED, LOGISTIC, X=X.assign(weight=weight), y=y,
                              sample_weight="weight", validation_params={"cv_folds": 4},
                              spark=spark, output_dir=tmp_path)
    assert results.validation_details["ran"] == "cluster"
    expected = _sklearn_fold_scores(X, y, weight, _FOLD_METRICS, 4)
    for name in _FOLD_METRICS:
        np.testing.assert_allclose(results.metrics[name]["folds"], expected[name], rtol=1e-9,
                                   err_msg=name)


# ---- the weights reach every fit


def _tuning_spec(backend: str):
    from orchestrator.specs.tuning import parse_tuning_spec
    from orchestrator.specs.problems import Problems

    specs = parse_specs(feature_specs=UNSCALED, model_spec=LOGISTIC, data_given=True)
    problems = Problems()
    spec = parse_tuning_spec({"search_space": {"C": {"dist": "loguniform", "low": 0.1,
                                                     "high": 10}},
                              "max_evals": 3, "parallelism": 2, "cv_folds": 3,
                              "backend": backend, "seed": 0}, problems, specs.model)
    problems.raise_if_any()
    return spec, specs.model


def _tune(backend: str, spark, sample_weight):
    from orchestrator.steps.metrics import MetricScorer
    from orchestrator.tuning import tune

    X, y, _ = _rows(200)
    spec, model = _tuning_spec(backend)
    weights = _checked_weights(X) if sample_weight else None
    return tune(_checking_pipeline(), X, y, spec, model_spec=model,
                scoring=MetricScorer("binary", "roc_auc", 1), spark=spark,
                sample_weight=weights)


@pytest.mark.parametrize("backend", ["local", "optuna"])
def test_tuning_trials_on_the_driver_fit_with_the_rows_weights(backend):
    outcome = _tune(backend, None, sample_weight=True)
    assert outcome.summary["trials_ok"] == 3, outcome.summary["trials"]
    from orchestrator.errors import TuningError

    with pytest.raises(TuningError, match="fit got no sample_weight"):
        _tune(backend, None, sample_weight=False)


@pytest.mark.spark
@pytest.mark.classic_only("hyperopt's SparkTrials needs a SparkContext")
def test_tuning_trials_on_spark_tasks_fit_with_the_rows_weights(spark):
    outcome = _tune("spark", spark, sample_weight=True)
    assert outcome.summary["backend"] == "spark"
    assert outcome.summary["trials_ok"] == 3, outcome.summary["trials"]


@pytest.mark.spark
def test_tuning_trials_on_the_task_runner_fit_with_the_rows_weights(spark):
    # optuna with a session runs its trials through the Connect task runner (on either kind
    # of session): the weights are staged with the rows.
    outcome = _tune("optuna", spark, sample_weight=True)
    assert "trials run on executors" in outcome.summary["backend_reason"]
    assert outcome.summary["trials_ok"] == 3, outcome.summary["trials"]


@pytest.mark.parametrize("cv", [3, "holdout"])
def test_calibration_and_the_threshold_fit_with_the_rows_weights(cv, tmp_path):
    from orchestrator.specs import CalibrationSpec, ThresholdSpec
    from orchestrator.steps.calibration import calibrate
    from orchestrator.steps.threshold import with_threshold
    from orchestrator.steps.weights import fit_weighted

    X, y, _ = _rows(300)
    weights = _checked_weights(X)
    outcome = calibrate(_checking_pipeline(), X, y, CalibrationSpec(method="sigmoid", cv=cv),
                        output_dir=tmp_path, sample_weight=weights)
    assert outcome.calibrated
    thresholded = with_threshold(outcome.procedure, ThresholdSpec(objective="f1"), 1,
                                 weighted=True)
    model = fit_weighted(thresholded, X, y, weights)
    assert 0 < model.best_threshold_ < 1
    with pytest.raises(ValueError, match="fit got no sample_weight"):
        calibrate(_checking_pipeline(), X, y, CalibrationSpec(method="sigmoid", cv=cv),
                  output_dir=tmp_path)


def test_nested_cross_validation_tunes_and_fits_with_the_rows_weights():
    import functools

    from orchestrator.specs import ValidationSpec
    from orchestrator.steps.metrics import MetricScorer, WorkflowScorer
    from orchestrator.steps.validation import nested_cross_validate
    from orchestrator.tuning import tune

    X, y, _ = _rows(240)
    spec, model = _tuning_spec("local")
    tune_fold = functools.partial(tune, spec=spec, model_spec=model,
                                  scoring=MetricScorer("binary", "roc_auc", 1), spark=None)
    outcome = nested_cross_validate(
        _checking_pipeline(), X, y, ValidationSpec(strategy="nested_cross_validation",
                                                   outer_folds=3, on_driver=True),
        WorkflowScorer("binary", "roc_auc", 1), "binary", tune_fold=tune_fold, inner_folds=3,
        inner_seed=0, sample_weight=_checked_weights(X))
    assert [fold["trials"] for fold in outcome.details["nested"]] == [3, 3, 3]


# ---- a Delta source, the summary and MLflow


@pytest.mark.spark
def test_a_weight_column_of_a_delta_table_to_the_summary_and_mlflow(spark, tmp_path):
    from mlflow.tracking import MlflowClient

    X, y, weight = _rows(300)
    frame = X.assign(weight=weight, churned=y)
    spark.createDataFrame(frame).write.format("delta").save(str(tmp_path / "train"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = {"path": str(tmp_path / "train"), "label": "churned", "sample_weight": "weight"}
    results = run_ml_workflow(
        SCALED, LOGISTIC, data_spec=data, spark=spark,
        validation_params={"cv_folds": 3, "on_driver": True},
        calibration_spec={"method": "sigmoid", "cv": 2}, threshold_spec={"objective": "f1"},
        mlflow_spec={"tracking_uri": store, "experiment_name": "weights"},
        output_dir=tmp_path / "out")
    assert results.warnings == []
    assert results.data["sample_weight"] == "column 'weight'"
    assert results.pipeline.feature_names_in_.tolist() == ["signal", "noise"]  # not a feature
    assert "row weights:   column 'weight'" in get_workflow_summary(results)
    params = MlflowClient(tracking_uri=store).get_run(results.mlflow_run_id).data.params
    assert params["training.sample_weight"] == "column 'weight'"
    assert params["data.sample_weight"] == "weight"
    assert results.mlflow_model["model_uri"]  # skops serialised the weighted model

    with pytest.raises(MissingColumnError, match="'wieght' .did you mean 'weight'"):
        run_ml_workflow(SCALED, LOGISTIC, data_spec={**data, "sample_weight": "wieght"},
                        spark=spark, output_dir=tmp_path / "missing")
