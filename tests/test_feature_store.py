"""Point-in-time training sets: Spark joins checked against pandas ``merge_asof``.

Tables are real Delta tables in a temporary directory, written once per module.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import (
    DataError,
    DataTooLargeError,
    MissingColumnError,
    MissingTableError,
    SpecError,
)
from orchestrator.io.feature_store import (
    DATABRICKS_BACKEND,
    SPARK_BACKEND,
    build_feature_lookups,
    build_training_set,
    choose_backend,
    is_unity_catalog_name,
)
from orchestrator.specs import Problems
from orchestrator.specs.feature_store import parse_feature_store_spec

REPO = Path(__file__).resolve().parents[1]
BASE = pd.Timestamp("2024-01-01 00:00:00")
FEATURES = ["f_num", "f_str", "f_int"]


def _spec(raw: dict):
    problems = Problems()
    spec = parse_feature_store_spec(raw, problems)
    problems.raise_if_any()
    return spec


def _write(spark, frame: pd.DataFrame, path: Path, schema: str | None = None,
           mode: str = "overwrite") -> str:
    df = spark.createDataFrame(frame, schema=schema) if schema else spark.createDataFrame(frame)
    df.coalesce(1).write.format("delta").mode(mode).save(str(path))
    return str(path)


# --------------------------------------------------------------------------- generated tables


def _generate(seed: int = 7, n_keys: int = 150, n_labels: int = 1500):
    """Feature snapshots and label rows with early, late, tied and unknown timestamps and keys."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(n_keys):
        n = int(rng.integers(0, 8))  # 0: a key the feature table does not know
        hours = np.sort(rng.choice(60 * 24, size=n, replace=False))
        parts.append(pd.DataFrame({"customer_id": f"K{k:04d}",
                                   "as_of_ts": BASE + pd.to_timedelta(hours, unit="h")}))
    features = pd.concat(parts, ignore_index=True)
    m = len(features)
    features["f_num"] = np.where(rng.random(m) < 0.1, np.nan, rng.normal(size=m).round(6))
    features["f_str"] = pd.Series(rng.choice(["a", "b", "c"], size=m), dtype=object).where(
        rng.random(m) > 0.1, None)
    features["f_int"] = rng.integers(0, 1000, size=m)

    n_tied = n_labels // 4
    tied = features.sample(n=n_tied, random_state=seed)[["customer_id", "as_of_ts"]]
    free = pd.DataFrame({
        "customer_id": [f"K{k:04d}" for k in rng.integers(0, n_keys + 15, n_labels - n_tied)],
        # From 5 days before the first snapshot to 10 days after the last.
        "as_of_ts": BASE + pd.to_timedelta(rng.integers(-5 * 24 * 60, 70 * 24 * 60,
                                                        n_labels - n_tied), unit="min")})
    labels = pd.concat([tied, free], ignore_index=True).rename(columns={"as_of_ts": "event_ts"})
    labels.insert(0, "label_id", np.arange(len(labels)))
    labels["churned"] = rng.integers(0, 2, len(labels))
    return features, labels


FEATURE_SCHEMA = "customer_id string, as_of_ts timestamp, f_num double, f_str string, f_int int"
LABEL_SCHEMA = "label_id long, customer_id string, event_ts timestamp, churned int"


@pytest.fixture(scope="module")
def tables(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("feature_store")
    features, labels = _generate()
    profile = pd.DataFrame({"customer_id": [f"K{k:04d}" for k in range(0, 150, 2)]})
    profile["segment"] = np.where(np.arange(len(profile)) % 3 == 0, "gold", "silver")
    profile["score"] = np.arange(len(profile), dtype=float)
    return {
        "features": features, "labels": labels, "profile": profile, "base": base,
        "features_path": _write(spark, features, base / "features", FEATURE_SCHEMA),
        "labels_path": _write(spark, labels, base / "labels", LABEL_SCHEMA),
        "profile_path": _write(spark, profile, base / "profile",
                               "customer_id string, segment string, score double"),
    }


def _pit_raw(tables, **lookup) -> dict:
    return {
        "labels": {"path": tables["labels_path"], "keys": ["customer_id"],
                   "timestamp": "event_ts", "label": "churned"},
        "lookups": [{"path": tables["features_path"], "keys": ["customer_id"],
                     "timestamp_key": "as_of_ts", **lookup}],
    }


def _oracle(labels: pd.DataFrame, features: pd.DataFrame, lookback: pd.Timedelta | None,
            columns=FEATURES) -> pd.DataFrame:
    """The independent answer: pandas merge_asof per key, backward, ties included."""
    merged = pd.merge_asof(labels.sort_values("event_ts"), features.sort_values("as_of_ts"),
                           left_on="event_ts", right_on="as_of_ts", by="customer_id",
                           direction="backward", allow_exact_matches=True)
    if lookback is not None:
        merged.loc[merged["event_ts"] - merged["as_of_ts"] > lookback, list(columns)] = np.nan
    return merged.set_index("label_id").sort_index()


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].where(out[column].notna(), "<null>")
        elif pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype(float)
    return out


# --------------------------------------------------------------------------- point in time

SUFFIX = "_10d"


@pytest.fixture(scope="module")
def several(spark, tables):
    """One training set, three lookups: point in time, point in time with lookback, exact key.

    The second lookup reads the same feature table again with a 10 day lookback,
    renamed; the third joins the profile table on the key, one column renamed.
    """
    raw = _pit_raw(tables)
    raw["lookups"].append({"path": tables["features_path"], "keys": ["customer_id"],
                           "timestamp_key": "as_of_ts", "lookback": "10d",
                           "rename": {f: f + SUFFIX for f in FEATURES}})
    raw["lookups"].append({"path": tables["profile_path"], "keys": ["customer_id"],
                           "features": ["segment", "score"],
                           "rename": {"segment": "customer_segment"}})
    raw["exclude_columns"] = ["event_ts"]
    columns = ["label_id", *FEATURES, *(f + SUFFIX for f in FEATURES), "customer_segment",
               "score"]
    loaded = build_training_set(spark, _spec(raw), feature_columns=columns)
    return loaded, loaded.X.set_index("label_id").sort_index()


@pytest.mark.spark
@pytest.mark.parametrize("lookback", [None, "10d"])
def test_point_in_time_matches_merge_asof(tables, several, lookback):
    loaded, got = several
    expected = _oracle(tables["labels"], tables["features"],
                       pd.Timedelta(days=10) if lookback else None)
    columns = [f + SUFFIX for f in FEATURES] if lookback else FEATURES
    assert len(got) == len(tables["labels"])
    result = got[columns].set_axis(FEATURES, axis=1)
    pd.testing.assert_frame_equal(_comparable(result), _comparable(expected[FEATURES]))
    y = pd.Series(loaded.y.to_numpy(), index=loaded.X["label_id"]).sort_index()
    assert (y.to_numpy() == expected["churned"].to_numpy()).all()
    # The generated data exercises every case the oracle distinguishes.
    assert expected["as_of_ts"].isna().sum() > 50                     # early or unknown key
    assert (expected["as_of_ts"] == expected["event_ts"]).sum() > 300  # ties
    too_old = expected["event_ts"] - expected["as_of_ts"] > pd.Timedelta(days=10)
    assert too_old.sum() > 20                                          # beyond the lookback
    lookup = loaded.lineage["tables"][2 if lookback else 1]
    assert lookup["matched_rows"] == int(result["f_int"].notna().sum())
    assert lookup["lookback_seconds"] == (10 * 86400 if lookback else None)


@pytest.mark.spark
def test_several_lookups_with_renames_and_exclusions(tables, several):
    loaded, got = several
    assert loaded.lineage["training_set_columns"] == [
        "label_id", "customer_id", "churned", *FEATURES, *(f + SUFFIX for f in FEATURES),
        "customer_segment", "score"]
    assert loaded.lineage["tables"][3]["features"] == {"segment": "customer_segment",
                                                       "score": "score"}
    expected = (tables["labels"].join(tables["profile"].set_index("customer_id"),
                                      on="customer_id")
                .set_index("label_id").sort_index().rename(columns={"segment":
                                                                    "customer_segment"}))
    columns = ["customer_segment", "score"]
    pd.testing.assert_frame_equal(_comparable(got[columns]), _comparable(expected[columns]))


@pytest.mark.spark
def test_the_join_reports_progress_while_it_runs(spark, tables, monkeypatch, caplog):
    import logging

    import orchestrator.io.feature_store as feature_store
    from orchestrator.io.progress import spark_progress

    # Lines every 20 ms instead of 10 s, so even this small join logs some.
    monkeypatch.setattr(feature_store, "spark_progress",
                        lambda spark, what: spark_progress(spark, what, interval_s=0.02))
    caplog.set_level(logging.INFO, logger="orchestrator.io.progress")
    build_training_set(spark, _spec(_pit_raw(tables)), feature_columns=FEATURES)
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.io.progress"]
    assert any("point-in-time join of 1,500 label rows" in line for line in lines), lines


@pytest.mark.spark
def test_point_in_time_edge_cases_by_hand(spark, tmp_path):
    t = [BASE + pd.Timedelta(days=d) for d in range(10)]
    features = pd.DataFrame({
        "customer_id": ["A", "A", "A", "B", None],
        "as_of_ts": [t[1], t[3], t[5], t[2], t[0]],
        "value": [10.0, None, 50.0, 20.0, 99.0],  # A's t3 value is a genuine null
    })
    labels = pd.DataFrame({
        "row": range(11),
        "customer_id": ["A", "A", "A", "A", "A", "A", "B", "B", "C", None, "A"],
        "event_ts": [t[0], t[1], t[2], t[3], t[4], t[9], t[1], t[9], t[5], t[5], None],
        "churned": [0, 1] * 5 + [0],
    })
    raw = {"labels": {"path": _write(spark, labels, tmp_path / "labels",
                                     "row int, customer_id string, event_ts timestamp, "
                                     "churned int"),
                      "keys": ["customer_id"], "timestamp": "event_ts", "label": "churned"},
           "lookups": [{"path": _write(spark, features, tmp_path / "features",
                                       "customer_id string, as_of_ts timestamp, value double"),
                        "keys": ["customer_id"], "timestamp_key": "as_of_ts",
                        "lookback": "5d"}]}
    loaded = build_training_set(spark, _spec(raw), feature_columns=["row", "value"])
    got = loaded.X.set_index("row").sort_index()["value"].tolist()
    expected = [None,   # A before its first snapshot
                10.0,   # tie: the snapshot at the label's time counts
                10.0,   # the latest earlier one, not the later t3
                None,   # t3's genuine null, not t1's 10
                None,   # still t3
                50.0,   # t5, 4 days old: within the 5d lookback
                None,   # B before its snapshot
                None,   # B's t2 snapshot is 7 days old: beyond the 5d lookback
                None,   # C has no snapshot
                None,   # a null key matches nothing (not the null-key feature row)
                None]   # a null time matches nothing
    assert [None if pd.isna(v) else v for v in got] == expected
    # Rows 1-5 found a feature row (two of them a genuine null).
    assert loaded.lineage["tables"][1]["matched_rows"] == 5


@pytest.mark.spark
def test_exact_key_join_matches_pandas_merge(spark, tables):
    raw = {"labels": {"path": tables["labels_path"], "keys": ["customer_id"],
                      "label": "churned"},
           "lookups": [{"path": tables["profile_path"], "keys": ["customer_id"]}],
           "exclude_columns": ["event_ts"]}
    spec = _spec(raw)
    loaded = build_training_set(spark, spec)  # X: every column but the label and exclusions
    assert list(loaded.X.columns) == ["label_id", "customer_id", "segment", "score"]
    got = loaded.X.set_index("label_id").sort_index()
    expected = (tables["labels"].merge(tables["profile"], on="customer_id", how="left")
                .set_index("label_id").sort_index())
    columns = ["customer_id", "segment", "score"]
    pd.testing.assert_frame_equal(_comparable(got[columns]), _comparable(expected[columns]))
    lookup = loaded.lineage["tables"][1]
    assert lookup["timestamp_key"] is None
    assert lookup["matched_rows"] == int(expected["segment"].notna().sum())
    with pytest.raises(MissingColumnError, match=r"'event_ts'.*not found"):
        build_training_set(spark, spec, feature_columns=["event_ts", "segment"])


# --------------------------------------------------------------------------- errors before joins


@pytest.mark.spark
def test_missing_tables_and_columns_suggest_names(spark, tables):
    raw = _pit_raw(tables)
    raw["lookups"][0]["path"] = tables["features_path"].rstrip("s")  # ".../feature"
    with pytest.raises(MissingTableError,
                       match=r"lookups\[0\]\.path: no Delta table at .*did you mean .*features"):
        build_training_set(spark, _spec(raw))

    raw = _pit_raw(tables, timestamp_key="as_of")
    with pytest.raises(MissingColumnError, match=r"lookups\[0\].*'as_of' \(did you mean "
                                                 r"'as_of_ts'\?\) not found"):
        build_training_set(spark, _spec(raw))

    raw = _pit_raw(tables, features=["f_nums"])
    with pytest.raises(MissingColumnError, match=r"\(features\): column 'f_nums' \(did you "
                                                 r"mean 'f_num'\?\)"):
        build_training_set(spark, _spec(raw))

    raw = _pit_raw(tables)
    raw["labels"]["label"] = "churn"
    with pytest.raises(MissingColumnError, match=r"labels .*'churn' \(did you mean 'churned'"):
        build_training_set(spark, _spec(raw))

    raw = _pit_raw(tables)
    raw["labels"]["table"] = "default.churn_lables"
    del raw["labels"]["path"]
    with pytest.raises(MissingTableError, match=r"labels\.table: no table 'default\.churn_lab"):
        build_training_set(spark, _spec(raw))

    raw = _pit_raw(tables)
    raw["exclude_columns"] = ["event_tss"]
    with pytest.raises(MissingColumnError, match=r"exclude_columns.*did you mean 'event_ts'"):
        build_training_set(spark, _spec(raw))

    with pytest.raises(MissingColumnError, match=r"feature_specs.*'f_nmu'"):
        build_training_set(spark, _spec(_pit_raw(tables)), feature_columns=["f_nmu"])
    with pytest.raises(SpecError, match="label column 'churned' is also used as a feature"):
        build_training_set(spark, _spec(_pit_raw(tables)), feature_columns=["churned"])


@pytest.mark.spark
def test_key_types_must_match(spark, tables):
    frame = tables["features"].assign(customer_id=lambda f: f["customer_id"].str[1:].astype(int))
    path = _write(spark, frame, tables["base"] / "int_keys",
                  FEATURE_SCHEMA.replace("customer_id string", "customer_id bigint"))
    raw = _pit_raw(tables)
    raw["lookups"][0]["path"] = path
    with pytest.raises(DataError, match=r"lookups\[0\]\.keys: key types differ: labels column "
                                        r"'customer_id' is string but 'customer_id' .* bigint"):
        build_training_set(spark, _spec(raw))


@pytest.mark.spark
def test_a_timestamp_key_must_be_a_time(spark, tables):
    frame = tables["features"].assign(as_of_ts=lambda f: f["as_of_ts"].astype(str))
    path = _write(spark, frame, tables["base"] / "string_ts",
                  FEATURE_SCHEMA.replace("as_of_ts timestamp", "as_of_ts string"))
    raw = _pit_raw(tables)
    raw["lookups"][0]["path"] = path
    with pytest.raises(DataError, match="timestamp_key column 'as_of_ts' has type string"):
        build_training_set(spark, _spec(raw))


@pytest.mark.spark
def test_duplicate_feature_name_after_rename(spark, tables):
    raw = _pit_raw(tables)  # every column of the feature table, f_num among them
    raw["lookups"].append({"path": tables["profile_path"], "keys": ["customer_id"],
                           "rename": {"score": "f_num"}})
    with pytest.raises(DataError, match=r"lookups\[1\]: feature 'f_num' \(renamed from 'score'\)"
                                        r" would appear twice in the training set: "
                                        r"feature_store_spec\.lookups\[0\]"):
        build_training_set(spark, _spec(raw))
    raw = _pit_raw(tables, rename={"f_int": "label_id"})
    with pytest.raises(DataError, match="'label_id' .* twice .*the labels table has it"):
        build_training_set(spark, _spec(raw))


@pytest.mark.spark
def test_duplicate_feature_rows_are_refused(spark, tables):
    frame = tables["features"]
    doubled = pd.concat([frame, frame.iloc[[3, 10]].assign(f_num=-1.0)], ignore_index=True)
    path = _write(spark, doubled, tables["base"] / "doubled", FEATURE_SCHEMA)
    raw = _pit_raw(tables)
    raw["lookups"][0]["path"] = path
    key = frame.iloc[3]["customer_id"]
    with pytest.raises(DataError, match=rf"2 \(keys, timestamp_key\) value\(s\) \['customer_id',"
                                        rf" 'as_of_ts'\] have more than one row, e\.g\. "
                                        rf".*customer_id='{key}'.*\(2 rows\)"):
        build_training_set(spark, _spec(raw))
    # Without a timestamp_key a feature table needs one row per key.
    raw["lookups"][0].pop("timestamp_key")
    with pytest.raises(DataError, match="one row per key .*give its time column as timestamp_key"):
        build_training_set(spark, _spec(raw))


@pytest.mark.spark
def test_training_set_too_large_for_the_driver(spark, tables):
    # f_num, the label, customer_id and event_ts to order the rows (and a matched flag):
    # 1,500 x (8 + 4 + 81 + 8 + 1) bytes.
    with pytest.raises(DataTooLargeError, match=r"1,500 label rows x 4 columns\) would take "
                                                r"about 149\.4 KiB .* limit of 1000 bytes"):
        build_training_set(spark, _spec(_pit_raw(tables)), feature_columns=["f_num"],
                           max_driver_bytes=1000)


# --------------------------------------------------------------------------- lineage


@pytest.mark.spark
def test_lineage_records_every_table_version(tables, several):
    loaded, _ = several
    assert [(t["role"], t["location"], t["delta_version"], t["row_count"])
            for t in loaded.lineage["tables"]] == [
        ("labels", tables["labels_path"], 0, len(tables["labels"])),
        ("lookup", tables["features_path"], 0, len(tables["features"])),
        ("lookup", tables["features_path"], 0, len(tables["features"])),
        ("lookup", tables["profile_path"], 0, len(tables["profile"]))]
    assert loaded.lineage["row_count"] == len(tables["labels"])
    assert loaded.lineage["backend"] == SPARK_BACKEND


@pytest.mark.spark
def test_lookup_reads_the_latest_or_the_pinned_version(spark, tables, tmp_path):
    features = tables["features"]
    path = _write(spark, features, tmp_path / "versioned", FEATURE_SCHEMA)  # version 0
    _write(spark, features.assign(f_int=features["f_int"] + 10_000), tmp_path / "versioned",
           FEATURE_SCHEMA)                                                   # version 1
    raw = _pit_raw(tables)
    raw["lookups"][0]["path"] = path
    latest = build_training_set(spark, _spec(raw), feature_columns=["f_int"])
    assert latest.lineage["tables"][1]["delta_version"] == 1
    assert latest.X["f_int"].dropna().min() >= 10_000  # version 1's values

    raw["lookups"][0]["version"] = 0
    pinned = build_training_set(spark, _spec(raw), feature_columns=["f_int"])
    assert pinned.lineage["tables"][1]["delta_version"] == 0
    assert pinned.X["f_int"].dropna().max() < 10_000   # version 0's values
    raw["lookups"][0]["version"] = 5
    with pytest.raises(DataError, match=r"lookups\[0\] .*version 5 does not exist; the latest "
                                        r"version is 1"):
        build_training_set(spark, _spec(raw))


# --------------------------------------------------------------------------- backends


def _uc_spec(**lookup):
    return _spec({"labels": {"table": "main.ml.labels", "keys": ["customer_id"],
                             "timestamp": "event_ts", "label": "churned"},
                  "lookups": [{"table": "main.ml.customer_features", "keys": ["id"],
                               "timestamp_key": "as_of_ts", **lookup},
                              {"table": "main.ml.profile", "keys": ["id"],
                               "features": ["segment"]}]})


@pytest.mark.parametrize("spec_kwargs, available, runtime, backend, reason", [
    ({}, True, "15.4", DATABRICKS_BACKEND, "Unity Catalog"),
    ({}, True, None, SPARK_BACKEND, "DATABRICKS_RUNTIME_VERSION is not set"),
    ({}, True, "", SPARK_BACKEND, "DATABRICKS_RUNTIME_VERSION is not set"),
    ({}, False, "15.4", SPARK_BACKEND, "not installed"),
    ({"version": 3}, True, "15.4", SPARK_BACKEND, "pins version 3"),
    ({"table": "features"}, True, "15.4", SPARK_BACKEND, "not a Unity Catalog name"),
])
def test_backend_rule(spec_kwargs, available, runtime, backend, reason):
    chosen, why = choose_backend(_uc_spec(**spec_kwargs), client_available=available,
                                 runtime_version=runtime)
    assert chosen == backend and reason in why


def test_backend_rule_path_lookup_stays_on_spark():
    raw = {"labels": {"table": "main.ml.labels", "keys": ["id"], "label": "y"},
           "lookups": [{"path": "/dbfs/features", "keys": ["id"]}]}
    assert choose_backend(_spec(raw), client_available=True, runtime_version="15.4") == (
        SPARK_BACKEND, "lookups[0] reads a path, not a Unity Catalog table")
    assert is_unity_catalog_name("`main`.`ml`.`f`") and not is_unity_catalog_name("a..b")


def test_feature_lookups_are_built_from_the_spec_with_the_real_client():
    pytest.importorskip("databricks.feature_engineering")
    from databricks.feature_engineering import FeatureLookup

    spec = _uc_spec(features=["logins", "plan"], rename={"plan": "current_plan"},
                    lookback="12h")
    point_in_time, exact = build_feature_lookups(spec)
    assert isinstance(point_in_time, FeatureLookup) and isinstance(exact, FeatureLookup)
    assert point_in_time.table_name == "main.ml.customer_features"
    assert point_in_time.lookup_key == ["customer_id"]  # the label table's keys
    assert point_in_time.timestamp_lookup_key == "event_ts"  # the label table's time
    assert point_in_time.feature_names == ["logins", "plan"]
    assert point_in_time.lookback_window == datetime.timedelta(hours=12)
    assert point_in_time._rename_outputs == {"plan": "current_plan"}
    assert point_in_time._get_output_name("plan") == "current_plan"
    assert exact.table_name == "main.ml.profile" and exact.timestamp_lookup_key is None
    assert exact.feature_names == ["segment"] and exact.lookback_window is None
    assert build_feature_lookups(_uc_spec())[0].feature_names == []  # the client's "all"


# --------------------------------------------------------------------------- end to end


@pytest.mark.spark
def test_demo_config_trains_through_the_feature_store(spark, tmp_path):
    from orchestrator.config import load_config
    from orchestrator.io.demo_data import write_demo_tables
    from orchestrator.workflow import run_ml_workflow

    write_demo_tables(spark, str(tmp_path / "demo"), n_customers=400, seed=11)
    config = load_config(REPO / "conf" / "demo_feature_store.yml",
                         environ={"DEMO_DATA": str(tmp_path / "demo")})
    kwargs = dict(config.workflow_kwargs)
    kwargs["model_spec"] = {**kwargs["model_spec"],
                            "params": {**kwargs["model_spec"]["params"], "n_estimators": 50,
                                       "n_jobs": 1}}
    kwargs.update(validation_params={**kwargs["validation_params"], "cv_folds": 3},
                  output_dir=str(tmp_path / "out"), X=None, y=None)
    results = run_ml_workflow(**kwargs, spark=spark)
    assert results["warnings"] == []
    assert results["validation_strategy"] == "time_series"
    assert 0.7 < results["cv_score"] <= 1.0
    data = results["data"]
    assert data["source"] == "feature_store" and data["training_rows"] == 400
    assert [(t["role"], os.path.basename(t["location"]), t["delta_version"])
            for t in data["tables"]] == [("labels", "churn_labels", 0),
                                         ("lookup", "customer_features", 0),
                                         ("lookup", "churn", 0)]
    assert data["tables"][1]["matched_rows"] == 400
    assert "current_plan" in data["columns"] and "event_ts" not in data["training_set_columns"]
