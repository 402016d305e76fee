"""Loading Delta tables into pandas: the pure decisions, and real reads against Spark's own."""

from __future__ import annotations

import datetime as dt
import decimal

import pandas as pd
import pytest

from orchestrator.errors import (
    DataError,
    DataTooLargeError,
    MissingColumnError,
    MissingTableError,
    SpecError,
)
from orchestrator.io.sizing import (
    default_max_driver_bytes,
    estimate_frame_bytes,
    parse_cgroup_available,
    parse_meminfo_available,
    sample_fraction,
)
from orchestrator.io.training_data import (
    ARROW_FILES,
    SPARK_ARROW,
    choose_read_path,
    load_training_data,
)
from orchestrator.specs.data import DataSpec

FEATURES = ["x", "n", "cat", "flag", "ts", "d", "amt"]
ALL = ["id", *FEATURES, "label"]

# ---------------------------------------------------------------------------- pure logic


def test_estimate_frame_bytes_sums_type_widths():
    assert estimate_frame_bytes(1000, ["double", "long", "integer", "boolean"]) == 1000 * 21
    assert estimate_frame_bytes(10, ["string"]) > estimate_frame_bytes(10, ["double"]) * 5
    assert estimate_frame_bytes(0, ["double"]) == 0
    # types without a fixed width are assumed wide, never free
    assert estimate_frame_bytes(1, ["array"]) > 100


@pytest.mark.parametrize("available, fraction, expected", [
    (16 * 1024**3, 0.25, 4 * 1024**3),
    (1000, 0.5, 500),
    (None, 0.25, 2 * 1024**3),   # unknown: 8 GiB assumed
    (0, 0.25, 2 * 1024**3),
])
def test_default_max_driver_bytes(available, fraction, expected):
    assert default_max_driver_bytes(available, fraction=fraction) == expected


@pytest.mark.parametrize("rows, max_rows", [(100, None), (100, 100), (100, 500), (0, 5)])
def test_no_sample_when_rows_fit(rows, max_rows):
    assert sample_fraction(rows, max_rows) is None


@pytest.mark.parametrize("rows, max_rows", [(1_000_000, 10_000), (300, 50), (101, 100),
                                            (10**9, 1)])
def test_sample_fraction_keeps_enough_rows_but_not_all(rows, max_rows):
    f = sample_fraction(rows, max_rows)
    assert max_rows / rows < f <= 1.0
    mean, sd = rows * f, (rows * f * (1 - f)) ** 0.5
    # at least ~6 standard deviations above max_rows unless everything is kept
    assert f == 1.0 or mean - 5.9 * sd >= max_rows


def test_sample_fraction_is_small_for_a_small_share():
    assert sample_fraction(1_000_000, 10_000) < 0.011


_SAFE = dict(file_uris=["file:/t/part-0.parquet"], has_filter=False, sampled=False,
             table_features=["appendOnly", "invariants"], table_properties={},
             min_reader_version=1, column_types={"x": "double", "s": "string"})


@pytest.mark.parametrize("change, expected, reason", [
    ({}, ARROW_FILES, "pyarrow"),
    ({"file_uris": []}, ARROW_FILES, "pyarrow"),
    ({"has_filter": True}, SPARK_ARROW, "filter"),
    ({"sampled": True}, SPARK_ARROW, "sample"),
    ({"table_features": ["appendOnly", "deletionVectors"]}, SPARK_ARROW, "deletionVectors"),
    ({"table_features": ["columnMapping"]}, SPARK_ARROW, "columnMapping"),
    ({"table_features": ["typeWidening"]}, SPARK_ARROW, "typeWidening"),
    ({"table_properties": {"delta.columnMapping.mode": "name"}}, SPARK_ARROW, "column mapping"),
    ({"min_reader_version": 2}, SPARK_ARROW, "column mapping"),
    ({"table_properties": {"delta.enableDeletionVectors": "true"}}, SPARK_ARROW, "deletion"),
    ({"column_types": {"x": "double", "m": "map"}}, SPARK_ARROW, "m have types"),
    ({"column_metadata_flags": ["code"]}, SPARK_ARROW, "char/varchar"),
    ({"partition_columns": ["s"]}, SPARK_ARROW, "partition columns s"),
    ({"partition_columns": ["day"]}, ARROW_FILES, "pyarrow"),
    ({"file_uris": ["file:/t/a.parquet", "s3://b/t/b.parquet"]}, SPARK_ARROW, "s3://"),
    ({"file_uris": ["dbfs:/t/a.parquet"]}, SPARK_ARROW, "not on a local"),
])
def test_choose_read_path(change, expected, reason):
    path, why = choose_read_path(**{**_SAFE, **change})
    assert path == expected
    assert reason in why


def test_parse_memory_files():
    meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"
    assert parse_meminfo_available(meminfo) == 20000000 * 1024
    assert parse_meminfo_available("MemTotal: 5 kB\n") is None
    assert parse_cgroup_available("max\n", "123\n") is None
    assert parse_cgroup_available("1000\n", "400\n") == 600
    assert parse_cgroup_available("1000", "4000") == 0


# ---------------------------------------------------------------------------- Spark and Delta


SCHEMA = ("id long, x double, n int, cat string, flag boolean, ts timestamp, d date, "
          "amt decimal(10,2), label int")


def _rows(ids, *, scale=1.0):
    rows = []
    for i in ids:
        rows.append((
            i, i * scale + 0.5,
            None if i % 7 == 0 else i % 50,
            None if i % 11 == 0 else "abc"[i % 3],
            None if i % 13 == 0 else i % 2 == 0,
            dt.datetime(2024, 1, 1) + dt.timedelta(hours=i),
            dt.date(2023, 1, 1) + dt.timedelta(days=i),
            decimal.Decimal(i) / 4,
            i % 2,
        ))
    return rows


@pytest.fixture(scope="module")
def events(spark, tmp_path_factory):
    """A Delta table with four versions: write, append, delete (rewrites files), overwrite."""
    path = str(tmp_path_factory.mktemp("delta") / "events")
    spark.createDataFrame(_rows(range(0, 200)), SCHEMA).write.format("delta").save(path)
    spark.createDataFrame(_rows(range(200, 300)), SCHEMA) \
        .write.format("delta").mode("append").save(path)
    # SQL rather than DeltaTable.delete: the same commit on classic and on Spark Connect.
    _delete(spark, path, "id % 10 = 0")
    spark.createDataFrame(_rows(range(1000, 1150), scale=2.0), SCHEMA).repartition(3) \
        .write.format("delta").mode("overwrite").save(path)
    return path


def _oracle(spark, path, columns, **options):
    reader = spark.read.format("delta")
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load(path).select(*columns).toPandas()


def _assert_same_rows(loaded, expected: pd.DataFrame, label="label"):
    """The loaded X/y hold exactly the expected rows (any order), with toPandas' dtypes."""
    from pyspark.testing import assertDataFrameEqual

    got = loaded.X.assign(**{label: loaded.y})
    key = "id" if "id" in got.columns else list(got.columns)
    got = got.sort_values(key).reset_index(drop=True)
    expected = expected.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=True)
    assertDataFrameEqual(got, expected)


@pytest.mark.spark
def test_latest_version_by_path_uses_the_file_read_and_matches_spark(spark, events):
    spec = DataSpec(path=events, label="label")
    loaded = load_training_data(spark, spec, feature_columns=["id", *FEATURES])
    assert loaded.lineage["read_path"] == ARROW_FILES
    assert loaded.lineage["delta_version"] == 3
    assert loaded.lineage["source"] == "path"
    assert loaded.lineage["row_count"] == loaded.lineage["rows_in_source"] == 150
    assert loaded.lineage["sampled"] is False
    assert list(loaded.X.columns) == ["id", *FEATURES]
    assert loaded.y.name == "label"
    _assert_same_rows(loaded, _oracle(spark, events, ALL))


@pytest.mark.spark
@pytest.mark.parametrize("version, rows", [(0, 200), (1, 300), (2, 270), (3, 150)])
def test_time_travel_by_version_matches_spark_on_both_paths(spark, events, version, rows):
    oracle = _oracle(spark, events, ALL, versionAsOf=version)
    fast = load_training_data(spark, DataSpec(path=events, label="label", version=version),
                              feature_columns=["id", *FEATURES])
    assert fast.lineage["read_path"] == ARROW_FILES
    assert fast.lineage["delta_version"] == version
    assert len(fast.X) == rows
    _assert_same_rows(fast, oracle)
    # A filter true for every row sends the read through Spark: same rows again.
    slow = load_training_data(spark, DataSpec(path=events, label="label", version=version,
                                              filter="id IS NOT NULL"),
                              feature_columns=["id", *FEATURES])
    assert slow.lineage["read_path"] == SPARK_ARROW
    _assert_same_rows(slow, oracle)


@pytest.mark.spark
@pytest.mark.parametrize("version", [1, 2, 3])
def test_row_order_is_the_same_on_both_paths(spark, events, version):
    """Cross-validation folds depend on row order: both read paths give the same order."""
    fast = load_training_data(spark, DataSpec(path=events, label="label", version=version),
                              feature_columns=["id", *FEATURES])
    slow = load_training_data(spark, DataSpec(path=events, label="label", version=version,
                                              filter="id IS NOT NULL"),
                              feature_columns=["id", *FEATURES])
    assert (fast.lineage["read_path"], slow.lineage["read_path"]) == (ARROW_FILES, SPARK_ARROW)
    pd.testing.assert_frame_equal(fast.X.reset_index(drop=True), slow.X.reset_index(drop=True))
    pd.testing.assert_series_equal(fast.y.reset_index(drop=True), slow.y.reset_index(drop=True))
    again = load_training_data(spark, DataSpec(path=events, label="label", version=version,
                                               filter="id IS NOT NULL"),
                               feature_columns=["id", *FEATURES])
    assert again.X["id"].tolist() == slow.X["id"].tolist()


@pytest.mark.spark
def test_session_time_zone_is_honoured_like_to_pandas(spark, events):
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        oracle = _oracle(spark, events, ["id", "ts", "label"])
        loaded = load_training_data(spark, DataSpec(path=events, label="label"),
                                    feature_columns=["id", "ts"])
        assert loaded.lineage["read_path"] == ARROW_FILES
        _assert_same_rows(loaded, oracle)
        assert loaded.X["ts"].min() == pd.Timestamp("2024-02-11 11:00:00")  # 16:00 UTC - 5h
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)


def _delete(spark, path, condition):
    spark.sql(f"DELETE FROM delta.`{path}` WHERE {condition}").collect()


def _commit_times(spark, path):
    from orchestrator.io.delta import delta_table_for_path

    rows = (delta_table_for_path(spark, path).history()
            .selectExpr("version", "date_format(timestamp, 'yyyy-MM-dd HH:mm:ss.SSS') AS ts")
            .collect())
    return {r["version"]: r["ts"] for r in rows}


@pytest.mark.spark
@pytest.mark.parametrize("version", [0, 1, 2])
def test_time_travel_by_timestamp_resolves_the_version_spark_reads(spark, events, version):
    stamp = _commit_times(spark, events)[version]
    loaded = load_training_data(spark, DataSpec(path=events, label="label", timestamp=stamp),
                                feature_columns=["id", "x"])
    assert loaded.lineage["delta_version"] == version
    assert loaded.lineage["timestamp"] == stamp
    _assert_same_rows(loaded, _oracle(spark, events, ["id", "x", "label"], timestampAsOf=stamp))


@pytest.mark.spark
def test_timestamp_errors(spark, events):
    times = _commit_times(spark, events)
    with pytest.raises(DataError, match="before the first commit"):
        load_training_data(spark, DataSpec(path=events, label="label",
                                           timestamp="2001-01-01 00:00:00"),
                           feature_columns=["x"])
    with pytest.raises(DataError, match="after the latest commit .* version 3"):
        load_training_data(spark, DataSpec(path=events, label="label",
                                           timestamp="2999-01-01"), feature_columns=["x"])
    with pytest.raises(SpecError, match="data_spec.timestamp: expected a timestamp"):
        load_training_data(spark, DataSpec(path=events, label="label", timestamp="next tuesday"),
                           feature_columns=["x"])
    assert len(times) == 4


@pytest.mark.spark
def test_version_that_does_not_exist(spark, events):
    with pytest.raises(DataError, match="version 9 does not exist; the latest version is 3"):
        load_training_data(spark, DataSpec(path=events, label="label", version=9),
                           feature_columns=["x"])


@pytest.mark.spark
def test_projection_loads_only_the_named_columns(spark, events):
    loaded = load_training_data(spark, DataSpec(path=events, label="label"),
                                feature_columns=["cat", "x", "cat"])
    assert list(loaded.X.columns) == ["cat", "x"]
    wider = load_training_data(spark, DataSpec(path=events, label="label",
                                               columns=("id", "x", "cat")),
                               feature_columns=["x"])
    assert list(wider.X.columns) == ["id", "x", "cat"]
    assert wider.lineage["columns"] == ["id", "x", "cat"]


@pytest.mark.spark
def test_filter_is_applied_by_spark(spark, events):
    predicate = "x > 2100 AND cat IN ('a', 'b')"
    loaded = load_training_data(spark, DataSpec(path=events, label="label", filter=predicate),
                                feature_columns=["id", "x", "cat"])
    expected = (spark.read.format("delta").load(events).where(predicate)
                .select("id", "x", "cat", "label").toPandas())
    assert 0 < len(expected) < 150
    assert loaded.lineage["read_path"] == SPARK_ARROW
    assert loaded.lineage["filter"] == predicate
    assert loaded.lineage["rows_in_source"] == 150
    assert loaded.lineage["row_count"] == len(expected)
    _assert_same_rows(loaded, expected)


@pytest.mark.spark
@pytest.mark.parametrize("predicate, message", [
    ("x = = 3", "PARSE_SYNTAX_ERROR"),
    ("nope > 1", "nope"),
    ("x +", "data_spec.filter"),
])
def test_bad_filter_is_a_clear_data_error(spark, events, predicate, message):
    with pytest.raises(DataError, match="data_spec.filter: cannot apply") as info:
        load_training_data(spark, DataSpec(path=events, label="label", filter=predicate),
                           feature_columns=["x"])
    assert message in str(info.value)
    assert "JVM stacktrace" not in str(info.value)
    assert "+- Relation" not in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.spark
def test_sample_is_seeded_exact_and_reproducible(spark, events):
    def ids(seed, features, **extra):
        spec = DataSpec(path=events, label="label", version=2, max_rows=40, sample_seed=seed,
                        **extra)
        loaded = load_training_data(spark, spec, feature_columns=features)
        assert loaded.lineage["sampled"] is True
        assert loaded.lineage["sample_seed"] == seed
        assert loaded.lineage["read_path"] == SPARK_ARROW
        assert len(loaded.X) == 40
        return loaded

    first = ids(7, ["id", *FEATURES])
    again = ids(7, ["id", *FEATURES])
    pd.testing.assert_frame_equal(first.X, again.X)
    pd.testing.assert_series_equal(first.y, again.y)
    # the sampled rows are real rows of that version, unchanged
    oracle = _oracle(spark, events, ALL, versionAsOf=2)
    _assert_same_rows(first, oracle[oracle["id"].isin(first.X["id"])])
    assert first.X["id"].is_unique
    other = ids(8, ["id", *FEATURES])
    assert set(other.X["id"]) != set(first.X["id"])
    # the same seed keeps the same rows whichever columns are loaded
    narrow = ids(7, ["id"])
    assert set(narrow.X["id"]) == set(first.X["id"])
    assert first.lineage["rows_in_source"] == 270


@pytest.mark.spark
def test_sample_after_filter(spark, events):
    spec = DataSpec(path=events, label="label", filter="cat = 'a'", max_rows=10, sample_seed=1)
    loaded = load_training_data(spark, spec, feature_columns=["id", "cat"])
    assert len(loaded.X) == 10
    assert set(loaded.X["cat"]) == {"a"}


@pytest.mark.spark
def test_no_sample_when_the_rows_fit(spark, events):
    loaded = load_training_data(spark, DataSpec(path=events, label="label", max_rows=10_000),
                                feature_columns=["id"])
    assert loaded.lineage["sampled"] is False
    assert loaded.lineage["read_path"] == ARROW_FILES
    assert len(loaded.X) == 150


@pytest.mark.spark
def test_driver_guard_refuses_then_sample_brings_it_under(spark, events):
    spec = DataSpec(path=events, label="label")
    with pytest.raises(DataTooLargeError, match=r"150 rows .* over the limit of .*max_rows: "):
        load_training_data(spark, spec, feature_columns=["id", "x", "cat"],
                           max_driver_bytes=2_000)
    sampled = DataSpec(path=events, label="label", max_rows=10)
    loaded = load_training_data(spark, sampled, feature_columns=["id", "x", "cat"],
                                max_driver_bytes=2_000)
    assert len(loaded.X) == 10
    assert loaded.lineage["bytes_estimate"] <= 2_000


@pytest.mark.spark
def test_missing_path_suggests_a_neighbour(spark, events, tmp_path):
    with pytest.raises(MissingTableError, match=r"no Delta table at .*events_x'.*did you mean"):
        load_training_data(spark, DataSpec(path=events + "_x", label="label"),
                           feature_columns=["x"])
    plain = tmp_path / "plain"
    spark.range(3).write.parquet(str(plain))
    with pytest.raises(MissingTableError, match="exists but is not a Delta table"):
        load_training_data(spark, DataSpec(path=str(plain), label="label"),
                           feature_columns=["x"])


@pytest.mark.spark
def test_missing_columns_and_label(spark, events):
    with pytest.raises(MissingColumnError, match=r"'ct' \(did you mean 'cat'\?\)"):
        load_training_data(spark, DataSpec(path=events, label="label"),
                           feature_columns=["x", "ct"])
    with pytest.raises(MissingColumnError, match=r"'labl' \(did you mean 'label'\?\)"):
        load_training_data(spark, DataSpec(path=events, label="labl"), feature_columns=["x"])
    with pytest.raises(MissingColumnError, match="data_spec.columns"):
        load_training_data(spark, DataSpec(path=events, label="label", columns=("x",)),
                           feature_columns=["x", "cat"])
    with pytest.raises(SpecError, match="label column 'label' is also used as a feature"):
        load_training_data(spark, DataSpec(path=events, label="label"),
                           feature_columns=["x", "label"])
    with pytest.raises(SpecError, match="missing required key 'label'"):
        load_training_data(spark, DataSpec(path=events), feature_columns=["x"])


@pytest.mark.spark
def test_null_labels_are_refused(spark, events):
    with pytest.raises(DataError, match=r"label column 'n' has 22 null value\(s\) of 150.*"
                                        r"n IS NOT NULL"):
        load_training_data(spark, DataSpec(path=events, label="n"), feature_columns=["x"])


@pytest.mark.spark
def test_metastore_table_with_time_travel_and_did_you_mean(spark):
    spark.createDataFrame(_rows(range(20)), SCHEMA).write.format("delta") \
        .saveAsTable("default.churn_events")
    spark.createDataFrame(_rows(range(20, 30)), SCHEMA).write.format("delta") \
        .mode("append").saveAsTable("default.churn_events")
    try:
        latest = load_training_data(spark, DataSpec(table="default.churn_events", label="label"),
                                    feature_columns=["id", "x"])
        assert latest.lineage["source"] == "table"
        assert latest.lineage["delta_version"] == 1
        assert len(latest.X) == 30
        _assert_same_rows(latest, spark.table("default.churn_events")
                          .select("id", "x", "label").toPandas())
        old = load_training_data(spark, DataSpec(table="default.churn_events", label="label",
                                                 version=0), feature_columns=["id", "x"])
        assert sorted(old.X["id"]) == list(range(20))
        with pytest.raises(MissingTableError,
                           match=r"no table 'default.churn_event' .*did you mean "
                                 r"'default.churn_events'"):
            load_training_data(spark, DataSpec(table="default.churn_event", label="label"),
                               feature_columns=["x"])
        with pytest.raises(MissingTableError, match="schema 'nowhere' was not found"):
            load_training_data(spark, DataSpec(table="nowhere.churn_events", label="label"),
                               feature_columns=["x"])
    finally:
        spark.sql("DROP TABLE IF EXISTS default.churn_events")


@pytest.mark.spark
def test_deletion_vectors_go_through_spark(spark, tmp_path):
    path = str(tmp_path / "dv")
    (spark.createDataFrame(_rows(range(100)), SCHEMA).coalesce(1).write.format("delta")
     .option("delta.enableDeletionVectors", "true").save(path))
    _delete(spark, path, "id < 30")
    loaded = load_training_data(spark, DataSpec(path=path, label="label"),
                                feature_columns=["id", "x"])
    assert loaded.lineage["read_path"] == SPARK_ARROW
    assert "deletion" in loaded.lineage["read_path_reason"].lower()
    assert sorted(loaded.X["id"]) == list(range(30, 100))


@pytest.mark.spark
def test_column_mapping_rename_goes_through_spark(spark, tmp_path):
    path = str(tmp_path / "cm")
    (spark.createDataFrame(_rows(range(50)), SCHEMA).write.format("delta")
     .option("delta.columnMapping.mode", "name").option("delta.minReaderVersion", "2")
     .option("delta.minWriterVersion", "5").save(path))
    spark.sql(f"ALTER TABLE delta.`{path}` RENAME COLUMN x TO x_renamed")
    loaded = load_training_data(spark, DataSpec(path=path, label="label"),
                                feature_columns=["id", "x_renamed"])
    assert loaded.lineage["read_path"] == SPARK_ARROW
    _assert_same_rows(loaded, _oracle(spark, path, ["id", "x_renamed", "label"]))


@pytest.mark.spark
def test_partition_columns_go_through_spark_only_when_needed(spark, tmp_path):
    path = str(tmp_path / "parts")
    (spark.createDataFrame(_rows(range(60)), SCHEMA).write.format("delta")
     .partitionBy("cat").save(path))
    with_part = load_training_data(spark, DataSpec(path=path, label="label"),
                                   feature_columns=["id", "cat"])
    assert with_part.lineage["read_path"] == SPARK_ARROW
    assert "cat" in with_part.lineage["read_path_reason"]
    _assert_same_rows(with_part, _oracle(spark, path, ["id", "cat", "label"]))
    without = load_training_data(spark, DataSpec(path=path, label="label"),
                                 feature_columns=["id", "x"])
    assert without.lineage["read_path"] == ARROW_FILES
    _assert_same_rows(without, _oracle(spark, path, ["id", "x", "label"]))


@pytest.mark.spark
def test_added_column_in_newer_files_goes_through_spark(spark, tmp_path):
    path = str(tmp_path / "evolved")
    spark.createDataFrame(_rows(range(10)), SCHEMA).write.format("delta").save(path)
    (spark.createDataFrame(_rows(range(10, 20)), SCHEMA).selectExpr("*", "id * 3 AS extra")
     .write.format("delta").mode("append").option("mergeSchema", "true").save(path))
    loaded = load_training_data(spark, DataSpec(path=path, label="label"),
                                feature_columns=["id", "extra"])
    assert loaded.lineage["read_path"] == SPARK_ARROW
    _assert_same_rows(loaded, _oracle(spark, path, ["id", "extra", "label"]))
    assert loaded.X["extra"].isna().sum() == 10
