"""The Delta source spec: which table, which version, which rows and columns."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.specs.problems import Problems
from orchestrator.specs.source import TableSource, parse_table_source

_DATA_KEYS = ("path", "table", "version", "timestamp", "label", "columns", "filter", "max_rows",
              "sample_seed", "sample_weight")


@dataclass(frozen=True)
class DataSpec(TableSource):
    """Where the training rows come from.

    Exactly one of ``path`` (a Delta table directory) or ``table`` (a metastore
    name such as ``catalog.schema.name``). ``version`` or ``timestamp`` reads
    an older snapshot (time travel). ``columns`` projects, ``filter`` is a Spark
    SQL predicate, ``max_rows`` takes a seeded reproducible sample when the
    source holds more rows. ``sample_weight`` names a column of row weights (loaded
    with the rows, never a feature).
    """

    timestamp: str | None = None
    label: str | None = None
    columns: tuple[str, ...] | None = None
    filter: str | None = None
    max_rows: int | None = None
    sample_seed: int = 42
    sample_weight: str | None = None


def parse_data_spec(raw: object, problems: Problems) -> DataSpec | None:
    """Parse ``data_spec``; record every problem in ``problems``."""
    where = "data_spec"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.expected(where, "a mapping such as {path: data/churn, label: churned}", raw)
        return None
    problems.unknown_keys(raw, _DATA_KEYS, where)
    source = parse_table_source(raw, where, problems)
    if "version" in raw and "timestamp" in raw:
        problems.add(where, "give at most one of 'version' and 'timestamp' for time travel.")
    timestamp = raw.get("timestamp")
    if isinstance(timestamp, (datetime.date, datetime.datetime)):
        timestamp = timestamp.isoformat(sep=" ") if isinstance(timestamp, datetime.datetime) \
            else timestamp.isoformat()  # YAML reads an unquoted 2024-01-01 as a date
    elif timestamp is not None:
        timestamp = problems.string(raw, "timestamp", where, default=None)
    label = problems.string(raw, "label", where, default=None)
    columns = problems.string_list(raw, "columns", where, default=None)
    if columns and label and label in columns:
        columns = tuple(c for c in columns if c != label)
    filter_ = problems.string(raw, "filter", where, default=None)
    max_rows = problems.number(raw, "max_rows", where, default=None, integer=True, low=1)
    default_seed = DataSpec().sample_seed
    seed = problems.number(raw, "sample_seed", where, default=default_seed, integer=True, low=0)
    sample_weight = problems.string(raw, "sample_weight", where, default=None)
    return DataSpec(path=source.path, table=source.table, version=source.version,
                    timestamp=timestamp, label=label,
                    columns=columns, filter=filter_, max_rows=max_rows,
                    sample_seed=seed if seed is not None else default_seed,
                    sample_weight=sample_weight)
