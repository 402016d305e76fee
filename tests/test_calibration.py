"""Workflow step 5, probability calibration, on real scikit-learn datasets (no Spark)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits, load_iris, make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import brier_score_loss, log_loss
from sklearn.model_selection import StratifiedKFold, cross_validate, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from orchestrator.steps.calibration import (
    ECE_BINS,
    ISOTONIC_MIN_ROWS_PER_CLASS,
    CalibratedModel,
    CalibrationError,
    calibrate,
    calibration_rows_per_class,
    calibration_target,
    choose_method,
    decide,
    expected_calibration_error,
    make_calibrated_procedure,
    probability_metrics,
    reliability_curve,
)
from orchestrator.errors import OrchestratorError
from orchestrator.specs.calibration import CalibrationSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_pipeline(X: pd.DataFrame, model) -> Pipeline:
    """The shape build_ml_pipeline produces: preprocess (ColumnTransformer) + model."""
    preprocess = ColumnTransformer([("numeric_0", StandardScaler(), list(X.columns))])
    return Pipeline([("preprocess", preprocess), ("model", model)])


def as_frame(X: np.ndarray, y: np.ndarray) -> tuple[pd.DataFrame, pd.Series]:
    return (pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]),
            pd.Series(y, name="label"))


@pytest.fixture(scope="module")
def redundant_binary():
    # Redundant (correlated) features break naive Bayes' independence
    # assumption, so GaussianNB is badly over-confident here (scikit-learn's
    # own calibration example).
    X, y = make_classification(n_samples=4000, n_features=20, n_informative=3,
                               n_redundant=10, random_state=0)
    return as_frame(X, y)


# ---------------------------------------------------------------- ECE, by hand and against sklearn


def test_ece_matches_a_hand_computed_example():
    p = [0.05, 0.08, 0.0, 0.35, 0.31, 0.72, 0.95, 1.0]
    o = [0, 1, 0, 0, 1, 1, 1, 0]
    # bin 0: p 0.05, 0.08, 0.0 -> mean 0.04333, observed 1/3 -> gap 0.29, 3 rows
    # bin 3: p 0.35, 0.31      -> mean 0.33,    observed 1/2 -> gap 0.17, 2 rows
    # bin 7: p 0.72            -> mean 0.72,    observed 1   -> gap 0.28, 1 row
    # bin 9: p 0.95, 1.0 (p=1 goes to the last bin) -> mean 0.975, observed 1/2 -> gap 0.475
    # ECE = (3*0.29 + 2*0.17 + 1*0.28 + 2*0.475) / 8 = 2.44 / 8
    assert expected_calibration_error(p, o) == pytest.approx(0.305)
    curve = reliability_curve(p, o)
    assert curve.counts.tolist() == [3, 0, 0, 2, 0, 0, 0, 1, 0, 2]
    assert curve.mean_predicted[9] == pytest.approx(0.975)
    assert curve.observed[3] == pytest.approx(0.5)
    assert np.isnan(curve.observed[1])


def test_ece_is_zero_when_each_bin_is_calibrated_and_uses_top_class_for_multiclass():
    assert expected_calibration_error([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0]) == 0.0
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    y = np.array(["a", "b", "a", "b"])
    confidence, correct, label = calibration_target(proba, y, ["a", "b", "c"])
    assert confidence.tolist() == [0.7, 0.6, 0.6, 0.5]
    assert correct.tolist() == [True, True, False, False]
    assert "top class" in label
    # bin 5: 0.5 wrong -> gap 0.5; bin 6: 0.6, 0.6 one right -> gap 0.1; bin 7: 0.7 right -> 0.3
    assert expected_calibration_error(confidence, correct) == pytest.approx((0.5 + 0.2 + 0.3) / 4)


def test_ece_agrees_with_sklearn_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    p = rng.uniform(size=5000)
    # Miscalibrated in both directions (the true frequency crosses the
    # diagonal several times), so the result depends on the binning: with a
    # one-sided gap every binning would give mean(p) - mean(outcome).
    outcome = rng.uniform(size=5000) < np.clip(p + 0.3 * np.sin(6 * np.pi * p), 0, 1)
    observed, predicted = calibration_curve(outcome, p, n_bins=ECE_BINS, strategy="uniform")
    counts, _ = np.histogram(p, bins=ECE_BINS, range=(0, 1))
    counts = counts[counts > 0]
    oracle = float(np.sum(counts / counts.sum() * np.abs(observed - predicted)))
    assert expected_calibration_error(p, outcome) == pytest.approx(oracle)
    assert oracle > 0.1


def test_probability_metrics_match_sklearn_and_the_textbook_brier():
    y = np.array([0, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.8, 0.6, 0.3, 0.9])
    proba = np.column_stack([1 - p1, p1])
    metrics = probability_metrics(y, proba, [0, 1])
    assert metrics["brier"] == pytest.approx(np.mean((p1 - y) ** 2))
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, p1))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, proba))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(p1, y == 1))


# ---------------------------------------------------------------- pure decisions


@pytest.mark.parametrize("requested, n_classes, rows, expected", [
    ("auto", 2, ISOTONIC_MIN_ROWS_PER_CLASS - 1, "sigmoid"),
    ("auto", 2, ISOTONIC_MIN_ROWS_PER_CLASS, "isotonic"),
    ("auto", 3, 50_000, "temperature"),
    ("auto", 10, 10, "temperature"),
    ("sigmoid", 2, 50_000, "sigmoid"),
    ("isotonic", 2, 10, "isotonic"),
    ("temperature", 2, 10, "temperature"),
])
def test_choose_method(requested, n_classes, rows, expected):
    method, reason = choose_method(requested, n_classes=n_classes,
                                   calibration_rows_per_class=rows)
    assert method == expected
    assert reason.startswith("auto:" if requested == "auto" else "method")
    if requested == "auto" and n_classes == 2:
        assert str(rows) in reason


def test_choose_method_notes_isotonic_on_few_rows_and_rejects_unknown_methods():
    assert "overfit" in choose_method("isotonic", n_classes=2, calibration_rows_per_class=80)[1]
    with pytest.raises(CalibrationError, match="unknown calibration method 'platt'"):
        choose_method("platt", n_classes=2, calibration_rows_per_class=80)


@pytest.mark.parametrize("kwargs, expected", [
    ({"cv": 5}, 600),
    ({"cv": 5, "ensemble": True}, 600),
    ({"cv": 5, "ensemble": False}, 3000),
    ({"cv": "holdout", "holdout_fraction": 0.2}, 600),
    ({"cv": "holdout", "holdout_fraction": 0.5}, 1500),
])
def test_calibration_rows_per_class(kwargs, expected):
    assert calibration_rows_per_class([3000, 8000], **kwargs) == expected


@pytest.mark.parametrize("before, after, keep_if_worse, keep, words", [
    (0.20, 0.15, False, True, "improved"),
    (0.20, 0.20, False, True, "improved"),
    (0.15, 0.20, False, False, "kept the uncalibrated model"),
    (0.15, 0.20, True, True, "keep_if_worse is true"),
    (None, 0.20, False, True, "no predict_proba"),
])
def test_decide(before, after, keep_if_worse, keep, words):
    decision, reason = decide(before, after, keep_if_worse=keep_if_worse)
    assert decision is keep
    assert words in reason


# ---------------------------------------------------------------- calibrate(), end to end


@pytest.mark.parametrize("spec", [CalibrationSpec(cv=5), CalibrationSpec(cv="holdout")],
                         ids=["cv5", "holdout"])
def test_gaussian_nb_gets_lower_brier_and_ece(redundant_binary, tmp_path, spec):
    X, y = redundant_binary
    pipeline = make_pipeline(X, GaussianNB())
    outcome = calibrate(pipeline, X, y, spec, output_dir=tmp_path, random_state=7)
    s = outcome.summary

    before, after = s["metrics_before"], s["metrics_after"]
    assert after["brier"] < before["brier"] - 0.01
    assert after["ece"] < before["ece"] / 2
    assert after["log_loss"] < before["log_loss"]
    assert outcome.calibrated and s["decision"] == "calibrated"
    assert s["method"] == "sigmoid" and "smallest class" in s["method_reason"]

    # Independent oracle for the "before" numbers: redo the documented
    # diagnostic split and score the plain pipeline with sklearn's metrics.
    X_rest, X_diag, y_rest, y_diag = train_test_split(X, y, test_size=0.2, stratify=y,
                                                      random_state=7)
    p_before = clone(pipeline).fit(X_rest, y_rest).predict_proba(X_diag)[:, 1]
    assert before["brier"] == pytest.approx(brier_score_loss(y_diag, p_before))
    assert before["ece"] == pytest.approx(expected_calibration_error(p_before, y_diag == 1))
    assert s["rows"] == {"training": 4000, "diagnostic": 800, "diagnostic_fit": 3200,
                         "final_model": s["rows"]["final_model"]}

    # The returned model is the calibrated procedure refit on all rows.
    model = outcome.model
    assert isinstance(model, CalibratedModel)
    if spec.cv == "holdout":
        assert s["rows"]["final_model"] == {"fit": 3200, "calibration": 800}
        assert s["ensemble"] is False
    else:
        assert s["rows"]["final_model"] == {"fit": 4000, "calibration": 4000}
        assert len(model.calibrator_.calibrated_classifiers_) == 5
    proba = model.predict_proba(X)
    assert proba.shape == (4000, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(model.predict(X)) <= {0, 1}
    json.dumps(s)  # the summary is logged to MLflow / written as JSON


def test_reliability_diagram_is_a_real_png(redundant_binary, tmp_path):
    from matplotlib.image import imread

    X, y = redundant_binary
    outcome = calibrate(make_pipeline(X, GaussianNB()), X, y, CalibrationSpec(cv=3),
                        output_dir=tmp_path / "plots")
    path = tmp_path / "plots" / "calibration_reliability.png"
    assert outcome.summary["plot_path"] == str(path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    height, width = image.shape[:2]
    assert height >= 600 and width >= 500
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_auto_picks_isotonic_only_with_enough_calibration_rows(tmp_path):
    from sklearn.isotonic import IsotonicRegression

    X, y = as_frame(*make_classification(n_samples=6000, n_features=8, n_redundant=4,
                                         random_state=1))
    spec = CalibrationSpec(cv="holdout", holdout_fraction=0.5)
    big = calibrate(make_pipeline(X, GaussianNB()), X, y, spec, output_dir=tmp_path / "big")
    # ~3000 rows per class, half held out for the calibrator: ~1500 >= 1000.
    assert big.summary["method"] == "isotonic"
    assert big.summary["calibration_rows_per_class"] >= ISOTONIC_MIN_ROWS_PER_CLASS
    fitted = big.model.calibrator_.calibrated_classifiers_[0].calibrators[0]
    assert isinstance(fitted, IsotonicRegression)

    X_small, y_small = X.iloc[:1000], y.iloc[:1000]
    small = calibrate(make_pipeline(X, GaussianNB()), X_small, y_small, spec,
                      output_dir=tmp_path / "small")
    assert small.summary["method"] == "sigmoid"
    assert "< 1000" in small.summary["method_reason"]
    fitted = small.model.calibrator_.calibrated_classifiers_[0].calibrators[0]
    assert type(fitted).__name__ == "_SigmoidCalibration"


def test_multiclass_uses_temperature_scaling_and_improves(tmp_path):
    X, y = load_digits(return_X_y=True, as_frame=True)
    outcome = calibrate(make_pipeline(X, GaussianNB()), X, y, CalibrationSpec(cv=3),
                        output_dir=tmp_path)
    s = outcome.summary
    assert s["method"] == "temperature" and "10 classes" in s["method_reason"]
    assert s["classes"] == list(range(10))
    assert s["metrics_after"]["brier"] < s["metrics_before"]["brier"]
    assert s["metrics_after"]["log_loss"] < s["metrics_before"]["log_loss"] / 2
    assert s["metrics_after"]["ece"] < s["metrics_before"]["ece"]
    proba = outcome.model.predict_proba(X)
    assert proba.shape == (len(X), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (tmp_path / "calibration_reliability.png").read_bytes()[:8] == PNG_MAGIC


def test_string_labels_and_a_margin_model_without_predict_proba(tmp_path):
    X, y = as_frame(*make_classification(n_samples=800, n_features=6, random_state=3))
    y = y.map({0: "no", 1: "yes"})
    outcome = calibrate(make_pipeline(X, LinearSVC()), X, y, CalibrationSpec(cv="holdout"),
                        output_dir=tmp_path)
    s = outcome.summary
    assert s["metrics_before"] is None  # LinearSVC has no probabilities to compare
    assert outcome.calibrated and "no predict_proba" in s["reason"]
    assert list(outcome.model.classes_) == ["no", "yes"]
    assert set(outcome.model.predict(X)) <= {"no", "yes"}
    assert (tmp_path / "calibration_reliability.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def iris_worse(tmp_path_factory):
    # An already well-calibrated model, and isotonic regression fit on a
    # dozen rows: calibration makes the held-out Brier score worse.
    X, y = load_iris(return_X_y=True, as_frame=True)
    pipeline = make_pipeline(X, LogisticRegression(C=100, max_iter=5000))
    return X, y, pipeline


@pytest.mark.parametrize("keep_if_worse", [False, True])
def test_keep_if_worse_decision(iris_worse, tmp_path, keep_if_worse):
    X, y, pipeline = iris_worse
    spec = CalibrationSpec(method="isotonic", cv="holdout", holdout_fraction=0.1,
                           keep_if_worse=keep_if_worse)
    outcome = calibrate(pipeline, X, y, spec, output_dir=tmp_path, random_state=0)
    s = outcome.summary
    assert s["metrics_after"]["brier"] > s["metrics_before"]["brier"]
    assert "worse" in s["reason"]
    if keep_if_worse:
        assert outcome.calibrated and s["decision"] == "calibrated"
        assert isinstance(outcome.model, CalibratedModel)
        assert "keep_if_worse is true" in s["reason"]
        assert isinstance(outcome.procedure, CalibratedModel)
    else:
        assert not outcome.calibrated and s["decision"] == "uncalibrated"
        assert isinstance(outcome.model, Pipeline)
        # The uncalibrated pipeline, fitted on all training rows.
        expected = clone(pipeline).fit(X, y).predict_proba(X)
        np.testing.assert_allclose(outcome.model.predict_proba(X), expected)
        assert s["rows"]["final_model"] == {"fit": len(X), "calibration": 0}
        assert isinstance(outcome.procedure, Pipeline)
    assert (tmp_path / "calibration_reliability.png").exists()


# ---------------------------------------------------- failures raise; the workflow degrades


def test_a_class_too_small_for_the_folds_raises(tmp_path):
    X, y = as_frame(*make_classification(n_samples=300, n_features=5, random_state=0))
    y = y.copy()
    y.iloc[:4] = 2  # a third class with 4 rows: 3 left after the diagnostic split
    with pytest.raises(CalibrationError, match=r"cv=5 calibration needs at least 5 rows"
                                               r" of every class.*\{2: 3\}") as info:
        calibrate(make_pipeline(X, GaussianNB()), X, y, CalibrationSpec(cv=5),
                  output_dir=tmp_path)
    assert isinstance(info.value, OrchestratorError)
    assert not (tmp_path / "calibration_reliability.png").exists()


@pytest.mark.parametrize("y_change, spec, match", [
    ({0: 2}, CalibrationSpec(cv=3), "single row"),
    ({0: 2, 1: 2, 2: 2}, CalibrationSpec(cv="holdout", holdout_fraction=0.1),
     "contain no row of class"),
])
def test_tiny_classes_raise(tmp_path, y_change, spec, match):
    X, y = as_frame(*make_classification(n_samples=200, n_features=5, random_state=0))
    y = y.copy()
    for position, label in y_change.items():
        y.iloc[position] = label
    with pytest.raises(CalibrationError, match=match):
        calibrate(make_pipeline(X, GaussianNB()), X, y, spec, output_dir=tmp_path)


def test_a_regressor_cannot_be_calibrated(tmp_path):
    X, y = as_frame(*make_classification(n_samples=200, n_features=5, random_state=0))
    with pytest.raises(CalibrationError, match="needs a classifier, got Ridge"):
        calibrate(make_pipeline(X, Ridge()), X, y, CalibrationSpec(), output_dir=tmp_path)


# ---------------------------------------------------------------- the procedure for step 6


def test_procedure_is_clonable_and_recalibrates_inside_each_fold(redundant_binary):
    X, y = redundant_binary
    pipeline = make_pipeline(X, GaussianNB())
    spec = CalibrationSpec(cv=3, ensemble=False)
    procedure = make_calibrated_procedure(pipeline, spec, random_state=5)
    params = procedure.get_params(deep=False)
    assert params["cv"] == 3 and params["ensemble"] is False and params["random_state"] == 5
    twin = clone(procedure)
    assert twin.get_params(deep=False)["estimator"] is not pipeline
    assert twin.get_params()["estimator__model__var_smoothing"] == 1e-9

    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    calibrated = cross_validate(procedure, X, y, cv=folds, scoring="neg_brier_score",
                                return_estimator=True)
    plain = cross_validate(pipeline, X, y, cv=folds, scoring="neg_brier_score")
    fitted = calibrated["estimator"]
    assert [m.n_fit_rows_ for m in fitted] == [3000] * 4  # each fold's training rows only
    assert len({id(m.calibrator_) for m in fitted}) == 4
    # Same folds, same models: calibration inside the folds lowers the Brier score.
    assert -calibrated["test_score"].mean() < -plain["test_score"].mean() - 0.01
    assert not hasattr(procedure, "calibrator_")  # the template itself is never fitted
