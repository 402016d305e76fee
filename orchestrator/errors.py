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
    "ClusterTaskError",
    "TuningError",
    "NoEvaluatedTrialsError",
    "ScoringError",
    "ModelNotFoundError",
    "SchemaMismatchError",
    "TrackingError",
    "TrackingUnavailableError",
    "ModelLoggingError",
    "CalibrationError",
    "ReproductionError",
    "PinnedVersionUnavailableError",
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
    # A candidate equal to the name differs only in type (the integer 0 vs "0"): no help.
    return f" (did you mean {matches[0]!r}?)" if matches and matches[0] != name else ""


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


class ClusterTaskError(StepError):
    """A task run on Spark's executors raised (or its Spark job failed).

    Attributes
    ----------
    remote_traceback : str or None
        The traceback formatted where the task ran.
    """

    def __init__(self, message: str, *, remote_traceback: str | None = None):
        super().__init__(message)
        self.remote_traceback = remote_traceback


# ---- errors of the workflow's steps and edges (defined here so every one is in one family)


class TuningError(OrchestratorError):
    """Tuning could not run, or no trial succeeded.

    Attributes
    ----------
    summary : dict or None
        The tuning summary so far (trials and their errors), when trials ran.
    """

    def __init__(self, message: str, *, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


class NoEvaluatedTrialsError(OrchestratorError):
    """``fmin(..., return_argmin=True)`` ended without one evaluated trial (all failed or cancelled).

    hyperopt's ``fmin`` raises a plain ``Exception`` with the same message in
    this case; this subclass of it keeps that message, so code written for
    stock ``SparkTrials`` catches it unchanged.
    """


class ScoringError(OrchestratorError):
    """Scoring could not run or its write failed; nothing was written."""


class ModelNotFoundError(ScoringError):
    """The model URI, registered model, version or alias does not exist."""


class SchemaMismatchError(DataError, ScoringError):
    """Input columns whose types cannot be safely cast to the model signature's."""

    def __init__(self, mismatches: Sequence[tuple[str, str, str]], *, where: str):
        lines = [f"  - {name}: the model expects {expected}, the table has {actual}"
                 for name, expected, actual in mismatches]
        super().__init__(
            f"{where}: {len(lines)} column type{'s' if len(lines) != 1 else ''} do not match "
            "the model signature (only lossless casts are applied):\n" + "\n".join(lines)
            + "\nCast the columns in the table, or score with a model trained on these types.")
        self.mismatches = list(mismatches)


class TrackingError(OrchestratorError):
    """Logging to MLflow failed; the cause is chained."""


class TrackingUnavailableError(TrackingError):
    """The tracking server cannot be reached or did not answer within the timeout."""


class ModelLoggingError(TrackingError):
    """The model could not be logged safely (untrusted types, missing signature)."""


class CalibrationError(OrchestratorError, ValueError):
    """Calibration cannot run on this model or data (the cause, if any, is chained).

    A ``ValueError`` too, as scikit-learn raises for bad input, so that
    ``except ValueError`` and scikit-learn's own checks treat it as one.
    """


class ReproductionError(OrchestratorError):
    """A logged run cannot be re-run as it ran, or its reproduction disagrees with it."""


class PinnedVersionUnavailableError(DataError, ReproductionError):
    """A Delta version a run read can no longer be read (its files were vacuumed).

    ``location`` and ``version`` name the table and the version.
    """

    def __init__(self, message: str, *, location: str, version: int):
        super().__init__(message)
        self.location = location
        self.version = version
