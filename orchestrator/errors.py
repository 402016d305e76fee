"""One family of errors for everything the package raises on purpose.

Catch :class:`OrchestratorError` to handle any of them. Spec errors also
subclass ``ValueError`` so that ordinary ``except ValueError`` handlers keep
working, as scikit-learn's ``InvalidParameterError`` does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "OrchestratorError",
    "SpecError",
    "DataError",
    "MissingTableError",
    "MissingColumnError",
    "DataTooLargeError",
    "StepError",
    "did_you_mean",
]


def did_you_mean(name: object, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or ``""``.

    Examples
    --------
    >>> did_you_mean("lable", ["label", "features"])
    " (did you mean 'label'?)"
    """
    if not isinstance(name, str):
        return ""
    candidates = [str(c) for c in candidates]
    matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            matches = [lowered[name.lower()]]
    return f" (did you mean {matches[0]!r}?)" if matches else ""


class OrchestratorError(Exception):
    """Base class of every error the package raises deliberately."""


class SpecError(OrchestratorError, ValueError):
    """One or more specs are invalid.

    All problems found are reported at once: ``problems`` holds one line per
    problem, each saying where it is, what was expected, what was given and how
    to fix it.
    """

    def __init__(self, problems: Sequence[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} in the specs:"
        super().__init__(header + "\n" + "\n".join(f"  - {p}" for p in self.problems))


class DataError(OrchestratorError, ValueError):
    """The data does not match what the specs ask for."""


class MissingTableError(DataError):
    """A Delta table, path or feature table does not exist."""


class MissingColumnError(DataError):
    """A column named in a spec is not in the data."""

    def __init__(self, missing: Iterable[str], available: Iterable[str], *, where: str):
        available = list(available)
        missing = list(missing)
        parts = [f"{name!r}{did_you_mean(name, available)}" for name in missing]
        super().__init__(
            f"{where}: column{'s' if len(missing) > 1 else ''} {', '.join(parts)} "
            f"not found. Available columns: {', '.join(available) or '(none)'}."
        )
        self.missing = missing
        self.available = available


class DataTooLargeError(DataError):
    """Collecting the data to the driver would exhaust its memory."""


class StepError(OrchestratorError):
    """A required workflow step failed; the cause is chained."""
