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

import difflib
import logging
import math
import os
from pathlib import Path
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    DataError,
    DataTooLargeError,
    MissingColumnError,
    MissingTableError,
    SpecError,
)
from orchestrator.specs._validation import did_you_mean
from orchestrator.specs.data import DataSpec

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

__all__ = [
    "LoadedData",
    "load_training_data",
    "ARROW_FILES",
    "SPARK_ARROW",
    "choose_read_path",
    "default_max_driver_bytes",
    "estimate_frame_bytes",
    "sample_fraction",
    "available_memory_bytes",
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

#: Spark types (``DataType.typeName()``) the file read converts exactly like ``toPandas``.
FAST_PATH_TYPES = frozenset({
    "boolean", "byte", "short", "integer", "long", "float", "double", "string", "date",
    "timestamp", "timestamp_ntz", "decimal",
})

#: Bytes per value of each Spark type once in a pandas frame. Strings and other
#: Python objects cost a pointer plus the object (CPython ``str``: 49 bytes + text;
#: an average text of 24 characters is assumed), dates and decimals are objects too.
PANDAS_BYTES_PER_VALUE = {
    "boolean": 1, "byte": 1, "short": 2, "integer": 4, "long": 8, "float": 4, "double": 8,
    "timestamp": 8, "timestamp_ntz": 8, "date": 8 + 32, "decimal": 8 + 104,
    "string": 8 + 49 + 24, "binary": 8 + 33 + 24,
}
#: Width assumed for types not in the table (arrays, maps, structs, ...).
OTHER_BYTES_PER_VALUE = 8 + 200

DEFAULT_DRIVER_FRACTION = 0.25
FALLBACK_AVAILABLE_BYTES = 8 * 1024**3
_SAMPLE_MARGIN_SDS = 6.0
_HASH_COLUMN = "__orchestrator_sample_hash"


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


def estimate_frame_bytes(row_count: int, column_types: Iterable[str]) -> int:
    """Estimate the memory of a pandas frame of ``row_count`` rows and these Spark types.

    Parameters
    ----------
    row_count : int
        Rows to be collected.
    column_types : iterable of str
        Spark type names (``DataType.typeName()``, e.g. "double", "string"),
        one per column.

    Returns
    -------
    int
        Estimated bytes, the sum of per-type widths times the rows.

    Examples
    --------
    >>> estimate_frame_bytes(1000, ["double", "long"])
    16000
    """
    width = sum(PANDAS_BYTES_PER_VALUE.get(t, OTHER_BYTES_PER_VALUE) for t in column_types)
    return int(row_count) * width


def default_max_driver_bytes(available_bytes: int | None, *,
                             fraction: float = DEFAULT_DRIVER_FRACTION) -> int:
    """The largest frame the driver should collect, given its available memory.

    A quarter of the available memory by default: loading briefly holds the
    Arrow data next to the frame, and the fit that follows copies it again.

    Parameters
    ----------
    available_bytes : int or None
        Memory available to the driver process (None: unknown, 8 GiB assumed).
    fraction : float
        Share of it one frame may take.

    Returns
    -------
    int

    Examples
    --------
    >>> default_max_driver_bytes(16 * 1024**3)
    4294967296
    """
    if available_bytes is None or available_bytes <= 0:
        available_bytes = FALLBACK_AVAILABLE_BYTES
    return int(available_bytes * fraction)


def sample_fraction(row_count: int, max_rows: int | None) -> float | None:
    """Fraction of rows a hash sample keeps so that it holds at least ``max_rows``.

    The sample keeps a row when its seeded hash falls below the fraction, so
    the kept count is binomial; the fraction adds six standard deviations so
    that the sample is (practically) never short, and the smallest
    ``max_rows`` hashes are then kept exactly.

    Parameters
    ----------
    row_count : int
        Rows after the filter.
    max_rows : int or None
        ``data_spec.max_rows``.

    Returns
    -------
    float or None
        None when no sample is needed (no limit, or the rows fit), else a
        fraction in (0, 1].

    Examples
    --------
    >>> sample_fraction(1000, None) is None, sample_fraction(1000, 1000) is None
    (True, True)
    >>> round(sample_fraction(1_000_000, 10_000), 4)
    0.0106
    """
    if max_rows is None or row_count <= max_rows:
        return None
    # Smallest f with n*f - k*sqrt(n*f*(1-f)) >= max_rows: the larger root of
    # (n^2 + k^2 n) f^2 - (2 n m + k^2 n) f + m^2 = 0.
    n, m, k2 = float(row_count), float(max_rows), _SAMPLE_MARGIN_SDS ** 2
    a, b, c = n * n + k2 * n, 2 * n * m + k2 * n, m * m
    f = (b + math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a)
    return min(1.0, f)


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


def parse_meminfo_available(text: str) -> int | None:
    """Bytes of ``MemAvailable`` in the text of ``/proc/meminfo``, or None."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def parse_cgroup_available(limit_text: str, usage_text: str) -> int | None:
    """Bytes left under a cgroup v2 memory limit (``memory.max``, ``memory.current``)."""
    limit_text, usage_text = limit_text.strip(), usage_text.strip()
    if not limit_text.isdigit() or not usage_text.isdigit():
        return None  # "max": no limit
    return max(0, int(limit_text) - int(usage_text))


def available_memory_bytes() -> int | None:
    """Memory available to this process: the machine's, capped by a cgroup limit."""
    candidates = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            candidates.append(parse_meminfo_available(fh.read()))
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh_max, \
                open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh_cur:
            candidates.append(parse_cgroup_available(fh_max.read(), fh_cur.read()))
    except OSError:
        pass
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def _too_large_message(*, location: str, estimate: int, limit: int, row_count: int,
                       row_width: int, limit_given: bool) -> str:
    fitting_rows = max(1, limit // max(1, row_width))
    source = "max_driver_bytes" if limit_given else \
        f"{DEFAULT_DRIVER_FRACTION:.0%} of the driver's available memory"
    return (f"data_spec: loading {row_count:,} rows from {location} would take about "
            f"{_gib(estimate)} on the driver, over the limit of {_gib(limit)} ({source}). "
            f"Set data_spec.max_rows (e.g. max_rows: {fitting_rows}) to load a seeded sample, "
            "or narrow the load with data_spec.columns or data_spec.filter.")


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


# --------------------------------------------------------------------------- Spark edge


@dataclass(frozen=True)
class _Source:
    kind: str          # "path" | "table"
    location: str      # the path or the table name as given
    detail: Mapping[str, Any]
    table: Any         # delta.tables.DeltaTable


def _spark_message(exc: BaseException) -> str:
    """The useful head of a Spark/py4j error message, without the JVM stack trace."""
    text = str(exc)
    for marker in ("\nJVM stacktrace:", "\n\tat ", "\n== SQL"):
        text = text.split(marker, 1)[0]
    # Analysis errors end with ";" and the logical plan, one operator per line.
    text = text.split(";\n", 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= 600 else text[:597] + "..."


def _spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JError)


def _quote_table_name(name: str) -> str:
    if "`" in name:
        return name  # already quoted by the user
    return ".".join(f"`{part}`" for part in name.split("."))


def _open_source(spark, spec: DataSpec, *, where: str = "data_spec") -> _Source:
    from delta.tables import DeltaTable

    errors = _spark_errors()
    if spec.path is not None:
        local = _open_local_table(spec.path)
        if local is not None:
            return local
        try:
            table = DeltaTable.forPath(spark, spec.path)
        except errors as exc:
            if "DELTA_MISSING_DELTA_TABLE" in str(exc) or "is not a Delta table" in str(exc):
                raise MissingTableError(_missing_path_message(spec.path, where=where)) from exc
            raise MissingTableError(f"{where}.path: cannot open {spec.path!r}: "
                                    f"{_spark_message(exc)}") from exc
        kind, location = "path", spec.path
    else:
        name = str(spec.table)
        try:
            exists = spark.catalog.tableExists(name)
        except errors as exc:
            exists = False
            logger.debug("tableExists(%s) failed: %s", name, _spark_message(exc))
        if not exists:
            raise MissingTableError(_missing_table_message(spark, name, where=where))
        try:
            table = DeltaTable.forName(spark, name)
        except errors as exc:
            raise DataError(f"{where}.table: {name!r} is not a Delta table "
                            f"({_spark_message(exc)}); time travel and lineage need Delta.") from exc
        kind, location = "table", name
    try:
        detail = table.detail().first().asDict(recursive=True)
    except errors as exc:
        raise DataError(f"{where}: cannot describe the Delta table {location!r}: "
                        f"{_spark_message(exc)}") from exc
    return _Source(kind=kind, location=location, detail=detail, table=table)


def _open_local_table(path: str) -> _Source | None:
    """Describe a table on the local filesystem with delta-rs, without a Spark job.

    ``DESCRIBE DETAIL`` reconstructs the whole snapshot (seconds on a cold
    session); delta-rs reads the protocol and metadata from the log in
    milliseconds. The Spark ``DeltaTable`` is opened later only if needed.
    """
    local = path[len("file:"):] if path.startswith("file:") else path
    if "://" in local or not os.path.isdir(os.path.join(local, "_delta_log")):
        return None
    source = _Source(kind="path", location=path, detail={"location": os.path.abspath(local)},
                     table=None)
    table = _delta_rs_table(source)
    if table is None:
        return None
    protocol, metadata = table.protocol(), table.metadata()
    features = sorted({*(protocol.reader_features or ()), *(protocol.writer_features or ())})
    detail = {"location": os.path.abspath(local), "tableFeatures": features,
              "properties": dict(metadata.configuration or {}),
              "minReaderVersion": protocol.min_reader_version,
              "partitionColumns": list(metadata.partition_columns or ()),
              "described_by": "delta-rs"}
    return _Source(kind="path", location=path, detail=detail, table=None)


def _spark_delta_table(spark, source: _Source):
    """The Spark ``DeltaTable`` of a source (opened on first need for local tables)."""
    from delta.tables import DeltaTable

    if source.table is not None:
        return source.table
    return DeltaTable.forPath(spark, source.location)


def _missing_path_message(path: str, *, where: str = "data_spec") -> str:
    local = path[len("file:"):] if path.startswith("file:") else path
    if "://" not in local and os.path.isdir(local):
        return (f"{where}.path: {path!r} exists but is not a Delta table (it has no "
                "_delta_log); write it with format('delta') or point to the table directory.")
    hint = ""
    parent = os.path.dirname(os.path.normpath(local))
    if "://" not in local and os.path.isdir(parent or "."):
        siblings = [os.path.join(parent, n) for n in os.listdir(parent or ".")]
        hint = did_you_mean(os.path.join(parent, os.path.basename(local)), siblings)
    return f"{where}.path: no Delta table at {path!r}{hint}."


def _missing_table_message(spark, name: str, *, where: str = "data_spec") -> str:
    parts = name.replace("`", "").split(".")
    namespace = ".".join(parts[:-1]) or None
    try:
        tables = spark.catalog.listTables(namespace) if namespace else spark.catalog.listTables()
    except _spark_errors() as exc:
        logger.debug("listing tables of %s failed: %s", namespace, _spark_message(exc))
        return f"{where}.table: no table {name!r}: the schema {namespace!r} was not found."
    names = [t.name for t in tables]
    close = difflib.get_close_matches(parts[-1], names, n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f" (did you mean {'.'.join([*parts[:-1], close[0]])!r}?)"
    in_schema = f" in schema {namespace!r}" if namespace else ""
    return f"{where}.table: no table {name!r}{in_schema}{hint}."


def _resolve_version(spark, source: _Source, spec: DataSpec, *, where: str = "data_spec") -> int:
    """The Delta version to read: the requested one, the one live at the timestamp, or the latest."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    errors = _spark_errors()
    where = f"{where} ({source.location})"
    try:
        if spec.timestamp is None:
            local = _delta_rs_table(source)
            latest = local.version() if local is not None else (
                _spark_delta_table(spark, source).history(1).select("version").first()[0])
            if spec.version is None:
                return int(latest)
            if spec.version > latest:
                raise DataError(f"{where}: version {spec.version} does not exist; the latest "
                                f"version is {latest}.")
            return int(spec.version)
        wanted = F.lit(spec.timestamp).try_cast("timestamp")
        fmt = "yyyy-MM-dd HH:mm:ss.SSS"
        row = (_spark_delta_table(spark, source).history().select("version", "timestamp")
               .agg(F.max(F.when(F.col("timestamp") <= wanted, F.col("version"))).alias("v"),
                    F.max("version").alias("latest"),
                    F.date_format(F.min("timestamp"), fmt).alias("first_ts"),
                    F.date_format(F.max("timestamp"), fmt).alias("last_ts"),
                    (F.max("timestamp") < wanted).alias("after_last"),
                    F.first(wanted.isNull()).alias("unparsable"))
               .first())
    except errors as exc:
        raise DataError(f"{where}: cannot read the Delta history: {_spark_message(exc)}") from exc
    if row["unparsable"]:
        raise SpecError([f"data_spec.timestamp: expected a timestamp such as "
                         f"'2024-05-01 12:00:00', got {spec.timestamp!r}."])
    if row["v"] is None:
        raise DataError(f"{where}: timestamp {spec.timestamp!r} is before the first commit "
                        f"({row['first_ts']}); give a later timestamp or a version.")
    if row["after_last"]:
        # Delta refuses a timestampAsOf later than the last commit; so do we, so
        # that a timestamp means the same here as in a Spark read.
        raise DataError(f"{where}: timestamp {spec.timestamp!r} is after the latest commit "
                        f"({row['last_ts']}, version {row['latest']}); omit the timestamp to "
                        "read the latest version.")
    return int(row["v"])


def _read_version(spark, source: _Source, version: int):
    if source.kind == "path":
        return spark.read.format("delta").option("versionAsOf", version).load(source.location)
    return spark.sql(f"SELECT * FROM {_quote_table_name(source.location)} VERSION AS OF {version}")


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


_STRING_LIKE = ("string", "large_string", "string_view", "binary", "large_binary")


def _normalize_arrow(table: pa.Table, spark_fields: Sequence, session_tz: str) -> pa.Table:
    """Give Arrow columns the types ``DataFrame.toPandas`` converts from.

    Spark shows TIMESTAMP values as wall-clock time of the session time zone,
    so they become naive local timestamps; other columns take Spark's Arrow type
    (e.g. INT96 or widened integers). ``table`` columns follow ``spark_fields``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql.pandas.types import to_arrow_type

    columns = []
    for array, spark_field in zip(table.columns, spark_fields):
        kind = spark_field.dataType.typeName()
        if kind == "timestamp":
            array = pc.local_timestamp(array.cast(pa.timestamp("us", tz=session_tz)))
        elif kind in FAST_PATH_TYPES:
            target = to_arrow_type(spark_field.dataType, timezone="UTC")
            same_kind = str(array.type) in _STRING_LIKE and str(target) in _STRING_LIKE
            if array.type != target and not same_kind:
                array = array.cast(target)
        columns.append(array)
    return pa.Table.from_arrays(columns, names=[f.name for f in spark_fields])


_TO_PANDAS = {"date_as_object": True, "coerce_temporal_nanoseconds": True}


def _inspect_footers(paths: Sequence[str], names: Sequence[str]) -> tuple[int | None, str]:
    """Rows in the files, or (None, reason) when the files do not hold the needed columns.

    A needed column missing from a file is a partition column of an older
    version or a column added later (Spark fills nulls): both need Delta's reader.
    """
    import pyarrow.parquet as pq

    if not paths:
        return None, "the snapshot has no data files"
    rows = 0
    first_types: dict[str, Any] | None = None
    for path in paths:
        try:
            meta = pq.read_metadata(path)
        except OSError as exc:
            return None, f"cannot read the footer of {path}: {exc}"
        schema = meta.schema.to_arrow_schema()
        missing = [n for n in names if schema.get_field_index(n) < 0]
        if missing:
            return None, f"{path} has no column(s) {', '.join(missing)} (partition or added column)"
        types = {n: schema.field(n).type for n in names}
        if first_types is None:
            first_types = types
        elif types != first_types:
            return None, "data files disagree on column types"
        rows += meta.num_rows
    return rows, ""


def _read_files(paths: Sequence[str], names: Sequence[str]) -> pa.Table:
    import pyarrow.parquet as pq

    # partitioning=None: Delta's partition values live in its log, not in directory names.
    table = pq.read_table(list(paths), columns=list(names), partitioning=None,
                          coerce_int96_timestamp_unit="us")
    return table.select(list(names))


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
    return sorted(paths)


def _sample(df, fraction: float, max_rows: int, seed: int):
    """Keep the ``max_rows`` rows with the smallest seeded hash (independent of partitioning)."""
    from pyspark.sql import functions as F

    hashable = [F.col(f"`{f.name}`") for f in df.schema.fields
                if f.dataType.typeName() != "map"]
    hashed = df.withColumn(_HASH_COLUMN, F.xxhash64(F.lit(seed), *hashable))
    # xxhash64 is uniform over signed 64-bit integers: keep those below the fraction's quantile.
    threshold = int(-(2**63) + fraction * (2**64 - 1))
    kept = hashed.where(F.col(_HASH_COLUMN) <= F.lit(threshold)) if fraction < 1.0 else hashed
    return kept.orderBy(_HASH_COLUMN).limit(max_rows).drop(_HASH_COLUMN)


def _local_table_dir(source: _Source) -> str | None:
    """The table's directory when it is on the driver's local filesystem."""
    location = str(source.detail.get("location") or "")
    local = location[len("file:"):] if location.startswith("file:") else location
    if not local or "://" in local or not os.path.isdir(os.path.join(local, "_delta_log")):
        return None
    return local


def _delta_rs_table(source: _Source, version: int | None = None):
    """A delta-rs (``deltalake``) view of a local table, or None when it cannot give one.

    delta-rs reads the ``_delta_log`` in milliseconds where Spark runs a
    state-reconstruction job (seconds) to list a snapshot's files. Anything it
    cannot read (an unsupported reader feature, a remote store) leaves the
    listing to Spark.
    """
    local = _local_table_dir(source)
    if local is None:
        return None
    try:
        from deltalake import DeltaTable as RustDeltaTable
        from deltalake.exceptions import DeltaError
    except ImportError:
        return None
    try:
        return RustDeltaTable(local, version=version)
    except (DeltaError, OSError, ValueError) as exc:
        logger.debug("delta-rs cannot open %s at version %s: %s", local, version, exc)
        return None


def _snapshot_file_uris(df, source: _Source, version: int) -> list[str]:
    """The data files of the snapshot at ``version``: from delta-rs when local, else from Spark."""
    table = _delta_rs_table(source, version)
    if table is not None and table.version() == version:
        return [uri if "://" in uri or uri.startswith("file:") else Path(uri).as_uri()
                for uri in table.file_uris()]
    return df.inputFiles()


def _plan_file_read(df, source: _Source, fields, types, errors,
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
        file_uris = _snapshot_file_uris(df, source, version)
    except errors as exc:
        return SPARK_ARROW, f"the file list is not available ({_spark_message(exc)})"
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
    errors = _spark_errors()

    source = _open_source(spark, data_spec)
    version = _resolve_version(spark, source, data_spec)
    where = f"data_spec ({source.location}, version {version})"
    try:
        df = _read_version(spark, source, version)
    except errors as exc:
        raise DataError(f"{where}: cannot read the table: {_spark_message(exc)}") from exc

    available = df.columns
    missing = [c for c in [*x_columns, label] if c not in available]
    if missing:
        raise MissingColumnError(missing, available, where=where)
    needed = [*x_columns, label]

    filtered = df
    if data_spec.filter is not None:
        try:
            filtered = df.where(data_spec.filter)
        except errors as exc:
            raise DataError(f"data_spec.filter: cannot apply {data_spec.filter!r} to "
                            f"{source.location}: {_spark_message(exc)}") from exc

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
            row_count, why_not = _inspect_footers(paths, needed)
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
                            f"{_spark_message(exc)}") from exc
    rows_in_source = row_count
    if data_spec.filter is not None:
        try:
            rows_in_source = df.count()
        except errors as exc:
            raise DataError(f"{where}: counting the rows failed: {_spark_message(exc)}") from exc

    row_width = estimate_frame_bytes(1, types)
    fraction = sample_fraction(row_count, data_spec.max_rows)
    rows_to_load = row_count if fraction is None else int(data_spec.max_rows)
    estimate = estimate_frame_bytes(rows_to_load, types)
    limit = (max_driver_bytes if max_driver_bytes is not None
             else default_max_driver_bytes(available_memory_bytes()))
    if estimate > limit:
        raise DataTooLargeError(_too_large_message(
            location=source.location, estimate=estimate, limit=limit, row_count=rows_to_load,
            row_width=row_width, limit_given=max_driver_bytes is not None))
    if fraction is not None:
        read_path, reason = SPARK_ARROW, "a sample is taken by Spark"

    table = _read_files(paths, needed) if read_path == ARROW_FILES else None
    if table is None:
        rows = filtered
        if fraction is not None:
            # Hash every source column, so the same seed keeps the same rows
            # whichever columns are projected.
            rows = _sample(filtered, fraction, int(data_spec.max_rows), data_spec.sample_seed)
        try:
            table = rows.select(*[f"`{c}`" for c in needed]).toArrow()
        except errors as exc:
            if "maxResultSize" in str(exc):
                raise DataTooLargeError(
                    f"{where}: the rows exceed spark.driver.maxResultSize; set data_spec.max_rows "
                    "or raise spark.driver.maxResultSize.") from exc
            raise DataError(f"{where}: reading the rows failed: {_spark_message(exc)}") from exc

    # Rebinding `table` drops the previous Arrow data, and self_destruct frees
    # each column once converted: peak memory stays near one copy of the data.
    table = _normalize_arrow(table, fields, session_tz)
    y = table.column(label).to_pandas(**_TO_PANDAS).rename(label)
    table = table.drop_columns([label])
    X = table.to_pandas(split_blocks=True, self_destruct=True, **_TO_PANDAS)
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
