"""The promotion gate: the pure decision, the spec, and real registries (sqlite store and an
``mlflow server``) with evaluation rows from the hold-out and from a versioned Delta table."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from orchestrator import run_ml_workflow
from orchestrator.errors import SpecError
from orchestrator.specs import parse_specs
from orchestrator.tracking.promotion import decide_promotion

# ----------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("candidate, champion, improvement, expected, rule", [
    ({"roc_auc": 0.90}, {"roc_auc": 0.80}, 0.01, "promoted", "roc_auc >= champion + 0.01"),
    ({"roc_auc": 0.79}, {"roc_auc": 0.80}, 0.0, "rejected", "roc_auc >= champion + 0"),
    ({"roc_auc": 0.80}, {"roc_auc": 0.80}, 0.005, "rejected", "roc_auc >= champion + 0.005"),
    ({"roc_auc": 0.80}, {"roc_auc": 0.80}, 0.0, "promoted", "roc_auc >= champion + 0"),
    ({"roc_auc": 0.70}, None, 0.5, "promoted", "roc_auc: no current holder"),
    ({}, {"roc_auc": 0.80}, 0.0, "rejected", "roc_auc >= champion + 0"),
])
def test_the_primary_metric_must_beat_the_holder(candidate, champion, improvement, expected,
                                                 rule):
    decision = decide_promotion(candidate, champion, metric="roc_auc",
                                min_improvement=improvement)
    assert (decision.decision, decision.rule) == (expected, rule)


def test_a_bound_decides_before_the_comparison_and_names_itself():
    decision = decide_promotion({"roc_auc": 0.99, "ece": 0.08, "recall": 0.7},
                                {"roc_auc": 0.5, "ece": 0.01, "recall": 0.9}, metric="roc_auc",
                                max_bounds={"ece": 0.05}, min_bounds={"recall": 0.6})
    assert decision.decision == "rejected" and decision.rule == "ece <= 0.05"
    assert "0.0800" in decision.reason
    rows = {row["metric"]: row for row in decision.comparison}
    assert rows["ece"]["outcome"] == "fail" and rows["recall"]["outcome"] == "pass"
    assert rows["roc_auc"] == {"metric": "roc_auc", "candidate": 0.99, "champion": 0.5,
                               "rule": "roc_auc >= champion + 0", "outcome": "pass"}
    first = decide_promotion({"roc_auc": 0.9, "recall": 0.5}, None, metric="roc_auc",
                             min_bounds={"recall": 0.6})
    assert (first.decision, first.rule) == ("rejected", "recall >= 0.6")


# ----------------------------------------------------------------------------- the spec

FEATURES = [{"columns": ["f0"], "type": "numeric"}]
MODEL = {"estimator": "logistic_regression"}


def _parse(promotion, *, strategy="train_test", mlflow=None):
    return parse_specs(feature_specs=FEATURES, model_spec=MODEL, validation_strategy=strategy,
                       mlflow_spec=mlflow if mlflow is not None else {
                           "registered_model_name": "m"},
                       promotion_spec=promotion, data_given=True)


def test_the_spec_is_checked_with_the_other_sections():
    spec = _parse({"alias": "champion", "min_improvement": 0.01, "max": {"ece": 0.05},
                   "rows": {"path": "/data/eval", "version": 3}}).promotion
    assert spec.rows.path == "/data/eval" and spec.rows.version == 3 and spec.max == {"ece": 0.05}
    with pytest.raises(SpecError) as error:
        _parse({"alias": "v1", "metric": "roc_auk", "min_improvement": -1,
                "min": {"recal": 0.5}, "rows": "holdout", "extra": 1},
               strategy="cross_validation", mlflow={"model_alias": "x"})
    text = str(error.value)
    for expected in ("promotion.alias", "roc_auc", "promotion.min_improvement", "recall",
                     "promotion.rows", "train_test", "registered_model_name", "extra"):
        assert expected in text, expected
    with pytest.raises(SpecError, match="also mlflow.model_alias"):
        _parse({"alias": "champion"}, mlflow={"registered_model_name": "m",
                                              "model_alias": "champion"})


# ----------------------------------------------------------------------------- real registries


@pytest.fixture(scope="module")
def cancer():
    raw = load_breast_cancer(as_frame=True)
    X = raw.data.iloc[:, :6].copy()
    X.columns = [f"f{i}" for i in range(6)]
    X["noise"] = np.random.default_rng(0).normal(size=len(X))
    return X, pd.Series(raw.target.to_numpy(), name="label")


def _train(X, y, store, columns, promotion, tmp_path, *, estimator="logistic_regression",
           name="gate_model", **more):
    params = {"max_iter": 1000} if estimator == "logistic_regression" else {}
    return run_ml_workflow(
        [{"columns": columns, "type": "numeric"}],
        {"estimator": estimator, "params": params}, X=X, y=y,
        validation_strategy="train_test", validation_params={"test_size": 0.3,
                                                             "random_state": 7},
        mlflow_spec={"tracking_uri": store, "experiment_name": "gate",
                     "registered_model_name": name, "log_plots": False},
        promotion_spec=promotion, output_dir=tmp_path / "out", **more)


def test_the_alias_moves_only_for_a_better_model_within_bounds(cancer, tmp_path):
    from mlflow import MlflowClient

    X, y = cancer
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)

    def holder():
        return str(client.get_model_version_by_alias("gate_model", "champion").version)

    gate = {"alias": "champion", "min_improvement": 0.001}
    first = _train(X, y, store, ["f0"], gate, tmp_path)  # nobody holds it: its bounds decide
    assert first.promotion["decision"] == "promoted" and holder() == "1"
    assert first.promotion["rule"] == "roc_auc: no current holder"

    worse = _train(X, y, store, ["f0"], gate, tmp_path,
                   estimator="sklearn.dummy.DummyClassifier")
    assert worse.promotion["decision"] == "rejected" and holder() == "1"
    rows = {r["metric"]: r for r in worse.promotion["comparison"]}
    assert rows["roc_auc"]["candidate"] < rows["roc_auc"]["champion"]
    assert worse.promotion["champion_version"] == "1"

    equal = _train(X, y, store, ["f0"], gate, tmp_path)  # the same model, scored the same
    rows = {r["metric"]: r for r in equal.promotion["comparison"]}
    assert rows["roc_auc"]["candidate"] == rows["roc_auc"]["champion"]
    assert equal.promotion["decision"] == "rejected" and holder() == "1"

    bounded = _train(X, y, store, [f"f{i}" for i in range(6)],
                     {**gate, "max": {"ece": 0.0001}}, tmp_path)
    assert bounded.promotion["decision"] == "rejected" and holder() == "1"
    assert bounded.promotion["rule"] == "ece <= 0.0001"

    better = _train(X, y, store, [f"f{i}" for i in range(6)], gate, tmp_path)
    assert better.promotion["decision"] == "promoted" and holder() == "5"
    assert better.promotion["alias_moved"] is True

    # Logged to the candidate's run either way: tags, metrics, the comparison table, summary.
    run = client.get_run(worse.mlflow_run_id)
    assert run.data.tags["orchestrator.promotion.decision"] == "rejected"
    assert run.data.tags["orchestrator.promotion.rule"] == "roc_auc >= champion + 0.001"
    assert run.data.metrics["promotion/champion/roc_auc"] == rows["roc_auc"]["champion"] \
        or run.data.metrics["promotion/champion/roc_auc"] > 0.8
    table = json.loads(open(client.download_artifacts(
        worse.mlflow_run_id, "promotion/comparison.json", str(tmp_path))).read())
    assert table["decision"] == "rejected" and table["alias_moved"] is False
    assert "Promotion" in worse.summary_text and "rejected" in worse.summary_text
    report = open(client.download_artifacts(worse.mlflow_run_id, "report.html",
                                            str(tmp_path / "r"))).read()
    assert "badge reject" in report


def test_an_unreachable_registry_fails_closed(monkeypatch, cancer):
    from sklearn.linear_model import LogisticRegression

    from orchestrator.specs.mlflow import MLflowSpec
    from orchestrator.specs.promotion import PromotionSpec
    from orchestrator.tracking.promotion import run_promotion_gate
    from orchestrator.tracking.run import Tracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    X, y = cancer
    model = LogisticRegression(max_iter=1000).fit(X[["f0"]], y)
    tracker = Tracker(MLflowSpec(tracking_uri=dead, registered_model_name="m"),
                      tracking_uri=dead, run_id="0" * 32, experiment_id="0")
    outcome = run_promotion_gate(
        tracker, PromotionSpec(alias="champion"), candidate_model=model, candidate_version="2",
        X=X[["f0"]], y=y, score=lambda m, X_, y_: {"roc_auc": 0.9}, metric="roc_auc",
        rows_description="test rows")
    assert outcome["decision"] == "rejected" and outcome["alias_moved"] is False
    assert outcome["reason"].startswith("fail closed: the registry could not be used")
    assert outcome["rule"] == "registry reachable"


@pytest.mark.spark
@pytest.mark.mlflow_server
def test_a_server_registry_with_delta_evaluation_rows_and_fail_on_reject(spark, cancer,
                                                                         tmp_path, capsys):
    import yaml
    from mlflow import MlflowClient

    from orchestrator.entrypoints.cli import main
    from tests._mlflow_server import running_mlflow_server

    X, y = cancer
    frame = X.assign(label=y)
    train, evaluation = tmp_path / "train", tmp_path / "eval"
    spark.createDataFrame(frame).write.format("delta").save(str(train))
    spark.createDataFrame(frame.iloc[:300]).write.format("delta").save(str(evaluation))
    # Version 1 of the evaluation table flips every label: a gate reading it would be misled.
    spark.createDataFrame(frame.iloc[:300].assign(label=1 - frame.label.iloc[:300])) \
        .write.format("delta").mode("overwrite").save(str(evaluation))
    with running_mlflow_server(tmp_path / "server") as url:
        def config(columns, path):
            path.write_text(yaml.safe_dump({
                "data": {"path": str(train), "label": "label"},
                "features": [{"columns": columns, "type": "numeric"}],
                "model": {"estimator": "logistic_regression", "params": {"max_iter": 1000}},
                "validation": {"strategy": "none"},
                "mlflow": {"tracking_uri": url, "experiment_name": "gate-server",
                           "registered_model_name": "served", "log_plots": False},
                "promotion": {"alias": "champion",
                              "rows": {"path": str(evaluation), "version": 0}},
                "output_dir": str(tmp_path / "out")}))
            return str(path)

        assert main(["run", config([f"f{i}" for i in range(6)], tmp_path / "a.yml"),
                     "--fail-on-reject"]) == 0
        client = MlflowClient(tracking_uri=url)
        assert str(client.get_model_version_by_alias("served", "champion").version) == "1"
        capsys.readouterr()
        assert main(["run", config(["noise"], tmp_path / "b.yml"), "--fail-on-reject"]) == 1
        captured = capsys.readouterr()
        assert "promotion gate rejected" in captured.err
        assert str(client.get_model_version_by_alias("served", "champion").version) == "1"
        latest = client.search_model_versions("name='served'")
        rejected_run = next(v.run_id for v in latest if str(v.version) == "2")
        tags = client.get_run(rejected_run).data.tags
        assert tags["orchestrator.promotion.decision"] == "rejected"
        assert "@ version 0, 300 rows" in tags["orchestrator.promotion.rows"]
