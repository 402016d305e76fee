"""orchestrator reproduce and compare: a real sqlite MLflow store, real Delta tables with
several versions on the shared Spark session, logistic regression on a few hundred rows."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from orchestrator.entrypoints.cli import main
from orchestrator.entrypoints.training import run_config
from orchestrator.errors import ReproductionError
from orchestrator.tracking.reproduce import (
    REPRODUCTION_TAG,
    compare_metrics,
    data_pins,
    default_tolerance,
    diff_runs,
    format_comparison,
    pinned_config,
    redacted_keys,
)

FEATURES = [{"columns": ["x0", "x1", "x2"], "type": "numeric"}]


def _rows(seed: int, n: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.8, size=n) > 0).astype("int64")
    return pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "y": y})


def _write(spark, path, frame: pd.DataFrame, mode: str) -> None:
    spark.createDataFrame(frame).write.format("delta").mode(mode).save(str(path))


def _config(tmp, table, store: str, *, name: str, **data) -> str:
    config = {
        "data": {"path": str(table), "label": "y", **data},
        "features": FEATURES,
        "model": {"estimator": "logistic_regression", "params": {"C": 0.5, "random_state": 0}},
        "validation": {"strategy": "train_test", "params": {"test_size": 0.3, "random_state": 1}},
        "mlflow": {"tracking_uri": store, "experiment_name": "reproduce-test",
                   "log_model": False, "log_plots": False},
        "output_dir": str(tmp / "out"),
    }
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def tracked(spark, tmp_path_factory):
    """A run that read version 1 of a table that has since moved on to version 2."""
    tmp = tmp_path_factory.mktemp("reproduce")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    table = tmp / "churn"
    _write(spark, table, _rows(0), "overwrite")        # version 0
    _write(spark, table, _rows(1), "append")           # version 1: what the run reads
    first = run_config(_config(tmp, table, store, name="job"), spark=spark)
    _write(spark, table, _rows(2, n=90), "append")     # version 2: after the run
    return {"tmp": tmp, "store": store, "table": table, "run_id": first.mlflow_run_id,
            "results": first}


@pytest.mark.spark
def test_reproduction_reads_the_pinned_version_and_agrees_exactly(tracked, capsys):
    from mlflow import MlflowClient

    assert tracked["results"].data["delta_version"] == 1
    code = main(["reproduce", tracked["run_id"], "--tracking-uri", tracked["store"],
                 "--output-dir", str(tracked["tmp"] / "repro")])
    out = capsys.readouterr().out
    assert code == 0, out
    # Behind the CLI's quiet console, as run is: the log file is under --output-dir/logs.
    log = Path(out.rstrip().splitlines()[-1].split()[1])
    assert log.parent == tracked["tmp"] / "repro" / "logs", out
    assert f"reproducing run {tracked['run_id']} pinned to" in log.read_text()
    assert "tolerance: 0 (deterministic: random_state is set)" in out
    assert f"data {tracked['table']} @ version 1" in out
    assert "roc_auc " in out and "disagree" not in out
    client = MlflowClient(tracking_uri=tracked["store"])
    reproductions = client.search_runs(
        [client.get_run(tracked["run_id"]).info.experiment_id],
        f"tags.`{REPRODUCTION_TAG}` = '{tracked['run_id']}'")
    assert len(reproductions) == 1
    new = reproductions[0]
    assert new.data.params["data.delta_version"] == "1"
    assert new.data.params["data.row_count"] == "300"  # versions 0 and 1, not the 90 of 2
    original = client.get_run(tracked["run_id"]).data.metrics
    assert new.data.metrics["roc_auc"] == original["roc_auc"]
    assert not client.search_registered_models()


@pytest.mark.parametrize("verbose", [False, True])
def test_reproduce_goes_through_the_quiet_console_and_its_log_file_like_run(
        verbose, tmp_path, monkeypatch, capsys):
    import orchestrator.entrypoints.reproduction as reproduction
    from orchestrator.entrypoints.console import jars_cache_dir

    seen = {}

    def reproduce_run(run_id, **kwargs):
        seen.update(kwargs, progress_bars=os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"))
        logging.getLogger("orchestrator.entrypoints.reproduction").info("reproducing run %s",
                                                                        run_id)
        return {"text": "every metric agrees", "agree": True}

    monkeypatch.setattr(reproduction, "reproduce_run", reproduce_run)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    code = main(["reproduce", "3f2a", "--remote", "sc://cluster:15002",
                 "--log-dir", str(tmp_path / "logs"), *(["--verbose"] if verbose else [])])
    captured = capsys.readouterr()
    assert code == 0, captured
    assert seen["remote"] == "sc://cluster:15002"
    # The Delta jars Ivy resolved once are reused either way, so no resolution on the console.
    assert seen["session_options"]["jars_cache_dir"] == jars_cache_dir()
    last = captured.out.rstrip().splitlines()[-1]
    if verbose:
        assert "jvm_log_path" not in seen["session_options"] and last == "every metric agrees"
        assert seen["progress_bars"] is None
        assert not (tmp_path / "logs").exists()
        return
    log = Path(seen["session_options"]["jvm_log_path"])
    assert log.parent == tmp_path / "logs" and log.name.startswith("reproduce-")
    assert last == f"log: {log} (every log line and Spark's output)"
    assert "reproducing run 3f2a" in log.read_text()
    assert seen["progress_bars"] == "false"  # MLflow's download bars stay off the console


@pytest.mark.spark
def test_compare_shows_the_changed_data_version_and_metrics(tracked, spark, capsys):
    latest = run_config(_config(tracked["tmp"], tracked["table"], tracked["store"],
                                name="latest"), spark=spark)
    assert latest.data["delta_version"] == 2
    code = main(["compare", tracked["run_id"], latest.mlflow_run_id,
                 "--tracking-uri", tracked["store"]])
    text = capsys.readouterr().out
    assert code == 0
    assert f"data {tracked['table']} delta_version: 1 -> 2" in text
    assert "Metrics:" in text and "roc_auc:" in text
    assert "Library versions: no difference(s)" in text

    code = main(["compare", tracked["run_id"], latest.mlflow_run_id, "--json",
                 "--tracking-uri", tracked["store"]])
    diff = json.loads(capsys.readouterr().out)
    assert code == 0
    assert diff["runs"] == [tracked["run_id"], latest.mlflow_run_id]
    versions = {row["key"]: (row["a"], row["b"]) for row in diff["data"]}
    assert versions[f"data {tracked['table']} delta_version"] == (1, 2)
    metrics = {row["key"]: row for row in diff["metrics"]}
    assert metrics["roc_auc"]["a"] != metrics["roc_auc"]["b"]
    assert metrics["roc_auc"]["difference"] == pytest.approx(
        metrics["roc_auc"]["b"] - metrics["roc_auc"]["a"])
    assert diff["specs"] == []  # the same config file content but its name
    assert diff["libraries"] == []


@pytest.mark.spark
def test_a_vacuumed_version_is_a_clear_error_naming_the_table_and_version(spark, tmp_path,
                                                                          capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    table = tmp_path / "vacuumed"
    _write(spark, table, _rows(3), "overwrite")     # version 0: the run reads it
    _write(spark, table, _rows(4), "overwrite")     # version 1 replaces every file
    first = run_config(_config(tmp_path, table, store, name="job", version=0), spark=spark)
    # What VACUUM RETAIN 0 HOURS does to this table: delete every data file the latest version
    # no longer references. (Delta's own VACUUM took 70-90 s on this 2-row table here.)
    current = {Path(f).name for f in spark.read.format("delta").load(str(table)).inputFiles()}
    removed = [f for f in table.glob("*.parquet") if f.name not in current]
    assert removed
    for data_file in removed:
        data_file.unlink()
    code = main(["reproduce", first.mlflow_run_id, "--tracking-uri", store])
    err = capsys.readouterr().err
    assert code == 1
    assert f"data ({table}) version 0 can no longer be read" in err
    [message] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "removed by VACUUM" in message and f"{table}" in message


def test_redacted_secrets_are_refused_naming_the_keys(tmp_path, capsys):
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    run = client.create_run(client.create_experiment("redacted"))
    client.log_text(run.info.run_id, yaml.safe_dump({
        "data": {"table": "main.s.t", "label": "y"}, "features": FEATURES,
        "model": {"estimator": "logistic_regression"},
        "mlflow": {"tracking_uri": "***REDACTED***", "tags": {"api_token": "***REDACTED***"}},
    }), "config/resolved_config.yaml")
    code = main(["reproduce", run.info.run_id, "--tracking-uri", store])
    err = capsys.readouterr().err
    assert code == 2
    [message] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "mlflow.tags.api_token: was redacted" in err
    assert "mlflow.tracking_uri" not in err  # replaced by the store the run is read from


def test_the_report_and_reproduction_read_a_run_the_same_way(tmp_path):
    """One reader: per-fold metrics keep their steps (a fold whose value was not finite was
    never logged), the logged lineage is read back, and an unknown run is one clear error."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from orchestrator.errors import TrackingError
    from orchestrator.tracking.report import collect_report
    from orchestrator.tracking.reproduce import read_logged_run

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("reader")).info.run_id
    client.log_batch(run_id, metrics=[Metric("roc_auc", 0.8, 0, 0),
                                      Metric("roc_auc_fold", 0.7, 0, 0),
                                      Metric("roc_auc_fold", 0.9, 0, 2)])
    client.log_dict(run_id, {"location": "/t", "delta_version": 3}, "lineage.json")

    logged = read_logged_run(client, run_id)
    assert logged["lineage"] == {"location": "/t", "delta_version": 3}
    assert logged["config"] is None
    assert logged["metrics"] == {"roc_auc": 0.8, "roc_auc_fold[0]": 0.7, "roc_auc_fold[2]": 0.9}
    report = collect_report(client, run_id)
    assert report["lineage"] == logged["lineage"]
    assert report["metrics"] == [{"name": "roc_auc", "value": 0.8, "std": None,
                                  "folds": [0.7, 0.9]}]
    for read in (read_logged_run, collect_report):
        with pytest.raises(TrackingError, match="run '0{32}' not found or not readable"):
            read(client, "0" * 32)


# ----------------------------------------------------------------------------- plain dicts


def test_pinned_config_pins_every_table_tags_the_run_and_registers_nothing():
    config = {
        "feature_store": {"labels": {"path": "/l", "timestamp": "event_ts"},
                          "lookups": [{"path": "/f1"}, {"table": "c.s.f2", "version": 1}]},
        "mlflow": {"registered_model_name": "c.s.m", "model_alias": "champion",
                   "tags": {"team": "x"}, "tracking_uri": "databricks"},
        "promotion": {"alias": "champion"},
    }
    lineage = {"tables": [{"role": "labels", "location": "/l", "delta_version": 4},
                          {"role": "lookup", "location": "/f1", "delta_version": 7},
                          {"role": "lookup", "location": "c.s.f2", "delta_version": 1}]}
    pins = data_pins(config, lineage)
    pinned = pinned_config(config, pins, run_id="r1", tracking_uri="sqlite:///m.db")
    store = pinned["feature_store"]
    assert store["labels"] == {"path": "/l", "timestamp": "event_ts", "version": 4}
    assert [lookup["version"] for lookup in store["lookups"]] == [7, 1]
    assert pinned["mlflow"] == {"tags": {"team": "x", REPRODUCTION_TAG: "r1"},
                                "tracking_uri": "sqlite:///m.db"}
    assert "promotion" not in pinned
    assert "version" not in config["feature_store"]["labels"]  # the input is not changed


def test_data_pins_need_the_logged_lineage():
    with pytest.raises(ReproductionError, match="no lineage.json"):
        data_pins({"data": {"path": "/t"}}, None)
    with pytest.raises(ReproductionError, match="no Delta version for data"):
        data_pins({"data": {"path": "/t"}}, {"location": "/t"})
    assert data_pins({"features": []}, None) == []


@pytest.mark.parametrize("config, params, expected", [
    ({"model": {"params": {"random_state": 3}}}, ["random_state"], 0.0),
    ({"model": {"params": {}}}, ["alpha"], 0.0),
    ({"model": {"params": {}}}, ["random_state"], 1e-9),
    ({"model": {"params": {"random_state": 3, "n_jobs": -1}}}, ["random_state", "n_jobs"], 1e-9),
    ({"model": {"params": {"random_state": 3}}, "tuning": {"seed": 1, "parallelism": 1}},
     ["random_state"], 0.0),
    ({"model": {"params": {"random_state": 3}}, "tuning": {"seed": 1, "parallelism": 4}},
     ["random_state"], 1e-9),
    ({"model": {"params": {"random_state": 3}}, "tuning": {"parallelism": 1}},
     ["random_state"], 1e-9),
])
def test_default_tolerance_is_exact_only_for_deterministic_runs(config, params, expected):
    tolerance, reason = default_tolerance(config, params)
    assert tolerance == expected
    assert reason.startswith("deterministic" if expected == 0 else "not deterministic")


def test_compare_metrics_holds_values_to_the_relative_tolerance():
    logged = {"roc_auc": 0.8, "neg_log_loss": -250.0, "timing/total_s": 3.0, "gone": 1.0}
    new = {"roc_auc": 0.8 + 1e-12, "neg_log_loss": -250.0 - 1e-7, "timing/total_s": 9.0}
    exact = {r["metric"]: r["agree"] for r in compare_metrics(logged, new, tolerance=0.0)}
    assert exact == {"roc_auc": False, "neg_log_loss": False, "gone": False}
    loose = {r["metric"]: r["agree"] for r in compare_metrics(logged, new, tolerance=1e-9)}
    assert loose == {"roc_auc": True, "neg_log_loss": True, "gone": False}


def test_diff_runs_lists_only_what_differs():
    a = {"run_id": "a", "config": {"model": {"params": {"C": 1.0}}, "features": [
            {"columns": ["x"], "type": "numeric"}]},
         "lineage": {"location": "/t", "delta_version": 1, "row_count": 10},
         "params": {"lib.scikit-learn": "1.9.0", "lib.mlflow": "3.17.0", "model.params.C": "1"},
         "metrics": {"roc_auc": 0.8, "timing/total_s": 1.0}}
    b = {"run_id": "b", "config": {"model": {"params": {"C": 2.0}}, "features": [
            {"columns": ["x"], "type": "numeric"}]},
         "lineage": {"location": "/t", "delta_version": 2, "row_count": 10},
         "params": {"lib.scikit-learn": "1.9.1", "lib.mlflow": "3.17.0"},
         "metrics": {"roc_auc": 0.85, "timing/total_s": 2.0}}
    diff = diff_runs(a, b)
    assert diff["specs"] == [{"key": "model.params.C", "a": 1.0, "b": 2.0}]
    assert diff["data"] == [{"key": "data /t delta_version", "a": 1, "b": 2}]
    assert diff["libraries"] == [{"key": "lib.scikit-learn", "a": "1.9.0", "b": "1.9.1"}]
    assert [(r["key"], r["difference"]) for r in diff["metrics"]] == [
        ("roc_auc", pytest.approx(0.05))]
    text = format_comparison(diff)
    assert "data /t delta_version: 1 -> 2" in text and "roc_auc: 0.8 -> 0.85 (+0.05)" in text
    json.dumps(diff)


def test_redacted_keys_names_every_redacted_value():
    config = {"data": {"path": "/t"}, "mlflow": {"tracking_uri": "https://u:***REDACTED***@h",
                                                 "tags": {"a": ["ok", "***REDACTED***"]}}}
    assert redacted_keys(config) == ["mlflow.tracking_uri", "mlflow.tags.a[1]"]
