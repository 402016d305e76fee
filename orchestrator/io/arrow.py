"""Arrow to pandas, the way ``DataFrame.toPandas`` converts, for every read path.

Spark's own collect (``DataFrame.toArrow``) and the driver's direct read of a
snapshot's Parquet files both end here, so the frame does not depend on the
path it came by.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = ["ARROW_TO_PANDAS", "FAST_PATH_TYPES", "inspect_footers", "normalize_arrow",
           "read_parquet_files"]


#: Spark types (``DataType.typeName()``) the file read converts exactly like ``toPandas``.
FAST_PATH_TYPES = frozenset({
    "boolean", "byte", "short", "integer", "long", "float", "double", "string", "date",
    "timestamp", "timestamp_ntz", "decimal",
})


_STRING_LIKE = ("string", "large_string", "string_view", "binary", "large_binary")


def normalize_arrow(table: pa.Table, spark_fields: Sequence, session_tz: str) -> pa.Table:
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


ARROW_TO_PANDAS = {"date_as_object": True, "coerce_temporal_nanoseconds": True}


def inspect_footers(paths: Sequence[str], names: Sequence[str]) -> tuple[int | None, str]:
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


def read_parquet_files(paths: Sequence[str], names: Sequence[str]) -> pa.Table:
    import pyarrow.parquet as pq

    # partitioning=None: Delta's partition values live in its log, not in directory names.
    table = pq.read_table(list(paths), columns=list(names), partitioning=None,
                          coerce_int96_timestamp_unit="us")
    return table.select(list(names))
