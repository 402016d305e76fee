"""run_ml_workflow with in-memory data: steps, validation strategies, honest scores, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

from orchestrator import build_ml_pipeline, get_workflow_summary, run_ml_workflow
from orchestrator.errors import DataError, MissingColumnError, SpecError


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer(as_frame=True)
    X = data.data.iloc[:, :8].copy()
    X.columns = [f"f{i}" for i in range(8)]
    return X, data.target.map({0: "malignant", 1: "benign"})


FEATURES = [{"columns": [f"f{i}" for i in range(8)], "type": "numeric"}]
LOGREG = {"estimator": "logistic_regression", "params": {"max_iter": 1000}}


def test_cross_validation_matches_scikit_learn_on_the_same_folds(cancer, tmp_path):
    X, y = cancer
    results = run_ml_workflow(FEATURES, LOGREG, X=X, y=y, validation_params={"cv_folds": 4},
                              output_dir=tmp_path)
    oracle = cross_val_score(build_ml_pipeline(FEATURES, LOGREG), X, y, scoring="roc_auc",
                             cv=StratifiedKFold(4, shuffle=True, random_state=42))
    assert results["cv_score"] == pytest.approx(oracle.mean())
    assert results["metrics"]["roc_auc"]["folds"] == pytest.approx(list(oracle))
    assert results["metrics"]["roc_auc"]["std"] == pytest.approx(oracle.std())
    assert results["primary_metric"] == "roc_auc"
    assert results["pos_label"] == "malignant"  # greater label, scikit-learn's convention
    # the returned pipeline is fit on all rows
    assert results["pipeline"].named_steps["preprocess"].transformers_[0][1] \
        .named_steps["scaler"].n_samples_seen_ == len(X)
    assert set(results["timings"]) == {"data_loading", "pipeline_construction", "training",
                                       "validation"}
    assert results["warnings"] == [] and results["mlflow_run_id"] is None


def test_train_test_holdout_is_never_seen_by_fitting(cancer, tmp_path):
    X, y = cancer
    X = X.copy()
    results = run_ml_workflow(FEATURES, LOGREG, X=X, y=y, validation_strategy="train_test",
                              validation_params={"test_size": 0.25, "random_state": 7},
                              output_dir=tmp_path)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=7,
                                                        stratify=y)
    scaler = results["pipeline"].named_steps["preprocess"].transformers_[0][1] \
        .named_steps["scaler"]
    np.testing.assert_allclose(scaler.mean_, X_train.mean().to_numpy())
    assert not np.allclose(scaler.mean_, X.mean().to_numpy())
    assert scaler.n_samples_seen_ == len(X_train)
    from sklearn.metrics import roc_auc_score

    proba = results["pipeline"].predict_proba(X_test)[:, list(results["classes"]).index(
        "malignant")]
    assert results["cv_score"] == pytest.approx(roc_auc_score(y_test == "malignant", proba))
    assert results["data"]["holdout_rows"] == len(X_test)
    assert results["validation_rows"] == {"train_rows": len(X_train), "test_rows": len(X_test)}


def test_no_validation_returns_a_fitted_pipeline_and_no_score(cancer, tmp_path):
    X, y = cancer
    results = run_ml_workflow(FEATURES, LOGREG, X=X, y=y, validation_strategy="none",
                              output_dir=tmp_path)
    assert results["cv_score"] is None and results["metrics"] == {}
    assert results["pipeline"].predict(X.head(3)).shape == (3,)
    assert "no validation was run" in get_workflow_summary(results)


def test_multiclass_default_metric_and_summary(tmp_path):
    data = load_iris(as_frame=True)
    X = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    results = run_ml_workflow([{"columns": list(X.columns), "type": "numeric"}],
                              {"estimator": "random_forest",
                               "params": {"n_estimators": 20, "random_state": 0}},
                              X=X, y=data.target, output_dir=tmp_path)
    assert results["target_kind"] == "multiclass" and results["primary_metric"] == "f1_macro"
    assert results["cv_score"] > 0.85
    summary = get_workflow_summary(results)
    for fragment in ("cv score", "f1_macro", "random_forest", "Timings", "Warnings (0)"):
        assert fragment in summary


def test_regression_with_rmse_metric(tmp_path):
    data = load_diabetes(as_frame=True)
    results = run_ml_workflow([{"columns": list(data.data.columns), "type": "numeric"}],
                              {"estimator": "ridge", "metric": "neg_root_mean_squared_error"},
                              X=data.data, y=data.target, validation_params={"cv_folds": 3},
                              output_dir=tmp_path)
    assert results["task"] == "regression"
    assert -80 < results["cv_score"] < -40
    assert results["metrics"]["r2"]["mean"] > 0.3


@pytest.mark.parametrize("metric", ["recall", "jaccard"])
def test_pos_label_changes_the_positive_class(cancer, tmp_path, metric):
    from sklearn.metrics import jaccard_score, recall_score

    X, y = cancer
    score = {"recall": recall_score, "jaccard": jaccard_score}[metric]
    scores = {}
    for positive in ("benign", "malignant"):
        results = run_ml_workflow(FEATURES, {**LOGREG, "metric": metric, "pos_label": positive},
                                  X=X, y=y, validation_strategy="train_test",
                                  output_dir=tmp_path)
        _, X_test, _, y_test = train_test_split(X, y, test_size=0.2, random_state=42,
                                                stratify=y)
        expected = score(y_test, results["pipeline"].predict(X_test), pos_label=positive)
        assert results["pos_label"] == positive
        assert results["cv_score"] == pytest.approx(expected)
        scores[positive] = results["cv_score"]
    assert scores["benign"] != pytest.approx(scores["malignant"])


def test_missing_feature_column_names_a_close_match(cancer):
    X, y = cancer
    with pytest.raises(MissingColumnError, match=r"'f9'.*not found") as info:
        run_ml_workflow([{"columns": ["f0", "f9"], "type": "numeric"}], LOGREG, X=X, y=y)
    assert "Available columns" in str(info.value)
    with pytest.raises(MissingColumnError, match=r"did you mean 'f1'"):
        run_ml_workflow([{"name": "f_1", "type": "numeric"}], LOGREG, X=X, y=y)


@pytest.mark.parametrize("y_change, pattern", [
    (lambda y: y.where(y.index > 3), r"4 of \d+ labels are missing"),
    (lambda y: y.map(lambda _: "only"), r"only one class"),
    (lambda y: y.iloc[:10], r"X has \d+ rows but y has 10"),
])
def test_bad_labels_give_data_errors(cancer, y_change, pattern):
    X, y = cancer
    with pytest.raises(DataError, match=pattern):
        run_ml_workflow(FEATURES, LOGREG, X=X, y=y_change(y), validation_strategy="none")


def test_binary_metric_on_multiclass_labels_is_explained():
    data = load_iris(as_frame=True)
    with pytest.raises(DataError, match=r"'roc_auc' is for binary targets.*roc_auc_ovr"):
        run_ml_workflow([{"columns": list(data.data.columns), "type": "numeric"}],
                        {"estimator": "logistic_regression", "metric": "roc_auc"},
                        X=data.data, y=data.target)


def test_class_smaller_than_folds_is_explained(cancer):
    X, y = cancer
    y = y.copy()
    y.iloc[:3] = "rare"
    with pytest.raises(DataError, match=r"class 'rare' has 3 row\(s\), fewer than cv_folds=5"):
        run_ml_workflow(FEATURES, {"estimator": "logistic_regression", "metric": "f1_macro"},
                        X=X, y=y)


def test_wrong_feature_type_is_a_data_error_not_a_sklearn_traceback(cancer):
    # Issue 15: text in a numeric column is refused when loaded, naming column and values.
    X, y = cancer
    X = X.assign(f0=["text"] * len(X))
    with pytest.raises(DataError, match=r"'f0' is declared numeric.*'text'"):
        run_ml_workflow(FEATURES, LOGREG, X=X, y=y, validation_strategy="none")


def test_x_must_be_a_dataframe(cancer):
    X, y = cancer
    with pytest.raises(SpecError, match="expected a pandas DataFrame"):
        run_ml_workflow(FEATURES, LOGREG, X=X.to_numpy(), y=y)


def test_specs_are_checked_before_data(cancer):
    X, y = cancer
    with pytest.raises(SpecError, match=r"2 problems"):
        run_ml_workflow([{"name": "f0", "type": "numerc"}], {"estimator": "logistc_regression"},
                        X=X, y=y)


def _nb_problem():
    from sklearn.datasets import make_classification

    # Redundant features break naive Bayes' independence assumption: overconfident probabilities.
    X, y = make_classification(n_samples=1500, n_features=8, n_informative=2, n_redundant=6,
                               random_state=3)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    return X, pd.Series(y)


def test_calibration_runs_in_step_5_and_cross_validation_refits_it(tmp_path):
    X, y = _nb_problem()
    results = run_ml_workflow(FEATURES, {"estimator": "gaussian_nb",
                                         "metric": "neg_brier_score"},
                              X=X, y=y, validation_params={"cv_folds": 3},
                              calibration_spec={"method": "sigmoid", "cv": 3},
                              output_dir=tmp_path)
    summary = results["calibration_summary"]
    assert summary["calibrated"] is True
    assert summary["metrics_after"]["brier"] < summary["metrics_before"]["brier"]
    assert type(results["pipeline"]).__name__ == "CalibratedModel"
    plain = run_ml_workflow(FEATURES, {"estimator": "gaussian_nb", "metric": "neg_brier_score"},
                            X=X, y=y, validation_params={"cv_folds": 3}, output_dir=tmp_path)
    # the calibrated procedure is what cross-validation scored: better Brier than plain NB
    assert results["cv_score"] > plain["cv_score"]
    assert (tmp_path / "calibration_reliability.png").stat().st_size > 10_000
    assert "calibration" in results["timings"]
    assert "Calibration" in get_workflow_summary(results)


def test_calibration_failure_degrades_to_the_uncalibrated_model(tmp_path):
    X, y = _nb_problem()
    y = y.copy()
    y.iloc[:4] = 2  # a class with 4 rows: too few for 10 calibration folds, enough for 3 CV folds
    results = run_ml_workflow(FEATURES, {"estimator": "gaussian_nb"}, X=X, y=y,
                              validation_params={"cv_folds": 3},
                              calibration_spec={"method": "sigmoid", "cv": 10},
                              output_dir=tmp_path)
    assert [w["step"] for w in results["warnings"]] == ["calibration"]
    assert results["calibration_summary"]["status"] == "degraded"
    assert type(results["pipeline"]).__name__ == "Pipeline"
    assert results["cv_score"] is not None
    assert "[calibration]" in get_workflow_summary(results)


def test_tuning_then_training_uses_the_best_params(cancer, tmp_path):
    X, y = cancer
    results = run_ml_workflow(
        FEATURES, {"estimator": "logistic_regression", "params": {"C": 1e-5, "max_iter": 500},
                   "metric": "neg_log_loss"},
        X=X, y=y, validation_strategy="train_test",
        tuning_spec={"search_space": {"C": {"dist": "loguniform", "low": 0.01, "high": 100}},
                     "max_evals": 6, "backend": "local", "seed": 1, "cv_folds": 3},
        calibration_spec={"method": "sigmoid", "cv": 3}, output_dir=tmp_path)
    tuning = results["tuning_summary"]
    assert tuning["backend"] == "local" and tuning["trials_ok"] == 6
    best_c = tuning["best_params"]["C"]
    winner = max((t for t in tuning["trials"] if t["status"] == "ok"), key=lambda t: t["score"])
    assert winner["score"] == tuning["best_score"] and winner["params"]["C"] == best_c
    assert results["validation_rows"]["train_rows"] == results["data"]["training_rows"]
    from matplotlib.image import imread

    history = imread(results["artifacts"]["tuning_history"])
    assert history.shape[0] > 300 and history.std() > 0.05  # a drawn figure, not a blank one
    assert results["timings"].keys() >= {"tuning", "training", "calibration", "validation"}
    # the hold-out is neither tuned, fitted nor calibrated on
    training_rows = results["data"]["training_rows"]
    assert training_rows + results["data"]["holdout_rows"] == len(X)
    assert results["calibration_summary"]["rows"]["training"] == training_rows
    final = results["pipeline"]
    if type(final).__name__ == "Pipeline":
        assert final.named_steps["model"].C == best_c
    else:
        assert final.estimator.named_steps["model"].C == best_c


def test_tuning_failure_degrades_to_the_model_spec_params(cancer, tmp_path):
    X, y = cancer
    # l1_ratio must lie in [0, 1]: scikit-learn refuses these at fit time, so every trial fails.
    results = run_ml_workflow(
        FEATURES, {"estimator": "logistic_regression", "params": {"C": 0.5}},
        X=X, y=y, validation_strategy="none",
        tuning_spec={"search_space": {"l1_ratio": {"dist": "choice", "options": [2.0, 3.0]}},
                     "max_evals": 3, "backend": "local"},
        output_dir=tmp_path)
    assert [w["step"] for w in results["warnings"]] == ["tuning"]
    assert results["tuning_summary"]["status"] == "degraded"
    assert results["pipeline"].named_steps["model"].C == 0.5
    assert results["pipeline"].named_steps["model"].l1_ratio in (None, 0.0)
    assert "[tuning]" in get_workflow_summary(results)


def test_labels_are_paired_by_position_and_mismatched_indexes_are_refused(cancer, tmp_path):
    X, y = cancer
    as_list = run_ml_workflow(FEATURES, LOGREG, X=X, y=list(y), validation_strategy="none",
                              output_dir=tmp_path)
    assert list(as_list["pipeline"].classes_) == ["benign", "malignant"]
    with pytest.raises(DataError, match="y's index differs from X's"):
        run_ml_workflow(FEATURES, LOGREG, X=X, y=y.reset_index(drop=True).set_axis(
            y.index + 1000), validation_strategy="none")
    with pytest.raises(SpecError, match="expected one label per row"):
        run_ml_workflow(FEATURES, LOGREG, X=X, y=pd.DataFrame({"a": y, "b": y}))
    with pytest.raises(SpecError, match="y was given without X"):
        run_ml_workflow(FEATURES, LOGREG, y=y)


def test_a_hold_out_too_small_for_every_class_is_explained(cancer):
    X, y = cancer
    with pytest.raises(DataError, match=r"needs a row of each class on both sides"):
        run_ml_workflow(FEATURES, LOGREG, X=X.head(12), y=y.head(12).where(
            [True] * 6 + [False] * 6, "benign"), validation_strategy="train_test",
            validation_params={"test_size": 0.05})


def test_tuning_metric_scores_the_spec_positive_class(cancer, tmp_path):
    X, y = cancer
    results = run_ml_workflow(
        FEATURES, {**LOGREG, "pos_label": "malignant"}, X=X, y=y, validation_strategy="none",
        tuning_spec={"search_space": {"C": {"dist": "loguniform", "low": 0.01, "high": 10}},
                     "metric": "f1", "max_evals": 3, "backend": "local", "cv_folds": 3},
        output_dir=tmp_path)
    assert results["warnings"] == []
    assert results["tuning_summary"]["trials_ok"] == 3
    assert results["tuning_summary"]["metric"] == "f1"


def test_categories_survive_an_int_column_turning_float():
    from orchestrator.steps.transformers import CategoryToString

    fitted = CategoryToString().fit(pd.DataFrame({"c": [1, 2, 3]}))
    out = fitted.transform(pd.DataFrame({"c": [1.0, None, 3.0]}))
    assert out[0, 0] == "1" and out[2, 0] == "3" and pd.isna(out[1, 0])


def test_metric_scorer_computes_only_its_metric_and_agrees_with_the_workflow_scorer(
        monkeypatch):
    """The tuning scorer gives the validation scorer's value without computing the others."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from orchestrator.steps.metrics import MetricScorer, WorkflowScorer

    X, y = make_classification(n_samples=200, random_state=0)
    model = LogisticRegression().fit(X, y)
    calls = []

    class Counting(LogisticRegression):
        def predict_proba(self, X):
            calls.append("predict_proba")
            return super().predict_proba(X)

        def predict(self, X):
            calls.append("predict")
            return super().predict(X)

    counting = Counting().fit(X, y)
    everything = WorkflowScorer("binary", "roc_auc", pos_label=0)(model, X, y)
    for metric in ("roc_auc", "f1", "neg_log_loss", "accuracy", "recall"):
        calls.clear()
        assert MetricScorer("binary", metric, pos_label=0)(counting, X, y) == pytest.approx(
            everything[metric])
        assert calls == ["predict_proba"]  # one prediction pass, nothing else
    # Another metric's computation is never run for f1 (it would raise here).
    import sklearn.metrics

    def refuse(*args, **kwargs):
        raise AssertionError("log_loss computed for an f1 scorer")

    monkeypatch.setattr(sklearn.metrics, "log_loss", refuse)
    assert MetricScorer("binary", "f1", pos_label=0)(model, X, y) == pytest.approx(
        everything["f1"])
    monkeypatch.undo()
    # A metric outside the standard set is scored by scikit-learn itself.
    assert MetricScorer("binary", "jaccard", pos_label=1)(model, X, y) == pytest.approx(
        WorkflowScorer("binary", "jaccard", pos_label=1)(model, X, y)["jaccard"])


def test_results_are_typed_and_keep_the_dict_view(cancer, tmp_path):
    """WorkflowResult, TuningSummary and CalibrationSummary: attributes, and the README's keys."""
    from collections.abc import Mapping

    from orchestrator.results import CalibrationSummary, TuningSummary, WorkflowResult

    X, y = cancer
    results = run_ml_workflow(FEATURES, LOGREG, X=X, y=y, validation_params={"cv_folds": 3},
                              output_dir=tmp_path,
                              tuning_spec={"search_space": {"C": {"dist": "loguniform",
                                                                  "low": 0.01, "high": 10}},
                                           "max_evals": 2, "backend": "local"},
                              calibration_spec={"method": "sigmoid", "cv": 3})
    assert isinstance(results, WorkflowResult) and isinstance(results, Mapping)
    assert results.cv_score == results["cv_score"] and results.pipeline is results["pipeline"]
    assert isinstance(results.tuning_summary, TuningSummary)
    assert results.tuning_summary.best_params == results["tuning_summary"]["best_params"]
    assert len(results.tuning_summary.trials) == 2
    assert isinstance(results.calibration_summary, CalibrationSummary)
    assert results.calibration_summary.method == "sigmoid"
    assert results.calibration_summary["calibrated"] is results.calibration_summary.calibrated
    with pytest.raises(KeyError):
        results["no_such_field"]
