"""Point-in-time correct training sets from Delta feature tables.

:func:`build_training_set` reads a label table (keys, an event time, the
label) and joins each lookup's feature table to it:

* with a ``timestamp_key``, each label row gets the **latest feature row with
  the same keys whose time is at or before the label's time** (a tie counts)
  and, with a ``lookback``, no older than that; no such row gives nulls, and a
  feature row later than the label is never used;
* without one, the feature table has one row per key and is joined on the keys.

Everything runs as Spark joins and windows on the cluster; only the finished
training set (its feature columns and the label) is collected to the driver.
A point-in-time lookup is one union of label and feature rows, partitioned by
the keys and ordered by time, over which a running ``last(..., ignorenulls)``
carries the latest feature row forward: one shuffle and one sort per lookup,
linear in the rows, with no range join that could multiply them.

Every problem that can be found before the join is reported before it: a
missing table or column (with did-you-mean), keys whose types differ, a
feature name that appears twice after renames, a feature table with more
than one row per (keys, time), a training set too large for the driver.

Backends (:func:`choose_backend`): on Databricks (``DATABRICKS_RUNTIME_VERSION``
set) with ``databricks-feature-engineering`` importable and every lookup naming
a Unity Catalog table (``catalog.schema.table``, no pinned ``version``), the
same spec drives ``FeatureEngineeringClient.create_training_set`` with
``FeatureLookup`` objects built by :func:`build_feature_lookups`; anywhere else
the Spark implementation here is used. The checks above run for both.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    DataError,
    DataTooLargeError,
    MissingColumnError,
    SpecError,
    StepError,
)
from orchestrator.io.arrow import ARROW_TO_PANDAS, normalize_arrow
from orchestrator.io.delta import (
    open_delta_source,
    read_version,
    resolve_version,
    spark_error_message,
    spark_errors,
)
from orchestrator.io.progress import spark_progress
from orchestrator.io.sizing import (
    available_memory_bytes,
    default_max_driver_bytes,
    estimate_frame_bytes,
)
from orchestrator.io.training_data import LoadedData
from orchestrator.specs.data import DataSpec
from orchestrator.specs.feature_store import FeatureLookupSpec, FeatureStoreSpec

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

__all__ = [
    "build_training_set",
    "build_feature_lookups",
    "choose_backend",
    "is_unity_catalog_name",
    "SPARK_BACKEND",
    "DATABRICKS_BACKEND",
]

SPARK_BACKEND = "spark"
DATABRICKS_BACKEND = "databricks"
WHERE = "feature_store_spec"

#: Spark types a timestamp column may have (dates count as midnight).
TIME_TYPES = frozenset({"timestamp", "timestamp_ntz", "date"})
#: Spark types Arrow can sort on, used to give the collected rows a stable order.
_SORTABLE_TYPES = frozenset({"boolean", "byte", "short", "integer", "long", "float", "double",
                             "string", "date", "timestamp", "timestamp_ntz", "decimal"})
_PREFIX = "__fs_"
_DUPLICATE_EXAMPLES = 3


# --------------------------------------------------------------------------- backend choice


def is_unity_catalog_name(name: str | None) -> bool:
    """True for a three-part ``catalog.schema.table`` name (backticks allowed).

    Examples
    --------
    >>> is_unity_catalog_name("main.ml.customer_features"), is_unity_catalog_name("features")
    (True, False)
    """
    if not name:
        return False
    parts = name.replace("`", "").split(".")
    return len(parts) == 3 and all(part.strip() for part in parts)


def choose_backend(spec: FeatureStoreSpec, *, client_available: bool,
                   runtime_version: str | None) -> tuple[str, str]:
    """Decide who builds the training set: Databricks Feature Engineering or Spark here.

    The rule: Databricks when ``runtime_version`` is set (``DATABRICKS_RUNTIME_VERSION``),
    ``databricks.feature_engineering`` is importable, and every lookup names a
    Unity Catalog table (``catalog.schema.table``) without a pinned
    ``version`` (the client always reads the latest one). Otherwise Spark.

    Parameters
    ----------
    spec : FeatureStoreSpec
    client_available : bool
        Whether ``databricks.feature_engineering`` can be imported.
    runtime_version : str or None
        The value of ``DATABRICKS_RUNTIME_VERSION``.

    Returns
    -------
    (str, str)
        :data:`DATABRICKS_BACKEND` or :data:`SPARK_BACKEND`, and the reason.

    Examples
    --------
    >>> from orchestrator.specs.feature_store import FeatureLookupSpec, LabelsSpec
    >>> spec = FeatureStoreSpec(labels=LabelsSpec(path="l", keys=("id",), label="y"),
    ...                         lookups=(FeatureLookupSpec(table="main.ml.f", keys=("id",)),))
    >>> choose_backend(spec, client_available=True, runtime_version=None)[0]
    'spark'
    >>> choose_backend(spec, client_available=True, runtime_version="15.4")[0]
    'databricks'
    """
    if not runtime_version:
        return SPARK_BACKEND, "not on Databricks (DATABRICKS_RUNTIME_VERSION is not set)"
    if not client_available:
        return SPARK_BACKEND, "databricks.feature_engineering is not installed"
    for index, lookup in enumerate(spec.lookups):
        if lookup.table is None:
            return SPARK_BACKEND, f"lookups[{index}] reads a path, not a Unity Catalog table"
        if not is_unity_catalog_name(lookup.table):
            return SPARK_BACKEND, (f"lookups[{index}] table {lookup.table!r} is not a "
                                   "Unity Catalog name (catalog.schema.table)")
        if lookup.version is not None:
            return SPARK_BACKEND, (f"lookups[{index}] pins version {lookup.version}; the "
                                   "Feature Engineering client reads the latest version")
    return DATABRICKS_BACKEND, ("on Databricks with databricks.feature_engineering and Unity "
                                "Catalog feature tables")


def _client_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("databricks.feature_engineering") is not None
    except (ImportError, ValueError):
        return False


def build_feature_lookups(spec: FeatureStoreSpec) -> list[Any]:
    """``databricks.feature_engineering.FeatureLookup`` objects for the spec's lookups.

    The spec's words map one to one: ``lookup_key`` is ``labels.keys`` (the label
    table's columns, matched in order to the feature table's primary keys
    declared in Unity Catalog), ``timestamp_lookup_key`` is ``labels.timestamp``
    for lookups with a ``timestamp_key`` (the feature table's time-series
    column), ``feature_names``, ``rename_outputs`` and ``lookback_window``.

    Parameters
    ----------
    spec : FeatureStoreSpec

    Returns
    -------
    list of FeatureLookup

    Raises
    ------
    StepError
        When ``databricks-feature-engineering`` is not installed.

    Examples
    --------
    >>> lookups = build_feature_lookups(spec)  # doctest: +SKIP
    >>> lookups[0].timestamp_lookup_key  # doctest: +SKIP
    'event_ts'
    """
    import datetime

    try:
        from databricks.feature_engineering import FeatureLookup
    except ImportError as exc:
        raise StepError("feature_store_spec: the Databricks backend needs "
                        "databricks-feature-engineering (pip install "
                        "databricks-feature-engineering).") from exc
    lookups = []
    for lookup in spec.lookups:
        point_in_time = lookup.timestamp_key is not None
        lookups.append(FeatureLookup(
            table_name=str(lookup.table),
            lookup_key=list(spec.labels.keys),
            feature_names=list(lookup.features) if lookup.features is not None else None,
            rename_outputs=dict(lookup.rename) or None,
            timestamp_lookup_key=spec.labels.timestamp if point_in_time else None,
            lookback_window=(datetime.timedelta(seconds=lookup.lookback_seconds)
                             if lookup.lookback_seconds is not None else None),
        ))
    return lookups


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Table:
    role: str          # "labels" | "lookup"
    where: str         # e.g. "feature_store_spec.lookups[0]"
    source: Any        # orchestrator.io.training_data.DeltaSource
    version: int
    df: Any            # pyspark DataFrame at that version

    @property
    def described(self) -> str:
        return f"{self.where} ({self.source.location}, version {self.version})"


@dataclass(frozen=True)
class _LookupPlan:
    index: int
    spec: FeatureLookupSpec
    table: _Table
    features: tuple[str, ...]       # feature table columns
    outputs: tuple[str, ...]        # their names in the training set

    @property
    def matched_column(self) -> str:
        return f"{_PREFIX}matched_{self.index}"


def _open(spark, where: str, role: str, path: str | None, table: str | None,
          version: int | None) -> _Table:
    source = open_delta_source(spark, DataSpec(path=path, table=table, version=version), where=where)
    resolved = resolve_version(spark, source, DataSpec(path=path, table=table, version=version),
                                where=where)
    try:
        df = read_version(spark, source, resolved)
    except spark_errors() as exc:
        raise DataError(f"{where} ({source.location}, version {resolved}): cannot read the "
                        f"table: {spark_error_message(exc)}") from exc
    return _Table(role=role, where=where, source=source, version=resolved, df=df)


def _require_columns(table: _Table, names: Sequence[str | None], what: str) -> None:
    available = table.df.columns
    missing = [n for n in dict.fromkeys(names) if n is not None and n not in available]
    if missing:
        raise MissingColumnError(missing, available, where=f"{table.described} {what}")


def _type_name(table: _Table, column: str) -> str:
    return table.df.schema[column].dataType.simpleString()


def _check_time_type(table: _Table, column: str, key: str) -> None:
    kind = table.df.schema[column].dataType.typeName()
    if kind not in TIME_TYPES:
        raise DataError(f"{table.described}: the {key} column {column!r} has type "
                        f"{_type_name(table, column)}; a point-in-time lookup needs a timestamp "
                        "or date column (cast it, e.g. to_timestamp(...), when writing the table).")


def _plan(spec: FeatureStoreSpec, labels: _Table, lookups: Sequence[_Table]) -> list[_LookupPlan]:
    """Check names and types against the schemas; the training set's columns per lookup."""
    label_spec = spec.labels
    _require_columns(labels, [*label_spec.keys, label_spec.timestamp, label_spec.label],
                     "(labels: keys, timestamp, label)")
    plans = []
    owners = {name: "the labels table" for name in labels.df.columns}
    for index, (lookup, table) in enumerate(zip(spec.lookups, lookups)):
        _require_columns(table, [*lookup.keys, lookup.timestamp_key], "(keys, timestamp_key)")
        for label_key, lookup_key in zip(label_spec.keys, lookup.keys):
            left, right = (labels.df.schema[label_key].dataType,
                           table.df.schema[lookup_key].dataType)
            if left != right:
                raise DataError(
                    f"{table.where}.keys: key types differ: labels column {label_key!r} is "
                    f"{left.simpleString()} but {lookup_key!r} in {table.source.location} is "
                    f"{right.simpleString()}; keys are matched exactly, so write both with one "
                    "type (or cast one when creating the table).")
        if lookup.timestamp_key is not None:
            if label_spec.timestamp is None:
                raise SpecError([f"{table.where}.timestamp_key: a point-in-time lookup needs "
                                 "labels.timestamp (each label row's event time)."])
            _check_time_type(labels, label_spec.timestamp, "labels timestamp")
            _check_time_type(table, lookup.timestamp_key, "timestamp_key")
        reserved = {*lookup.keys, lookup.timestamp_key}
        if lookup.features is not None:
            features = tuple(lookup.features)
            _require_columns(table, features, "(features)")
        else:
            features = tuple(c for c in table.df.columns if c not in reserved)
            if not features:
                raise DataError(f"{table.described}: no feature columns besides the keys and "
                                "the timestamp_key.")
        unknown_renames = [name for name in lookup.rename if name not in features]
        if unknown_renames:
            raise MissingColumnError(unknown_renames, features,
                                     where=f"{table.described} rename (the lookup's features)")
        outputs = tuple(lookup.output_name(f) for f in features)
        for feature, output in zip(features, outputs):
            if output in owners:
                renamed = f" (renamed from {feature!r})" if output != feature else ""
                raise DataError(
                    f"{table.where}: feature {output!r}{renamed} would appear twice in the "
                    f"training set: {owners[output]} has it too. Give one of them another name "
                    f"with rename: {{{feature}: <new name>}} in {table.where}, or leave it out "
                    "of its features.")
            owners[output] = f"{table.where} ({table.source.location})"
        plans.append(_LookupPlan(index=index, spec=lookup, table=table, features=features,
                                 outputs=outputs))
    return plans


def _training_set_columns(labels: _Table, plans: Sequence[_LookupPlan],
                          exclude: Sequence[str]) -> list[str]:
    columns = [*labels.df.columns, *(o for plan in plans for o in plan.outputs)]
    missing = [c for c in exclude if c not in columns]
    if missing:
        raise MissingColumnError(missing, columns,
                                 where=f"{WHERE}.exclude_columns (the training set)")
    return [c for c in columns if c not in exclude]


def _x_columns(spec: FeatureStoreSpec, training_columns: Sequence[str],
               feature_columns: Sequence[str] | None) -> list[str]:
    label = spec.labels.label
    if feature_columns is None:
        return [c for c in training_columns if c != label]
    features = list(dict.fromkeys(feature_columns))
    if label in features:
        raise SpecError([f"feature_specs: the label column {label!r} is also used as a "
                         "feature; remove it from the feature specs."])
    missing = [c for c in features if c not in training_columns]
    if missing:
        raise MissingColumnError(missing, [c for c in training_columns if c != label],
                                 where=f"feature_specs (the columns of the {WHERE} training set)")
    return features


def _count_and_check_unique(plan: _LookupPlan) -> int:
    """Rows of the feature table; raise when a (keys[, time]) value has several rows."""
    from pyspark.sql import functions as F

    spec, table = plan.spec, plan.table
    group = [*spec.keys, *([spec.timestamp_key] if spec.timestamp_key else [])]
    counted = table.df.groupBy(*[_col(c) for c in group]).count()
    # Rows with a null key or time never match a label row, so they may repeat.
    complete = F.lit(True)
    for name in group:
        complete = complete & _col(name).isNotNull()
    repeated = complete & (F.col("count") > 1)
    try:
        row = counted.agg(F.sum("count").alias("rows"),
                          F.count(F.when(repeated, True)).alias("duplicates")).first()
    except spark_errors() as exc:
        raise DataError(f"{table.described}: checking the feature table failed: "
                        f"{spark_error_message(exc)}") from exc
    rows, duplicates = int(row["rows"] or 0), int(row["duplicates"] or 0)
    if duplicates:
        examples = (counted.where(repeated).orderBy(F.col("count").desc())
                    .limit(_DUPLICATE_EXAMPLES).collect())
        shown = "; ".join(", ".join(f"{c}={r[c]!r}" for c in group) + f" ({r['count']} rows)"
                          for r in examples)
        what = "(keys, timestamp_key)" if spec.timestamp_key else "key"
        need = ("one row per key and time" if spec.timestamp_key
                else "one row per key (an exact-key join would repeat label rows)")
        raise DataError(
            f"{table.described}: {duplicates:,} {what} value(s) {group} have more than one row, "
            f"e.g. {shown}. A lookup needs {need}; deduplicate the feature table (keep one row "
            "per key and time)" + ("" if spec.timestamp_key else
                                   ", or give its time column as timestamp_key") + ".")
    return rows


# --------------------------------------------------------------------------- Spark joins


def _col(name: str):
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _point_in_time_join(rows: DataFrame, plan: _LookupPlan, label_keys: Sequence[str],
                        label_ts: str) -> DataFrame:
    """``rows`` plus the lookup's outputs: the latest feature row at or before each row's time.

    Label and feature rows are unioned, partitioned by the keys and sorted by
    time with feature rows first on ties; a running ``last(ignorenulls)``
    carries the latest feature row (as one struct, so genuine null features
    are kept) onto each label row.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spec, table = plan.spec, plan.table
    keys = [f"{_PREFIX}k{i}" for i in range(len(label_keys))]
    ts, kind, row, feat, found = (f"{_PREFIX}ts", f"{_PREFIX}kind", f"{_PREFIX}row",
                                  f"{_PREFIX}feat", f"{_PREFIX}found")
    feat_ts = f"{_PREFIX}feat_ts"
    feature_df = table.df
    feature_struct = F.struct(_col(str(spec.timestamp_key)).cast("timestamp").alias(feat_ts),
                              *[_col(f).alias(o) for f, o in zip(plan.features, plan.outputs)])
    feat_type = feature_df.select(feature_struct.alias(feat)).schema[feat].dataType
    row_struct = F.struct(*[_col(c).alias(c) for c in rows.columns])
    row_type = rows.select(row_struct.alias(row)).schema[row].dataType
    if not isinstance(row_type, T.StructType) or not isinstance(feat_type, T.StructType):
        raise StepError("feature store: unexpected struct types while planning the join.")

    left = rows.select(*[_col(k).alias(a) for k, a in zip(label_keys, keys)],
                       _col(label_ts).cast("timestamp").alias(ts),
                       F.lit(1).alias(kind), row_struct.alias(row),
                       F.lit(None).cast(feat_type).alias(feat))
    # A feature row without keys or time can never be "the same keys at or before".
    usable = F.lit(True)
    for name in [*spec.keys, str(spec.timestamp_key)]:
        usable = usable & _col(name).isNotNull()
    right = feature_df.where(usable).select(
        *[_col(k).alias(a) for k, a in zip(spec.keys, keys)],
        _col(str(spec.timestamp_key)).cast("timestamp").alias(ts),
        F.lit(0).alias(kind), F.lit(None).cast(row_type).alias(row), feature_struct.alias(feat))

    window = (Window.partitionBy(*[F.col(k) for k in keys])
              .orderBy(F.col(ts).asc_nulls_first(), F.col(kind))
              .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    joined = (left.unionByName(right)
              .withColumn(found, F.last(F.col(feat), ignorenulls=True).over(window))
              .where(F.col(kind) == 1))
    matched = F.col(found).isNotNull()
    if spec.lookback_seconds is not None:
        age = F.unix_micros(F.col(ts)) - F.unix_micros(F.col(found).getField(feat_ts))
        matched = matched & (age <= F.lit(int(spec.lookback_seconds) * 1_000_000))
    return joined.select(
        f"{row}.*",
        *[F.when(matched, F.col(found).getField(o)).alias(o) for o in plan.outputs],
        F.coalesce(matched, F.lit(False)).alias(plan.matched_column))


def _exact_join(rows: DataFrame, plan: _LookupPlan, label_keys: Sequence[str]) -> DataFrame:
    """``rows`` left-joined on the keys to a feature table with one row per key."""
    from pyspark.sql import functions as F

    spec = plan.spec
    keys = [f"{_PREFIX}k{i}" for i in range(len(label_keys))]
    hit = f"{_PREFIX}hit"
    usable = F.lit(True)
    for name in spec.keys:
        usable = usable & _col(name).isNotNull()
    right = plan.table.df.where(usable).select(
        *[_col(k).alias(a) for k, a in zip(spec.keys, keys)],
        *[_col(f).alias(o) for f, o in zip(plan.features, plan.outputs)],
        F.lit(True).alias(hit))
    condition = None
    for label_key, alias in zip(label_keys, keys):
        term = rows[f"`{label_key}`"] == right[alias]
        condition = term if condition is None else condition & term
    joined = rows.join(right, on=condition, how="left")
    return joined.select(*[_col(c) for c in rows.columns], *[_col(o) for o in plan.outputs],
                         F.coalesce(F.col(hit), F.lit(False)).alias(plan.matched_column))


def _spark_training_set(spec: FeatureStoreSpec, labels: _Table,
                        plans: Sequence[_LookupPlan]) -> DataFrame:
    rows = labels.df
    for plan in plans:
        if plan.spec.timestamp_key is not None:
            rows = _point_in_time_join(rows, plan, spec.labels.keys, str(spec.labels.timestamp))
        else:
            rows = _exact_join(rows, plan, spec.labels.keys)
    return rows


def _databricks_training_set(spec: FeatureStoreSpec, labels: _Table) -> DataFrame:
    from databricks.feature_engineering import FeatureEngineeringClient

    lookups = build_feature_lookups(spec)
    try:
        # exclude_columns is applied by selecting the training set's columns afterwards,
        # as on the Spark path, so that the rows can still be ordered by the label time.
        training_set = FeatureEngineeringClient().create_training_set(
            df=labels.df, feature_lookups=lookups, label=spec.labels.label)
        return training_set.load_df()
    except (ValueError, TypeError, *spark_errors()) as exc:
        raise StepError(f"{WHERE}: Databricks Feature Engineering could not build the training "
                        f"set: {spark_error_message(exc)}") from exc


# --------------------------------------------------------------------------- collection


def _collect(df: DataFrame, columns: Sequence[str], order: Sequence[str], where: str):
    """The columns as one Arrow table on the driver, in a stable row order."""
    import pyarrow.compute as pc

    selected = df.select(*[_col(c) for c in columns])
    try:
        table = selected.toArrow()
    except spark_errors() as exc:
        if "maxResultSize" in str(exc):
            raise DataTooLargeError(f"{where}: the training set exceeds "
                                    "spark.driver.maxResultSize; raise it or train on fewer "
                                    "label rows.") from exc
        raise DataError(f"{where}: building the training set failed: "
                        f"{spark_error_message(exc)}") from exc
    fields = [selected.schema[c] for c in columns]
    table = normalize_arrow(table, fields, df.sparkSession.conf.get("spark.sql.session.timeZone"))
    # Spark's shuffle order is not stable between runs; cross-validation folds should be.
    # (Nulls sort last, Arrow's default.)
    sort_keys = [(c, "ascending") for c in order]
    if sort_keys and table.num_rows > 1:
        table = table.take(pc.sort_indices(table, sort_keys=sort_keys))
    return table


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def build_training_set(spark, spec: FeatureStoreSpec, *,
                       feature_columns: Sequence[str] | None = None,
                       max_driver_bytes: int | None = None,
                       extra_columns: Sequence[str] = ()) -> LoadedData:
    """Build a point-in-time correct training set and load it into pandas.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session (tables are read through Spark and Delta).
    spec : FeatureStoreSpec
        The label table, the lookups and ``exclude_columns``.
    feature_columns : sequence of str, optional
        Columns of the training set the feature specs use, loaded as ``X``;
        every column but the label and the excluded ones when None.
    max_driver_bytes : int, optional
        Largest frame to collect; default a quarter of the driver's available memory.
    extra_columns : sequence of str
        Label-table columns that may be asked for in ``feature_columns`` although
        ``exclude_columns`` leaves them out (a validation's ordering or grouping column).

    Returns
    -------
    LoadedData
        ``X`` (the feature columns), ``y`` (the label) and ``lineage``:
        ``tables`` holds one entry per table read (``role`` "labels" or
        "lookup", ``location``, ``delta_version``, ``row_count``, and for
        lookups ``matched_rows``, the label rows that found a feature row),
        plus ``backend``, ``row_count``, ``columns``, ``label``...

    Raises
    ------
    MissingTableError
        A label or feature table does not exist (with a did-you-mean).
    MissingColumnError
        A key, timestamp, label, feature, renamed or excluded column, or a
        column of the feature specs, is not there.
    DataError
        Keys whose types differ, a timestamp that is not a time, a feature
        name twice in the training set, a feature table with several rows per
        (keys, time), null labels.
    DataTooLargeError
        The training set would not fit the driver.
    SpecError
        The label is also used as a feature.

    Examples
    --------
    >>> from orchestrator.specs import Problems
    >>> from orchestrator.specs.feature_store import parse_feature_store_spec
    >>> spec = parse_feature_store_spec({
    ...     "labels": {"path": "data/demo/churn_labels", "keys": ["customer_id"],
    ...                "timestamp": "event_ts", "label": "churned"},
    ...     "lookups": [{"path": "data/demo/customer_features", "keys": ["customer_id"],
    ...                  "timestamp_key": "as_of_ts", "lookback": "90d"}]}, Problems())
    >>> loaded = build_training_set(spark, spec, feature_columns=["logins_30d"])  # doctest: +SKIP
    >>> loaded.lineage["tables"][1]["delta_version"]  # doctest: +SKIP
    0
    """
    started = time.perf_counter()
    label = spec.labels.label
    labels = _open(spark, f"{WHERE}.labels", "labels", spec.labels.path, spec.labels.table,
                   spec.labels.version)
    lookups = [_open(spark, f"{WHERE}.lookups[{i}]", "lookup", lookup.path, lookup.table,
                     lookup.version) for i, lookup in enumerate(spec.lookups)]
    plans = _plan(spec, labels, lookups)
    training_columns = _training_set_columns(labels, plans, spec.exclude_columns)
    # Columns of the label table a validation orders or groups by (e.g. the event time) may be
    # loaded although exclude_columns keeps them out of the training set's features.
    loadable = [*training_columns, *(c for c in extra_columns
                                     if c in labels.df.columns and c not in training_columns)]
    x_columns = _x_columns(spec, loadable, feature_columns)

    backend, reason = choose_backend(spec, client_available=_client_available(),
                                     runtime_version=os.environ.get("DATABRICKS_RUNTIME_VERSION"))
    try:
        label_rows = labels.df.count()
    except spark_errors() as exc:
        raise DataError(f"{labels.described}: counting the rows failed: "
                        f"{spark_error_message(exc)}") from exc
    feature_rows = [_count_and_check_unique(plan) for plan in plans]

    order = [c for c in dict.fromkeys([*spec.labels.keys, spec.labels.timestamp, label,
                                       *(c for c in x_columns if c in labels.df.columns)])
             if c is not None
             and labels.df.schema[c].dataType.typeName() in _SORTABLE_TYPES]
    flags = [plan.matched_column for plan in plans] if backend == SPARK_BACKEND else []
    collected = list(dict.fromkeys([*x_columns, label, *order]))
    types = [labels.df.schema[c].dataType.typeName() if c in labels.df.columns else "double"
             for c in collected]
    output_types = {o: p.table.df.schema[f].dataType.typeName()
                    for p in plans for f, o in zip(p.features, p.outputs)}
    types = [output_types.get(c, t) for c, t in zip(collected, types)] + ["boolean"] * len(flags)
    estimate = estimate_frame_bytes(label_rows, types)
    limit = (max_driver_bytes if max_driver_bytes is not None
             else default_max_driver_bytes(available_memory_bytes()))
    if estimate > limit:
        raise DataTooLargeError(
            f"{WHERE}: the training set ({label_rows:,} label rows x {len(collected)} columns) "
            f"would take about {_size(estimate)} on the driver, over the limit of "
            f"{_size(limit)}; train on fewer label rows (e.g. a filtered label table) or fewer "
            "feature columns.")

    logger.info("Building the training set of %d label rows with %d lookup(s) via %s (%s)",
                label_rows, len(plans), backend, reason)
    if backend == DATABRICKS_BACKEND:
        joined = _databricks_training_set(spec, labels)
    else:
        joined = _spark_training_set(spec, labels, plans)
    # The join runs here, in one action: on a large label table, minutes.
    with spark_progress(spark, f"point-in-time join of {label_rows:,} label rows"):
        table = _collect(joined, [*collected, *flags], order, WHERE)

    matched = {flag: int(table.column(flag).to_numpy(zero_copy_only=False).sum())
               for flag in flags}
    y = table.column(label).to_pandas(**ARROW_TO_PANDAS).rename(label)
    X = table.select(x_columns).to_pandas(split_blocks=True, **ARROW_TO_PANDAS)
    del table
    null_labels = int(y.isna().sum())
    if null_labels:
        raise DataError(f"{labels.described}: the label column {label!r} has {null_labels:,} "
                        f"null value(s) of {len(y):,}; drop those rows from the label table.")

    tables = [{"role": "labels", "source": labels.source.kind,
               "location": labels.source.location, "delta_version": labels.version,
               "row_count": int(label_rows), "keys": list(spec.labels.keys),
               "timestamp": spec.labels.timestamp}]
    for plan, rows in zip(plans, feature_rows):
        tables.append({
            "role": "lookup", "source": plan.table.source.kind,
            "location": plan.table.source.location, "delta_version": plan.table.version,
            "row_count": rows, "keys": list(plan.spec.keys),
            "timestamp_key": plan.spec.timestamp_key,
            "lookback_seconds": plan.spec.lookback_seconds,
            "features": dict(zip(plan.features, plan.outputs)),
            "matched_rows": matched.get(plan.matched_column),
        })
    lineage = {
        "source": "feature_store",
        "backend": backend,
        "backend_reason": reason,
        "location": labels.source.location,
        "delta_version": labels.version,
        "tables": tables,
        "columns": list(x_columns),
        "label": label,
        "exclude_columns": list(spec.exclude_columns),
        "training_set_columns": list(training_columns),
        "rows_in_source": int(label_rows),
        "row_count": len(X),
        "read_path": "spark-arrow",
        "bytes_estimate": int(estimate),
    }
    logger.info("Training set: %d rows x %d columns from %d table(s) in %.2fs", len(X),
                X.shape[1], len(tables), time.perf_counter() - started)
    return LoadedData(X=X, y=y, lineage=lineage)
