"""What a workflow run returns: one typed result, readable as attributes or by key.

:class:`WorkflowResult` is filled step by step by :func:`orchestrator.run_ml_workflow`.
The summary, tracking and the notebooks read its attributes; users who wrote
``results["pipeline"]`` (the README's API) keep working, because the result
also answers ``[]``, ``get``, ``in``, ``keys`` and ``items`` for its fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["StepWarning", "WorkflowResult", "as_workflow_result"]


@dataclass(frozen=True)
class StepWarning:
    """An optional step that degraded: which step, and why (``"Type: message"``)."""

    step: str
    reason: str

    def __getitem__(self, key: str) -> str:
        if key not in ("step", "reason"):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in ("step", "reason") else default


@dataclass
class WorkflowResult:
    """Everything one run produced.

    Attributes
    ----------
    pipeline : estimator or None
        Fitted on all training rows; the calibrated model when calibration was kept.
    cv_score : float or None
        Mean of the primary metric over the folds; the hold-out score for
        ``train_test``; None for ``none``.
    metrics : dict
        Every validation metric: ``mean``, ``std`` and ``folds``, or ``value``.
    tuning_summary, calibration_summary : dict or None
        What the optional steps did (None when not asked for).
    mlflow_run_id : str or None
    mlflow_model : dict or None
        The logged model's URI, registered name, version and alias.
    data : dict
        The source, Delta versions read, row counts.
    warnings : list of StepWarning
        Optional steps that degraded, with the reason.
    timings : dict
        Seconds per step.
    artifacts : dict
        Plot and file paths by name.
    """

    pipeline: Any = None
    cv_score: float | None = None
    tuning_summary: dict | None = None
    calibration_summary: dict | None = None
    mlflow_run_id: str | None = None
    mlflow_model: dict | None = None
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    warnings: list[StepWarning] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    output_dir: str | None = None
    specs: dict = field(default_factory=dict)
    validation_strategy: str | None = None
    validation_note: str | None = None
    validation_rows: int | None = None
    task: str | None = None
    target_kind: str | None = None
    classes: list = field(default_factory=list)
    primary_metric: str | None = None
    pos_label: Any = None
    evaluation: dict | None = None
    summary_text: str | None = None

    def warn(self, step: str, reason: str) -> StepWarning:
        """Record that ``step`` degraded, and return the record."""
        warning = StepWarning(step=step, reason=reason)
        self.warnings.append(warning)
        return warning

    # ---- the mapping view the README's API promises

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELD_NAMES:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _FIELD_NAMES:
            raise KeyError(f"{key!r} is not a field of WorkflowResult")
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in _FIELD_NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELD_NAMES)

    def __len__(self) -> int:
        return len(_FIELD_NAMES)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in _FIELD_NAMES else None
        return default if value is None else value

    def keys(self) -> list[str]:
        return list(_FIELD_NAMES)

    def items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in _FIELD_NAMES]

    def update(self, values: Mapping[str, Any] | None = None, **more: Any) -> None:
        for key, value in {**(values or {}), **more}.items():
            self[key] = value


_FIELD_NAMES = tuple(f.name for f in fields(WorkflowResult))


def as_workflow_result(results: WorkflowResult | Mapping[str, Any]) -> WorkflowResult:
    """A :class:`WorkflowResult` from itself or from a plain mapping of its fields."""
    if isinstance(results, WorkflowResult):
        return results
    known = {k: v for k, v in dict(results).items() if k in _FIELD_NAMES}
    known["warnings"] = [w if isinstance(w, StepWarning) else StepWarning(
        str(w.get("step")), str(w.get("reason"))) for w in known.get("warnings") or []]
    return WorkflowResult(**known)
