"""Step 8's human side: a readable text of everything a workflow run produced."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.results import WorkflowResult, as_workflow_result

_RULE = "=" * 64


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _validation_detail_lines(details: dict) -> list[str]:
    """The split settings, where the folds ran and, for nested CV, each outer fold."""
    lines = []
    split = details.get("split") or {}
    if split:
        lines.append("  split:        " + ", ".join(f"{k}={v}" for k, v in split.items()))
    if details.get("placement"):
        lines.append(f"  folds ran:    {details['placement']}")
    for fold in details.get("nested") or []:
        params = ", ".join(f"{k}={_number(v)}" for k, v in (fold.get("best_params") or {}).items())
        lines.append(f"  outer fold {fold.get('fold')}: score {_number(fold.get('outer_score'))}"
                     f" (inner {_number(fold.get('inner_score'))}) with {params}")
    return lines


def _section(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def get_workflow_summary(results: WorkflowResult | Mapping[str, Any]) -> str:
    """Format workflow results as multi-line text.

    Parameters
    ----------
    results : WorkflowResult or mapping
        What :func:`orchestrator.run_ml_workflow` returned (or a mapping of its fields).

    Returns
    -------
    str
        Data, model, validation metrics, tuning, calibration, MLflow, warnings
        and step timings, one section each.

    Examples
    --------
    >>> print(get_workflow_summary(results))  # doctest: +SKIP
    """
    results = as_workflow_result(results)
    lines = [_RULE, "ML workflow summary", _RULE]
    specs = results.specs or {}
    model = specs.get("model") or {}
    data = results.data or {}

    lines += _section("Data")
    source = data.get("location") or data.get("source", "?")
    lines.append(f"source:        {source}")
    for key, label in (("delta_version", "delta version"), ("row_count", "rows read"),
                       ("training_rows", "training rows"), ("holdout_rows", "hold-out rows"),
                       ("sampled", "sampled"), ("read_path", "read path"),
                       ("sample_weight", "row weights")):
        if data.get(key) is not None:
            lines.append(f"{label + ':':<15}{data[key]}")
    for table in data.get("tables", []) or []:
        lines.append(f"  table {table.get('location')} @ version {table.get('delta_version')}")
    lines += _class_balance_lines(results.class_balance)

    lines += _section("Model")
    lines.append(f"estimator:     {model.get('estimator')} ({model.get('class_path')})")
    lines.append(f"task:          {results.task} ({results.target_kind})")
    if results.classes:
        lines.append(f"classes:       {results.classes}")
    pipeline = results.pipeline
    if pipeline is not None:
        lines.append(f"fitted:        {type(pipeline).__name__}")

    lines += _section("Validation")
    strategy = results.validation_strategy
    lines.append(f"strategy:      {strategy}")
    primary = results.primary_metric
    if results.cv_score is not None:
        label = "hold-out score" if strategy == "train_test" else "cv score"
        lines.append(f"{label + ':':<15}{_number(results.cv_score)} ({primary})")
    for name, values in (results.metrics or {}).items():
        if "mean" in values:
            lines.append(f"  {name:<28}{_number(values['mean'])} +/- {_number(values['std'])}")
        else:
            lines.append(f"  {name:<28}{_number(values.get('value'))}")
    if strategy == "none":
        lines.append("  (no validation was run)")
    if results.validation_note:
        lines.append(f"  note: {results.validation_note}")
    lines += _validation_detail_lines(getattr(results, "validation_details", None) or {})

    lines += _section("Tuning")
    lines += _mapping_lines(results.tuning_summary,
                            ("status", "backend", "backend_reason", "algo", "metric",
                             "best_score", "best_params", "trials_run", "trials_ok",
                             "trials_failed", "trials_cancelled", "stop_reason", "wall_time_s",
                             "reason"))

    lines += _section("Calibration")
    lines += _mapping_lines(results.calibration_summary,
                            ("status", "method", "method_reason", "cv", "rows", "metrics_before",
                             "metrics_after", "decision", "reason", "plot_path"))

    lines += _threshold_and_explanation_lines(results)

    lines += _section("MLflow")
    run_id = results.mlflow_run_id
    lines.append(f"run id:        {run_id if run_id else 'off'}")
    logged = results.mlflow_model or {}
    for key in ("model_uri", "registered_model_name", "model_version", "model_alias"):
        if logged.get(key) is not None:
            lines.append(f"{key + ':':<15}{logged[key]}")

    if results.promotion:
        promotion = results.promotion
        lines += _section("Promotion")
        moved = "moved" if promotion.get("alias_moved") else "not moved"
        lines.append(f"decision:      {promotion.get('decision')} (alias "
                     f"{promotion.get('alias')!r} {moved})")
        for key in ("rule", "reason", "rows", "candidate_version", "champion_version"):
            if promotion.get(key) is not None:
                lines.append(f"{key + ':':<15}{promotion[key]}")
    warnings = results.warnings or []
    lines += _section(f"Warnings ({len(warnings)})")
    lines += [f"  [{w.step}] {w.reason}" for w in warnings] or ["  none"]

    timings = results.timings or {}
    lines += _section("Timings (s)")
    lines += [f"  {name:<24}{seconds:>9.2f}" for name, seconds in timings.items()]
    if timings:
        lines.append(f"  {'total':<24}{sum(timings.values()):>9.2f}")
    artifacts = results.artifacts or {}
    if artifacts:
        lines += _section("Artifacts")
        lines += [f"  {name}: {path}" for name, path in artifacts.items()]
    lines.append(_RULE)
    return "\n".join(lines)


def _class_balance_lines(balance: Mapping[str, Any] | None) -> list[str]:
    if not balance:
        return []
    shares = balance.get("shares") or {}
    shown = ", ".join(f"{label}: {count} ({shares.get(label, 0):.1%})"
                      for label, count in (balance.get("counts") or {}).items())
    return [f"{'classes:':<15}{shown}"]


def _threshold_and_explanation_lines(results: WorkflowResult) -> list[str]:
    """The Threshold section (when chosen) and the Explanations section (when asked for)."""
    lines: list[str] = []
    threshold = results.threshold_summary
    if threshold:
        lines += _section("Decision threshold")
        lines.append(f"  {'threshold:':<20}{threshold.get('threshold'):.4f}")
        lines.append(f"  {'chosen for:':<20}{threshold.get('objective')}")
        lines.append(f"  {'cv score:':<20}{_number(threshold.get('cv_score'))} "
                     f"({threshold.get('score_kind')}, {threshold.get('cv_folds')}-fold CV "
                     "on the training rows)")
    explanations = results.explanations
    if explanations:
        lines += _section("Explanations")
        lines.append(f"  rows:  {explanations.get('rows')}")
        top = explanations.get("top_features") or []
        if top:
            lines.append(f"  permutation importance (drop in {explanations.get('metric')}):")
            lines += [f"    {name:<26}{mean:>9.4f} +/- {std:.4f}" for name, mean, std in top]
        if explanations.get("shap"):
            lines.append(f"  SHAP summary plot: {explanations['shap']}")
    return lines


def _mapping_lines(summary: dict | None, keys: tuple[str, ...]) -> list[str]:
    if not summary:
        return ["  off"]
    lines = []
    for key in keys:
        if summary.get(key) is None:
            continue
        value = summary[key]
        if isinstance(value, dict):
            shown = ", ".join(f"{k}={_number(v)}" for k, v in value.items())
            lines.append(f"  {key + ':':<20}{shown}")
        else:
            lines.append(f"  {key + ':':<20}{_number(value)}")
    return lines or ["  (no details)"]
