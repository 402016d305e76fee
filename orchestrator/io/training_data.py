"""Loading training rows from a Delta table into pandas on the driver.

:func:`load_training_data` reads a Delta table by path or metastore name, at a
pinned version (time travel by version or timestamp resolves to one), with
column projection, an optional Spark SQL filter and an optional seeded sample,
and returns the features, the label and a lineage record saying exactly what
was read.

Two read paths produce the same frame:

``arrow-files``
    Spark and Delta resolve the snapshot (version, file list, row count); the
    driver then reads those Parquet files itself with pyarrow, projected to the
    needed columns. Close to the cost of a plain pyarrow read, and used only
    when it is exact: local files, no filter or sample, no Delta feature that
    changes how files map to rows (deletion vectors, column mapping, ...), and
    file footers that agree with the snapshot.
``spark-arrow``
    Spark applies the filter and sample and sends Arrow batches to the driver
    (``DataFrame.toArrow``). Used for everything else.

Both convert Arrow to pandas the way ``DataFrame.toPandas`` does, so the frame
does not depend on the path. The deciding logic (which path, the driver memory
limit, the sample fraction, the size estimate) lives in small functions of
plain values.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    DataError,
    DataTooLargeError,
    MissingColumnError,
    SpecError,
)
from orchestrator.io.arrow import (
    ARROW_TO_PANDAS,
    FAST_PATH_TYPES,
    inspect_footers,
    normalize_arrow,
    read_parquet_files,
)
from orchestrator.io.delta import (
    DeltaSource,
    column,
    open_delta_source,
    read_version,
    resolve_version,
    snapshot_file_uris,
    spark_error_message,
    spark_errors,
)
from orchestrator.io.sizing import (
    available_memory_bytes,
    default_max_driver_bytes,
    estimate_frame_bytes,
    sample_fraction,
    too_large_message,
)
from orchestrator.specs.data import DataSpec

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "LoadedData",
    "load_training_data",
    "ARROW_FILES",
    "SPARK_ARROW",
    "choose_read_path",
]

ARROW_FILES = "arrow-files"
SPARK_ARROW = "spark-arrow"

#: Delta table features under which a snapshot's Parquet files, read as they are,
#: hold exactly the table's rows and columns. Anything else (deletionVectors,
#: columnMapping, typeWidening, variantType, ...) sends the read through Spark.
SAFE_TABLE_FEATURES = frozenset({
    "appendOnly", "invariants", "checkConstraints", "changeDataFeed", "generatedColumns",
    "identityColumns", "timestampNtz", "domainMetadata", "v2Checkpoint", "vacuumProtocolCheck",
    "inCommitTimestamp", "rowTracking", "clustering", "allowColumnDefaults",
})


_HASH_COLUMN = "__orchestrator_sample_hash"
_ORDER_COLUMN = "__orchestrator_file_order"


@dataclass(frozen=True)
class LoadedData:
    """Rows loaded for training.

    Attributes
    ----------
    X : pandas.DataFrame
        The feature columns (or ``data_spec.columns`` when given), in that order.
    y : pandas.Series
        The label column.
    lineage : dict
        Where the rows came from: ``source`` ("path" or "table"), ``location``,
        ``delta_version`` (the version actually read), ``timestamp``, ``filter``,
        ``columns``, ``label``, ``rows_in_source``, ``row_count``, ``sampled``,
        ``sample_seed``, ``read_path`` ("arrow-files" or "spark-arrow"),
        ``read_path_reason`` and ``bytes_estimate``.
    """

    X: pd.DataFrame = field(repr=False)
    y: pd.Series = field(repr=False)
    lineage: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- pure decisions


def choose_read_path(*, file_uris: Sequence[str], has_filter: bool, sampled: bool,
                     table_features: Iterable[str], table_properties: Mapping[str, str],
                     min_reader_version: int, column_types: Mapping[str, str],
                     partition_columns: Iterable[str] = (),
                     column_metadata_flags: Iterable[str] = ()) -> tuple[str, str]:
    """Decide whether the driver may read the snapshot's Parquet files itself.

    Parameters
    ----------
    file_uris : sequence of str
        The snapshot's data files, as Spark reports them (``DataFrame.inputFiles``).
    has_filter, sampled : bool
        Whether a filter or a sample is applied (both are done by Spark).
    table_features : iterable of str
        Delta table features (``DESCRIBE DETAIL`` ``tableFeatures``).
    table_properties : mapping
        Delta table properties.
    min_reader_version : int
        The table protocol's minimum reader version.
    column_types : mapping of str to str
        Needed column name -> Spark type name.
    partition_columns : iterable of str
        The table's partition columns (their values are in the Delta log).
    column_metadata_flags : iterable of str
        Needed columns whose metadata changes how Spark reads them (char/varchar padding).

    Returns
    -------
    (str, str)
        ``ARROW_FILES`` or ``SPARK_ARROW``, and the reason.

    Examples
    --------
    >>> choose_read_path(file_uris=["file:/t/a.parquet"], has_filter=True, sampled=False,
    ...                  table_features=[], table_properties={}, min_reader_version=1,
    ...                  column_types={"x": "double"})
    ('spark-arrow', 'a filter is applied by Spark')
    """
    if has_filter:
        return SPARK_ARROW, "a filter is applied by Spark"
    if sampled:
        return SPARK_ARROW, "a sample is taken by Spark"
    unsafe = sorted(set(table_features) - SAFE_TABLE_FEATURES)
    if unsafe:
        return SPARK_ARROW, f"table features {', '.join(unsafe)} need Delta's reader"
    mapping_mode = table_properties.get("delta.columnMapping.mode", "none")
    if mapping_mode != "none" or min_reader_version == 2:
        return SPARK_ARROW, "column mapping needs Delta's reader"
    if table_properties.get("delta.enableDeletionVectors", "false").lower() == "true":
        return SPARK_ARROW, "deletion vectors need Delta's reader"
    if min_reader_version > 3:
        return SPARK_ARROW, f"reader protocol version {min_reader_version} is not known here"
    partition_needed = sorted(set(partition_columns) & set(column_types))
    if partition_needed:
        return SPARK_ARROW, (f"partition columns {', '.join(partition_needed)} are kept in the "
                             "Delta log, not in the files")
    odd = sorted(name for name, kind in column_types.items() if kind not in FAST_PATH_TYPES)
    if odd:
        return SPARK_ARROW, f"columns {', '.join(odd)} have types read through Spark"
    padded = sorted(column_metadata_flags)
    if padded:
        return SPARK_ARROW, f"char/varchar columns {', '.join(padded)} are padded by Spark"
    non_local = [uri for uri in file_uris if not uri.startswith("file:")]
    if non_local:
        return SPARK_ARROW, f"files are not on a local filesystem (e.g. {non_local[0]})"
    return ARROW_FILES, "local Parquet files of the snapshot, read with pyarrow"


# --------------------------------------------------------------------------- Spark edge


def _needed_columns(spec: DataSpec, feature_columns: Sequence[str]) -> list[str]:
    if spec.label is None:
        raise SpecError(["data_spec: missing required key 'label' (the column to predict)."])
    features = list(dict.fromkeys(feature_columns))
    if spec.label in features:
        raise SpecError([f"feature_specs: the label column {spec.label!r} is also used as a "
                         "feature; remove it from the feature specs."])
    if spec.columns:
        x_columns = [c for c in dict.fromkeys(spec.columns) if c != spec.label]
        left_out = [c for c in features if c not in x_columns]
        if left_out:
            raise MissingColumnError(left_out, x_columns,
                                     where="data_spec.columns (the feature specs use them)")
    else:
        x_columns = features
    if not x_columns:
        raise SpecError(["data_spec: no feature columns to load; name them in feature_specs "
                         "or data_spec.columns."])
    return x_columns


def _local_paths(uris: Sequence[str]) -> list[str] | None:
    from urllib.parse import unquote, urlparse

    paths = []
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            return None
        path = unquote(parsed.path)
        if not os.path.isfile(path):
            return None
        paths.append(path)
    # The canonical row order (see _in_file_order): files by name, rows as stored.
    return sorted(paths, key=os.path.basename)


def _in_file_order(df):
    """The rows ordered as the file read returns them: files by name, rows as stored.

    Spark's scan packs files into tasks by size, so its collect order differs
    from the driver's file-by-file read and cross-validation folds would depend
    on the read path. Delta exposes no row position, but within one task rows
    come in file order, so (file name, split start, a per-task increasing id)
    restores it.
    """
    from pyspark.sql import functions as F

    order = [F.col("_metadata.file_name"), F.col("_metadata.file_block_start"),
             F.monotonically_increasing_id()]
    return df.withColumn(_ORDER_COLUMN, F.struct(*order)).orderBy(_ORDER_COLUMN).drop(
        _ORDER_COLUMN)


def _sample(df, fraction: float, max_rows: int, seed: int):
    """Keep the ``max_rows`` rows with the smallest seeded hash (independent of partitioning)."""
    from pyspark.sql import functions as F

    hashable = [column(f.name) for f in df.schema.fields
                if f.dataType.typeName() != "map"]
    hashed = df.withColumn(_HASH_COLUMN, F.xxhash64(F.lit(seed), *hashable))
    # xxhash64 is uniform over signed 64-bit integers: keep those below the fraction's quantile.
    threshold = int(-(2**63) + fraction * (2**64 - 1))
    kept = hashed.where(F.col(_HASH_COLUMN) <= F.lit(threshold)) if fraction < 1.0 else hashed
    return kept.orderBy(_HASH_COLUMN).limit(max_rows).drop(_HASH_COLUMN)


def _plan_file_read(df, source: DeltaSource, fields, types, errors,
                    version: int) -> tuple[str, Any]:
    """(ARROW_FILES, file URIs) when the snapshot's files may be read directly, else (SPARK_ARROW, reason)."""
    detail = source.detail
    metadata_only = dict(
        has_filter=False, sampled=False,
        table_features=detail.get("tableFeatures") or [],
        table_properties=detail.get("properties") or {},
        min_reader_version=int(detail.get("minReaderVersion") or 1),
        column_types={f.name: t for f, t in zip(fields, types)},
        partition_columns=detail.get("partitionColumns") or [],
        column_metadata_flags=[f.name for f in fields
                               if "__CHAR_VARCHAR_TYPE_STRING" in (f.metadata or {})])
    # Table-level checks first: listing the files is the costly part.
    read_path, reason = choose_read_path(file_uris=[], **metadata_only)
    if read_path != ARROW_FILES:
        return read_path, reason
    try:
        file_uris = snapshot_file_uris(df, source, version)
    except errors as exc:
        return SPARK_ARROW, f"the file list is not available ({spark_error_message(exc)})"
    read_path, reason = choose_read_path(file_uris=file_uris, **metadata_only)
    return (read_path, file_uris) if read_path == ARROW_FILES else (read_path, reason)


def load_training_data(spark, data_spec: DataSpec, *, feature_columns: Sequence[str],
                       max_driver_bytes: int | None = None) -> LoadedData:
    """Load the training rows of a Delta table into pandas on the driver.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session (reads go through Spark and Delta).
    data_spec : DataSpec
        Which table (``path`` or ``table``), version or timestamp, ``label``,
        ``columns``, ``filter``, ``max_rows`` and ``sample_seed``.
    feature_columns : sequence of str
        Columns the feature specs use; loaded as ``X`` unless
        ``data_spec.columns`` is given (which must include them).
    max_driver_bytes : int, optional
        Largest frame to collect; default :func:`default_max_driver_bytes` of
        the driver's available memory.

    Returns
    -------
    LoadedData
        ``X``, ``y`` and ``lineage``.

    Raises
    ------
    MissingTableError
        No Delta table at the path, or no such table (with a did-you-mean).
    MissingColumnError
        A feature column or the label is not in the table.
    DataError
        The filter cannot be applied, the version or timestamp does not exist,
        or the label has nulls.
    DataTooLargeError
        The rows would not fit the driver and ``max_rows`` does not bring them under.
    SpecError
        No label, the label used as a feature, or an unparsable timestamp.

    Examples
    --------
    >>> spec = DataSpec(path="data/demo/churn", label="churned", max_rows=100_000)
    >>> loaded = load_training_data(spark, spec, feature_columns=["age", "plan"])  # doctest: +SKIP
    >>> loaded.lineage["delta_version"]  # doctest: +SKIP
    3
    """
    started = time.perf_counter()
    x_columns = _needed_columns(data_spec, feature_columns)
    label = str(data_spec.label)
    errors = spark_errors()

    source = open_delta_source(spark, data_spec)
    version = resolve_version(spark, source, data_spec)
    where = f"data_spec ({source.location}, version {version})"
    try:
        df = read_version(spark, source, version)
    except errors as exc:
        raise DataError(f"{where}: cannot read the table: {spark_error_message(exc)}") from exc

    available = df.columns
    missing = [c for c in [*x_columns, label] if c not in available]
    if missing:
        raise MissingColumnError(missing, available, where=where)
    needed = [*x_columns, label]

    filtered = df
    if data_spec.filter is not None:
        try:
            filtered = df.where(data_spec.filter)
            # Spark Connect analyses a plan only when asked (and knows a filter's schema
            # without asking): isLocal has the server analyse it now, so a bad filter is
            # reported as one. Classic Spark analysed it in where already.
            filtered.isLocal()
        except errors as exc:
            raise DataError(f"data_spec.filter: cannot apply {data_spec.filter!r} to "
                            f"{source.location}: {spark_error_message(exc)}") from exc

    fields = [df.schema[c] for c in needed]
    types = [f.dataType.typeName() for f in fields]
    session_tz = spark.conf.get("spark.sql.session.timeZone")

    # The file read is decided first: when it applies, the footers give the row
    # count without a Spark job.
    if data_spec.filter is not None:
        read_path, reason = SPARK_ARROW, "a filter is applied by Spark"
    else:
        read_path, reason = _plan_file_read(df, source, fields, types, errors, version)
    paths: list[str] | None = None
    row_count: int | None = None
    if read_path == ARROW_FILES:
        paths = _local_paths(reason)
        if paths is None:
            read_path, reason = SPARK_ARROW, "data files are not readable from the driver"
        else:
            row_count, why_not = inspect_footers(paths, needed)
            if row_count is None:
                read_path, reason = SPARK_ARROW, why_not
            else:
                reason = "local Parquet files of the snapshot, read with pyarrow"
    if row_count is None:
        try:
            row_count = filtered.count()
        except errors as exc:
            what = "the filter " + repr(data_spec.filter) if data_spec.filter else "the table"
            raise DataError(f"{where}: counting the rows of {what} failed: "
                            f"{spark_error_message(exc)}") from exc
    rows_in_source = row_count
    if data_spec.filter is not None:
        try:
            rows_in_source = df.count()
        except errors as exc:
            raise DataError(f"{where}: counting the rows failed: {spark_error_message(exc)}") from exc

    row_width = estimate_frame_bytes(1, types)
    fraction = sample_fraction(row_count, data_spec.max_rows)
    rows_to_load = row_count if fraction is None else int(data_spec.max_rows)
    estimate = estimate_frame_bytes(rows_to_load, types)
    limit = (max_driver_bytes if max_driver_bytes is not None
             else default_max_driver_bytes(available_memory_bytes()))
    if estimate > limit:
        raise DataTooLargeError(too_large_message(
            location=source.location, estimate=estimate, limit=limit, row_count=rows_to_load,
            row_width=row_width, limit_given=max_driver_bytes is not None))
    if fraction is not None:
        read_path, reason = SPARK_ARROW, "a sample is taken by Spark"

    table = read_parquet_files(paths, needed) if read_path == ARROW_FILES else None
    if table is None:
        rows = _in_file_order(filtered)
        if fraction is not None:
            # Hash every source column, so the same seed keeps the same rows
            # whichever columns are projected.
            rows = _sample(filtered, fraction, int(data_spec.max_rows), data_spec.sample_seed)
        try:
            table = rows.select(*[column(c) for c in needed]).toArrow()
        except errors as exc:
            if "maxResultSize" in str(exc):
                raise DataTooLargeError(
                    f"{where}: the rows exceed spark.driver.maxResultSize; set data_spec.max_rows "
                    "or raise spark.driver.maxResultSize.") from exc
            raise DataError(f"{where}: reading the rows failed: {spark_error_message(exc)}") from exc

    # Rebinding `table` drops the previous Arrow data, and self_destruct frees
    # each column once converted: peak memory stays near one copy of the data.
    table = normalize_arrow(table, fields, session_tz)
    y = table.column(label).to_pandas(**ARROW_TO_PANDAS).rename(label)
    table = table.drop_columns([label])
    X = table.to_pandas(split_blocks=True, self_destruct=True, **ARROW_TO_PANDAS)
    del table
    null_labels = int(y.isna().sum())
    if null_labels:
        raise DataError(f"{where}: the label column {label!r} has {null_labels:,} null value(s) "
                        f"of {len(y):,}; drop them with a filter such as "
                        f"filter: \"{label} IS NOT NULL\".")

    lineage = {
        "source": source.kind,
        "location": source.location,
        "delta_version": version,
        "timestamp": data_spec.timestamp,
        "filter": data_spec.filter,
        "columns": list(x_columns),
        "label": label,
        "rows_in_source": int(rows_in_source),
        "row_count": len(X),
        "sampled": fraction is not None,
        "sample_seed": data_spec.sample_seed if fraction is not None else None,
        "read_path": read_path,
        "read_path_reason": reason,
        "bytes_estimate": int(estimate),
    }
    logger.info("Loaded %d rows x %d columns from %s (Delta version %d) via %s (%s) in %.2fs",
                len(X), X.shape[1], source.location, version, read_path, reason,
                time.perf_counter() - started)
    return LoadedData(X=X, y=y, lineage=lineage)
