"""The Delta and Spark edge: open, describe, version and read Delta tables.

Every module that touches a Delta table (training data, feature store,
scoring) goes through these functions, so errors are translated in one place
(:func:`spark_error_message` strips the JVM stack trace), names are quoted in
one place, and a local table is described from its ``_delta_log`` by delta-rs
in milliseconds instead of a Spark job.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import DataError, MissingTableError, SpecError, did_you_mean
from orchestrator.specs.data import DataSpec
from orchestrator.specs.source import TableSource

logger = logging.getLogger(__name__)

__all__ = [
    "DeltaSource",
    "SqlDeltaTable",
    "column",
    "delta_rs_table",
    "delta_table_for_name",
    "delta_table_for_path",
    "is_delta_table",
    "latest_version",
    "open_delta_source",
    "quote_table_name",
    "read_version",
    "resolve_version",
    "snapshot_file_uris",
    "spark_delta_table",
    "spark_error_message",
    "spark_errors",
]


@dataclass(frozen=True)
class DeltaSource:
    """An opened Delta table: how it was named, its ``DESCRIBE DETAIL``-like facts."""

    kind: str          # "path" | "table"
    location: str      # the path or the table name as given
    detail: Mapping[str, Any]
    table: Any         # delta.tables.DeltaTable, or None until Spark needs it


def spark_error_message(exc: BaseException) -> str:
    """The useful head of a Spark/py4j error message, without the JVM stack trace."""
    text = str(exc)
    for marker in ("\nJVM stacktrace:", "\n\tat ", "\n== SQL"):
        text = text.split(marker, 1)[0]
    # Analysis errors end with ";" and the logical plan, one operator per line.
    text = text.split(";\n", 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= 600 else text[:597] + "..."


def spark_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a Spark call raises: pyspark's, py4j's (classic) and Spark Connect's.

    Spark Connect raises the ``SparkConnectGrpcException`` family (server-side
    errors and a lost connection); py4j is absent from a ``pyspark-client``
    install, which has no JVM.
    """
    from pyspark.errors import PySparkException

    errors: list[type[BaseException]] = [PySparkException]
    try:
        from py4j.protocol import Py4JError
        errors.append(Py4JError)
    except ImportError:
        pass
    try:
        from pyspark.errors.exceptions.connect import SparkConnectGrpcException
        errors.append(SparkConnectGrpcException)
    except ImportError:  # pyspark without the Connect client's dependencies (grpc)
        pass
    return tuple(errors)


class SqlDeltaTable:
    """The part of ``delta.tables.DeltaTable`` we use, through SQL: works on Spark Connect.

    delta-spark's Python ``DeltaTable`` needs Delta's Connect plugin on a Connect
    server (not there on a plain one: NO_HANDLER_FOR_EXTENSION); ``DESCRIBE
    DETAIL`` and ``DESCRIBE HISTORY`` work on any server with Delta's SQL
    extension, and raise the same ``DELTA_MISSING_DELTA_TABLE`` error when
    there is no table. ``DESCRIBE`` commands run when ``spark.sql`` is called.
    """

    def __init__(self, spark, identifier: str):
        self._spark = spark
        self._identifier = identifier
        # Runs now, so a missing table fails here as with DeltaTable.forPath.
        self._detail = spark.sql(f"DESCRIBE DETAIL {identifier}")

    @classmethod
    def for_path(cls, spark, path: str) -> SqlDeltaTable:
        return cls(spark, "delta.`" + str(path).replace("`", "``") + "`")

    @classmethod
    def for_name(cls, spark, name: str) -> SqlDeltaTable:
        return cls(spark, quote_table_name(name))

    def detail(self):
        return self._detail

    def history(self, limit: int | None = None):
        suffix = f" LIMIT {int(limit)}" if limit else ""
        return self._spark.sql(f"DESCRIBE HISTORY {self._identifier}{suffix}")


def delta_table_for_path(spark, path: str):
    """``DeltaTable.forPath``, or its SQL stand-in on a Spark Connect session."""
    from orchestrator.io.session import is_connect_session

    if is_connect_session(spark):
        return SqlDeltaTable.for_path(spark, path)
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, path)


def delta_table_for_name(spark, name: str):
    """``DeltaTable.forName``, or its SQL stand-in on a Spark Connect session."""
    from orchestrator.io.session import is_connect_session

    if is_connect_session(spark):
        return SqlDeltaTable.for_name(spark, name)
    from delta.tables import DeltaTable

    return DeltaTable.forName(spark, name)


def is_delta_table(spark, path: str) -> bool:
    """``DeltaTable.isDeltaTable`` on either kind of session."""
    from orchestrator.io.session import is_connect_session

    if not is_connect_session(spark):
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(spark, path)
    try:
        SqlDeltaTable.for_path(spark, path)
    except spark_errors() as exc:
        if "DELTA_MISSING_DELTA_TABLE" in str(exc):
            return False
        raise
    return True


def quote_table_name(name: str) -> str:
    if "`" in name:
        return name  # already quoted by the user
    return ".".join(f"`{part}`" for part in name.split("."))


def open_delta_source(spark, spec: DataSpec, *, where: str = "data_spec") -> DeltaSource:
    errors = spark_errors()
    if spec.path is not None:
        local = _open_local_table(spec.path)
        if local is not None:
            return local
        try:
            table = delta_table_for_path(spark, spec.path)
        except errors as exc:
            if "DELTA_MISSING_DELTA_TABLE" in str(exc) or "is not a Delta table" in str(exc):
                raise MissingTableError(_missing_path_message(spec.path, where=where)) from exc
            raise MissingTableError(f"{where}.path: cannot open {spec.path!r}: "
                                    f"{spark_error_message(exc)}") from exc
        kind, location = "path", spec.path
    else:
        name = str(spec.table)
        try:
            exists = spark.catalog.tableExists(name)
        except errors as exc:
            exists = False
            logger.debug("tableExists(%s) failed: %s", name, spark_error_message(exc))
        if not exists:
            raise MissingTableError(_missing_table_message(spark, name, where=where))
        try:
            table = delta_table_for_name(spark, name)
        except errors as exc:
            raise DataError(f"{where}.table: {name!r} is not a Delta table "
                            f"({spark_error_message(exc)}); time travel and lineage need Delta.") from exc
        kind, location = "table", name
    try:
        detail = table.detail().first().asDict(recursive=True)
    except errors as exc:
        raise DataError(f"{where}: cannot describe the Delta table {location!r}: "
                        f"{spark_error_message(exc)}") from exc
    return DeltaSource(kind=kind, location=location, detail=detail, table=table)


def _open_local_table(path: str) -> DeltaSource | None:
    """Describe a table on the local filesystem with delta-rs, without a Spark job.

    ``DESCRIBE DETAIL`` reconstructs the whole snapshot (seconds on a cold
    session); delta-rs reads the protocol and metadata from the log in
    milliseconds. The Spark ``DeltaTable`` is opened later only if needed.
    """
    local = path[len("file:"):] if path.startswith("file:") else path
    if "://" in local or not os.path.isdir(os.path.join(local, "_delta_log")):
        return None
    source = DeltaSource(kind="path", location=path, detail={"location": os.path.abspath(local)},
                     table=None)
    table = delta_rs_table(source)
    if table is None:
        return None
    protocol, metadata = table.protocol(), table.metadata()
    features = sorted({*(protocol.reader_features or ()), *(protocol.writer_features or ())})
    detail = {"location": os.path.abspath(local), "tableFeatures": features,
              "properties": dict(metadata.configuration or {}),
              "minReaderVersion": protocol.min_reader_version,
              "partitionColumns": list(metadata.partition_columns or ()),
              "described_by": "delta-rs"}
    return DeltaSource(kind="path", location=path, detail=detail, table=None)


def spark_delta_table(spark, source: DeltaSource):
    """The Spark ``DeltaTable`` of a source (opened on first need for local tables)."""
    if source.table is not None:
        return source.table
    return delta_table_for_path(spark, source.location)


def _missing_path_message(path: str, *, where: str = "data_spec") -> str:
    local = path[len("file:"):] if path.startswith("file:") else path
    if "://" not in local and os.path.isdir(local):
        return (f"{where}.path: {path!r} exists but is not a Delta table (it has no "
                "_delta_log); write it with format('delta') or point to the table directory.")
    if "://" not in local and os.path.exists(local):
        return (f"{where}.path: {path!r} is a file, not a Delta table; a Delta table is a "
                "directory holding _delta_log/ and Parquet files: give that directory.")
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
    except spark_errors() as exc:
        logger.debug("listing tables of %s failed: %s", namespace, spark_error_message(exc))
        return f"{where}.table: no table {name!r}: the schema {namespace!r} was not found."
    names = [t.name for t in tables]
    close = difflib.get_close_matches(parts[-1], names, n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f" (did you mean {'.'.join([*parts[:-1], close[0]])!r}?)"
    in_schema = f" in schema {namespace!r}" if namespace else ""
    return f"{where}.table: no table {name!r}{in_schema}{hint}."


def resolve_version(spark, source: DeltaSource, spec: DataSpec, *, where: str = "data_spec") -> int:
    """The Delta version to read: the requested one, the one live at the timestamp, or the latest."""
    from pyspark.sql import functions as F

    errors = spark_errors()
    where = f"{where} ({source.location})"
    try:
        if spec.timestamp is None:
            local = delta_rs_table(source)
            latest = local.version() if local is not None else (
                spark_delta_table(spark, source).history(1).select("version").first()[0])
            if spec.version is None:
                return int(latest)
            if spec.version > latest:
                raise DataError(f"{where}: version {spec.version} does not exist; the latest "
                                f"version is {latest}.")
            return int(spec.version)
        wanted = F.lit(spec.timestamp).try_cast("timestamp")
        fmt = "yyyy-MM-dd HH:mm:ss.SSS"
        row = (spark_delta_table(spark, source).history().select("version", "timestamp")
               .agg(F.max(F.when(F.col("timestamp") <= wanted, F.col("version"))).alias("v"),
                    F.max("version").alias("latest"),
                    F.date_format(F.min("timestamp"), fmt).alias("first_ts"),
                    F.date_format(F.max("timestamp"), fmt).alias("last_ts"),
                    (F.max("timestamp") < wanted).alias("after_last"),
                    F.first(wanted.isNull()).alias("unparsable"))
               .first())
    except errors as exc:
        raise DataError(f"{where}: cannot read the Delta history: {spark_error_message(exc)}") from exc
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


def read_version(spark, source: DeltaSource | TableSource, version: int):
    """A DataFrame of the table at ``version`` (by path, or by name with ``VERSION AS OF``)."""
    by_path = source.kind == "path" if isinstance(source, DeltaSource) else source.path is not None
    reader = spark.read.format("delta").option("versionAsOf", int(version))
    return reader.load(source.location) if by_path else reader.table(source.location)


def column(name: str):
    """A Spark column for a name taken literally (dots and backticks are not syntax)."""
    from pyspark.sql import functions as F

    return F.col("`" + str(name).replace("`", "``") + "`")


def latest_version(delta_table) -> int:
    """The latest committed version of a Spark ``DeltaTable``."""
    return int(delta_table.history(1).select("version").first()[0])


def _local_table_dir(source: DeltaSource) -> str | None:
    """The table's directory when it is on the driver's local filesystem."""
    location = str(source.detail.get("location") or "")
    local = location[len("file:"):] if location.startswith("file:") else location
    if not local or "://" in local or not os.path.isdir(os.path.join(local, "_delta_log")):
        return None
    return local


def delta_rs_table(source: DeltaSource, version: int | None = None):
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


def snapshot_file_uris(df, source: DeltaSource, version: int) -> list[str]:
    """The data files of the snapshot at ``version``: from delta-rs when local, else from Spark."""
    table = delta_rs_table(source, version)
    if table is not None and table.version() == version:
        return [uri if "://" in uri or uri.startswith("file:") else Path(uri).as_uri()
                for uri in table.file_uris()]
    return df.inputFiles()
