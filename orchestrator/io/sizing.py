"""How much the driver may collect: size estimates, memory probing, sample fractions.

Pure functions of plain values (and two small readers of ``/proc`` and the
cgroup files), shared by the Delta training-data reader and the feature store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "available_memory_bytes",
    "default_max_driver_bytes",
    "estimate_frame_bytes",
    "parse_cgroup_available",
    "parse_meminfo_available",
    "sample_fraction",
    "too_large_message",
]


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


def too_large_message(*, location: str, estimate: int, limit: int, row_count: int,
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
