"""Imbalanced classes, decision thresholds, XGBoost/LightGBM end to end, explanations.

Every test runs on data with a known answer: a 5% minority class, a score whose
cost-optimal threshold is known in closed form, a label that depends on one
column among pure noise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import get_workflow_summary, run_ml_workflow
from orchestrator.errors import DataError, SpecError

NUMERIC = [{"columns": ["signal", "noise_a", "noise_b"], "type": "numeric"},
           {"name": "plan", "type": "categorical"}]
LOGISTIC = {"estimator": "logistic_regression", "params": {"max_iter": 500}}


def _imbalanced(n: int = 2000, seed: int = 0, minority: float = 0.05):
    """A 5% minority class that depends on ``signal`` only; the other columns are noise."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"signal": rng.normal(size=n), "noise_a": rng.normal(size=n),
                      "noise_b": rng.normal(size=n), "plan": rng.choice(["a", "b", "c"], n)})
    score = 2.0 * X["signal"] + rng.normal(size=n)
    y = pd.Series((score > np.quantile(score, 1 - minority)).astype(int), name="churned")
    return X, y


# ---- specs


@pytest.mark.parametrize("model, extra, message", [
    ({"estimator": "xgboost", "class_weight": "balanced"}, {},
     "XGBClassifier has no class_weight parameter.*scale_pos_weight"),
    ({"estimator": "gaussian_nb", "class_weight": "balanced"}, {},
     "GaussianNB has no class_weight parameter"),
    ({"estimator": "logistic_regression", "class_weight": "heavy"}, {},
     "expected 'balanced' or a mapping"),
    ({"estimator": "ridge", "class_weight": "balanced"}, {}, "classification only"),
    ({"estimator": "ridge"}, {"threshold_spec": {"objective": "f1"}},
     "binary classifiers only"),
    (LOGISTIC, {"threshold_spec": {"objective": "roc_auc"}}, "threshold-dependent metric"),
    (LOGISTIC, {"threshold_spec": {"objective": "f1", "cost": {"false_positive": 1}}},
     "exactly one of objective"),
    (LOGISTIC, {"threshold_spec": {"cost": {"false_positive": 1, "false_negative": -2}}},
     "threshold.cost.false_negative: expected a cost >= 0"),
    (LOGISTIC, {"explain_spec": {"shapp": True}}, "unknown key 'shapp'.*did you mean 'shap'"),
])
def test_bad_specs_are_refused_before_any_data_is_read(model, extra, message):
    X, y = _imbalanced(50)
    with pytest.raises(SpecError, match=message):
        run_ml_workflow(NUMERIC, model, X=X, y=y, **extra)


def test_the_config_file_accepts_threshold_and_explain_sections(tmp_path):
    from orchestrator.config import load_config

    path = tmp_path / "job.yml"
    path.write_text("features: [{name: signal, type: numeric}]\n"
                    "model: {estimator: lightgbm, class_weight: balanced}\n"
                    "data: {path: /tmp/x, label: y}\n"
                    "threshold: {cost: {false_positive: 1, false_negative: 5}}\n"
                    "explain: {shap: true}\n")
    config = load_config(path)
    assert config.workflow_kwargs["threshold_spec"] == {
        "cost": {"false_positive": 1, "false_negative": 5}}
    assert config.workflow_kwargs["explain_spec"] == {"shap": True}


# ---- imbalanced classes


def test_balanced_class_weights_raise_the_recall_of_a_5_percent_minority(tmp_path):
    X, y = _imbalanced()
    assert y.mean() == pytest.approx(0.05, abs=0.002)
    runs = {weights: run_ml_workflow(
        NUMERIC, {**LOGISTIC, "class_weight": weights} if weights else LOGISTIC, X=X, y=y,
        validation_strategy="train_test", validation_params={"test_size": 0.3, "random_state": 1},
        output_dir=tmp_path / str(weights)) for weights in (None, "balanced")}
    plain, balanced = runs[None], runs["balanced"]
    assert balanced.pipeline.named_steps["model"].class_weight == "balanced"
    # The threshold stays 0.5, so up-weighting the rare class moves its recall a lot.
    assert balanced.metrics["recall"]["value"] > plain.metrics["recall"]["value"] + 0.15
    # The summary reports the class balance of the rows read.
    assert plain.class_balance["counts"] == {0: 1900, 1: 100}
    assert "1: 100 (5.0%)" in get_workflow_summary(plain)


def test_accuracy_on_a_rare_class_warns_and_names_better_metrics(tmp_path):
    X, y = _imbalanced(400)
    results = run_ml_workflow(NUMERIC, {**LOGISTIC, "metric": "accuracy"}, X=X, y=y,
                              validation_params={"cv_folds": 3}, output_dir=tmp_path)
    reasons = [w.reason for w in results.warnings if w.step == "data_loading"]
    assert any("accuracy" in r and "average_precision" in r and "balanced_accuracy" in r
               for r in reasons), reasons
    quiet = run_ml_workflow(NUMERIC, LOGISTIC, X=X, y=y, validation_params={"cv_folds": 3},
                            output_dir=tmp_path / "auc")
    assert not [w for w in quiet.warnings if "accuracy" in w.reason]


# ---- decision threshold


def _calibrated_score(n: int, seed: int):
    """y ~ Bernoulli(p) with p uniform, and the logit of p as the only feature.

    A logistic regression on logit(p) recovers p itself, so the expected cost
    c_fp * (1 - p) [predict positive] vs c_fn * p [predict negative] is minimised
    by the Bayes threshold c_fp / (c_fp + c_fn).
    """
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.001, 0.999, n)
    X = pd.DataFrame({"logit": np.log(p / (1 - p))})
    y = pd.Series(np.where(rng.uniform(size=n) < p, "yes", "no"))
    return X, y


@pytest.mark.parametrize("false_positive, false_negative", [(1, 4), (3, 1)])
def test_the_cost_threshold_is_the_bayes_optimal_one(false_positive, false_negative, tmp_path):
    X, y = _calibrated_score(6000, seed=3)
    results = run_ml_workflow(
        [{"name": "logit", "type": "numeric"}], {**LOGISTIC, "pos_label": "yes"}, X=X, y=y,
        validation_strategy="none",
        threshold_spec={"cost": {"false_positive": false_positive,
                                 "false_negative": false_negative}, "cv_folds": 3},
        output_dir=tmp_path)
    optimum = false_positive / (false_positive + false_negative)
    chosen = results.threshold_summary["threshold"]
    assert chosen == pytest.approx(optimum, abs=0.05)
    # The returned model applies it: predict is "yes" exactly when P(yes) >= threshold.
    model = results.pipeline
    proba = model.predict_proba(X)[:, list(model.classes_).index("yes")]
    np.testing.assert_array_equal(model.predict(X), np.where(proba >= chosen, "yes", "no"))
    assert (tmp_path / "threshold_curve.png").is_file()
    summary = get_workflow_summary(results)
    assert "Decision threshold" in summary and f"{chosen:.4f}" in summary


def test_validation_scores_the_thresholded_procedure_inside_the_folds(tmp_path):
    X, y = _imbalanced(800)
    plain = run_ml_workflow(NUMERIC, {**LOGISTIC, "metric": "f1"}, X=X, y=y,
                            validation_params={"cv_folds": 3}, output_dir=tmp_path / "plain")
    tuned = run_ml_workflow(NUMERIC, {**LOGISTIC, "metric": "f1"}, X=X, y=y,
                            validation_params={"cv_folds": 3},
                            threshold_spec={"objective": "f1", "cv_folds": 3},
                            output_dir=tmp_path / "tuned")
    assert type(tuned.pipeline).__name__ == "TunedThresholdClassifierCV"
    assert tuned.threshold_summary["threshold"] < 0.5  # a rare class: f1 wants a lower cut
    # Out-of-fold f1 of the thresholded procedure beats the 0.5 cut, fold by fold on average.
    assert tuned.metrics["f1"]["mean"] > plain.metrics["f1"]["mean"]
    # Threshold-free metrics are the same model's ranking: nearly unchanged.
    assert tuned.metrics["roc_auc"]["mean"] == pytest.approx(plain.metrics["roc_auc"]["mean"],
                                                             abs=0.01)


def test_a_threshold_on_multiclass_labels_is_a_data_error(tmp_path):
    X, _ = _imbalanced(120)
    y = pd.Series(np.arange(120) % 3)
    with pytest.raises(DataError, match="binary classifiers only"):
        run_ml_workflow(NUMERIC, LOGISTIC, X=X, y=y, threshold_spec={"objective": "f1"},
                        output_dir=tmp_path)


# ---- explanations


@pytest.mark.parametrize("strategy", ["cross_validation", "train_test"])
def test_permutation_importance_ranks_the_informative_column_above_noise(strategy, tmp_path):
    X, y = _imbalanced(1500, minority=0.3)
    results = run_ml_workflow(NUMERIC, LOGISTIC, X=X, y=y, validation_strategy=strategy,
                              validation_params={"cv_folds": 3} if strategy != "train_test"
                              else {"test_size": 0.25},
                              explain_spec={"n_repeats": 3}, output_dir=tmp_path)
    table = pd.DataFrame(results.explanations["permutation_importance"])
    # One row per raw input column: "plan" is permuted as a whole, not per one-hot column.
    assert sorted(table["feature"]) == ["noise_a", "noise_b", "plan", "signal"]
    assert table.iloc[0]["feature"] == "signal"
    signal = table.set_index("feature")["importance_mean"]
    assert signal["signal"] > 0.1 and all(abs(signal[c]) < 0.02 for c in
                                          ("noise_a", "noise_b", "plan"))
    rows = results.explanations["rows"]
    if strategy == "train_test":
        assert rows.startswith("the train_test hold-out (375 rows)")
    else:
        assert rows.startswith("an extra 20% split") and "300 rows" in rows
    assert (tmp_path / "permutation_importance.png").is_file()
    assert "signal" in get_workflow_summary(results).split("Explanations")[1]


FOREST = {"estimator": "random_forest", "params": {"n_estimators": 20, "random_state": 0}}


def test_shap_summary_plot_for_a_tree_model(tmp_path):
    pytest.importorskip("shap")  # an optional dependency (requirements-dev.txt)
    X, y = _imbalanced(400, minority=0.3)
    results = run_ml_workflow(NUMERIC, FOREST, X=X, y=y, validation_strategy="none",
                              explain_spec={"shap": True, "n_repeats": 2},
                              output_dir=tmp_path / "with")
    assert results.warnings == []
    assert (tmp_path / "with" / "shap_summary.png").is_file()
    assert results.explanations["shap"] == "shap_summary.png"


def test_without_shap_the_run_goes_on_with_a_clear_message(tmp_path, monkeypatch):
    X, y = _imbalanced(400, minority=0.3)
    forest = FOREST
    monkeypatch.setitem(sys.modules, "shap", None)  # what an environment without shap does
    results = run_ml_workflow(NUMERIC, forest, X=X, y=y, validation_strategy="none",
                              explain_spec={"shap": True, "n_repeats": 2},
                              output_dir=tmp_path / "without")
    [warning] = results.warnings
    assert warning.step == "explanations"
    assert "shap package is not installed" in warning.reason and "pip install shap" in \
        warning.reason
    # Permutation importance is still there; the run went on.
    assert results.explanations["top_features"][0][0] == "signal"


# ---- XGBoost and LightGBM through the whole workflow


@pytest.mark.spark
@pytest.mark.parametrize("estimator, params, space", [
    ("xgboost", {"n_estimators": 20, "n_jobs": 1, "max_depth": 3},
     {"learning_rate": {"dist": "loguniform", "low": 0.05, "high": 0.5}}),
    ("lightgbm", {"n_estimators": 20, "n_jobs": 1, "verbose": -1, "min_child_samples": 5},
     {"num_leaves": {"dist": "choice", "options": [4, 8]}}),
])
def test_gradient_boosting_libraries_from_delta_to_mlflow_to_batch_scoring(
        spark, tmp_path, estimator, params, space):
    import mlflow
    from deltalake import DeltaTable
    from mlflow.tracking import MlflowClient

    from orchestrator.scoring import score_table

    X, y = _imbalanced(600, seed=5, minority=0.3)
    frame = X.assign(customer_id=np.arange(len(X), dtype="int64"), churned=y)
    spark.createDataFrame(frame).write.format("delta").save(str(tmp_path / "train"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = run_ml_workflow(
        NUMERIC, {"estimator": estimator, "params": params},
        data_spec={"path": str(tmp_path / "train"), "label": "churned"}, spark=spark,
        validation_params={"cv_folds": 3},
        tuning_spec={"search_space": space, "max_evals": 2, "backend": "local", "cv_folds": 2,
                     "seed": 0},
        calibration_spec={"method": "sigmoid", "cv": 2},
        mlflow_spec={"tracking_uri": store, "experiment_name": "breadth",
                     "registered_model_name": f"{estimator}_churn"},
        output_dir=tmp_path / "out")
    assert [w for w in results.warnings] == []
    assert results.tuning_summary["trials_ok"] == 2
    assert results.calibration_summary["status"] == "ok"
    assert results.cv_score > 0.8
    model_uri = results.mlflow_model["model_uri"]

    mlflow.set_tracking_uri(store)
    try:
        loaded = mlflow.sklearn.load_model(model_uri)
        np.testing.assert_allclose(loaded.predict_proba(X), results.pipeline.predict_proba(X))
        requirements = mlflow.pyfunc.get_model_dependencies(model_uri)
        scoring = frame.drop(columns="churned").head(200)
        spark.createDataFrame(scoring).write.format("delta").save(str(tmp_path / "to_score"))
        scored = score_table(spark, model_uri, str(tmp_path / "to_score"),
                             str(tmp_path / "scores"))
    finally:
        mlflow.set_tracking_uri(None)
    library = "xgboost" if estimator == "xgboost" else "lightgbm"
    assert library in Path(requirements).read_text()
    assert scored.rows_written == 200
    predictions = DeltaTable(str(tmp_path / "scores")).to_pandas().sort_values("customer_id")
    expected = results.pipeline.predict(scoring.drop(columns="customer_id"))
    np.testing.assert_array_equal(predictions["prediction"].to_numpy().astype(int), expected)
    run = MlflowClient(tracking_uri=store).get_run(results.mlflow_run_id)
    assert run.data.params["final_model.class"].startswith(library)
