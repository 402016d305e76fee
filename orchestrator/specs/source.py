"""The one table source spec: a Delta table by path or by name, at an optional version.

The training data (``data``), the feature store's labels and lookups, and the
scoring job's input and output all name tables the same way, so they share
:class:`TableSource` and :func:`parse_table_source`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import SpecError
from orchestrator.specs.problems import Problems

__all__ = ["TableSource", "parse_table_source"]


@dataclass(frozen=True)
class TableSource:
    """A Delta table: exactly one of ``path`` (a directory or URI) or ``table`` (a name).

    Attributes
    ----------
    path : str or None
        A Delta table directory (``/Volumes/...``, ``s3://...``, ``data/churn``).
    table : str or None
        A metastore or Unity Catalog name (``catalog.schema.name``).
    version : int or None
        The Delta version to read (time travel); the latest when None.
    """

    path: str | None = None
    table: str | None = None
    version: int | None = None

    @property
    def location(self) -> str:
        """The path or the table name, as given."""
        return self.path if self.path is not None else str(self.table)

    @classmethod
    def from_text(cls, text: str, *, where: str = "table") -> TableSource:
        """A source from one string: a path when it contains ``/``, else a table name.

        Examples
        --------
        >>> TableSource.from_text("data/preds").path, TableSource.from_text("main.ml.preds").table
        ('data/preds', 'main.ml.preds')
        """
        if not isinstance(text, str) or not text.strip():
            raise SpecError([f"{where}: expected a Delta table path or name, got {text!r}."])
        return cls(path=text) if "/" in text else cls(table=text)


def parse_table_source(raw: Mapping, where: str, problems: Problems) -> TableSource:
    """Read ``path`` | ``table`` and ``version`` from a spec mapping; record every problem."""
    if ("path" in raw) == ("table" in raw):
        problems.add(where, "give exactly one of 'path' (a Delta table directory) or 'table' "
                     f"(catalog.schema.name), got {'both' if 'path' in raw else 'neither'}.")
    path = problems.string(raw, "path", where, default=None)
    table = problems.string(raw, "table", where, default=None)
    version = problems.number(raw, "version", where, default=None, integer=True, low=0)
    return TableSource(path=path, table=table, version=version)
