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

__all__ = ["CalibrationSummary", "StepWarning", "TuningSummary", "WorkflowResult",
           "as_workflow_result"]


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


class _MappingView:
    """``[]``, ``get``, ``in``, ``keys`` and ``items`` over a dataclass's fields and ``extra``.

    The step summaries were plain dicts before they were typed; callers that
    read them by key keep working, and keys a step adds later land in
    ``extra`` instead of being lost.
    """

    extra: dict

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None):
        if values is None or isinstance(values, cls):
            return values
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        return cls(**known, extra={k: v for k, v in values.items() if k not in names})

    def _names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "extra"]

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            return getattr(self, key)
        return self.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._names():
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __contains__(self, key: object) -> bool:
        return (key in self._names() and getattr(self, str(key)) is not None) or key in self.extra

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value

    def keys(self) -> list[str]:
        return [n for n in self._names() if getattr(self, n) is not None] + list(self.extra)

    def items(self) -> list[tuple[str, Any]]:
        return [(key, self[key]) for key in self.keys()]

    def to_dict(self) -> dict[str, Any]:
        """The summary as a plain dict (for JSON artifacts)."""
        return dict(self.items())


@dataclass
class TuningSummary(_MappingView):
    """What step 3 did: the backend and why, the search, the best trial, every trial.

    ``status`` is "ok", or "degraded" with ``reason`` and the ``params_used``
    instead (the model spec's own). ``trials`` holds each trial's number,
    status, params, score, duration_s, wall_s, error, start_ms and end_ms.
    """

    status: str = "ok"
    backend: str | None = None
    backend_reason: str | None = None
    algo: str | None = None
    metric: str | None = None
    parallelism: int | None = None
    best_params: dict | None = None
    best_score: float | None = None
    trials_run: int | None = None
    trials_ok: int | None = None
    trials_failed: int | None = None
    trials_cancelled: int | None = None
    stop_reason: str | None = None
    wall_time_s: float | None = None
    trials: list = field(default_factory=list)
    reason: str | None = None
    params_used: dict | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class CalibrationSummary(_MappingView):
    """What step 5 did: method and why, before/after metrics on the same rows, the decision.

    ``calibrated`` says whether the returned model is the calibrated one;
    ``status`` "degraded" with ``reason`` when calibration could not run.
    """

    status: str = "ok"
    calibrated: bool = False
    method: str | None = None
    method_reason: str | None = None
    cv: Any = None
    rows: int | None = None
    metrics_before: dict | None = None
    metrics_after: dict | None = None
    decision: str | None = None
    reason: str | None = None
    plot_path: str | None = None
    extra: dict = field(default_factory=dict)


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
    tuning_summary: TuningSummary | None = None
    calibration_summary: CalibrationSummary | None = None
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
    #: Split settings, where the folds ran and, for nested CV, each outer fold's chosen params.
    validation_details: dict = field(default_factory=dict)
    validation_rows: int | None = None
    task: str | None = None
    target_kind: str | None = None
    classes: list = field(default_factory=list)
    primary_metric: str | None = None
    pos_label: Any = None
    evaluation: dict | None = None
    summary_text: str | None = None
    #: The promotion gate's decision, both models' metrics and the deciding rule.
    promotion: dict | None = None
    #: Rows per class in the training rows (classification), and the shares.
    class_balance: dict | None = None
    #: The chosen decision threshold, its objective and cross-validated curve.
    threshold_summary: dict | None = None
    #: Permutation importance per input column (held-out rows) and the SHAP status.
    explanations: dict | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # The steps hand over plain dicts; the result keeps them typed.
        if name == "tuning_summary" and value is not None:
            value = TuningSummary.from_mapping(value)
        elif name == "calibration_summary" and value is not None:
            value = CalibrationSummary.from_mapping(value)
        object.__setattr__(self, name, value)

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
# Code that checks ``isinstance(x, Mapping)`` (YAML/JSON conversion, redaction) treats
# the typed summaries and the result like the dicts they replace.
Mapping.register(_MappingView)
Mapping.register(WorkflowResult)


def as_workflow_result(results: WorkflowResult | Mapping[str, Any]) -> WorkflowResult:
    """A :class:`WorkflowResult` from itself or from a plain mapping of its fields."""
    if isinstance(results, WorkflowResult):
        return results
    known = {k: v for k, v in dict(results.items()).items() if k in _FIELD_NAMES}
    known["warnings"] = [w if isinstance(w, StepWarning) else StepWarning(
        str(w.get("step")), str(w.get("reason"))) for w in known.get("warnings") or []]
    return WorkflowResult(**known)
