"""What a run plots: ROC and PR curves, confusion matrix, residuals, feature importance.

This module chooses the data (drawing is :mod:`orchestrator.plots`). The
predictions plotted are the held-out or out-of-fold ones the workflow passes in
``results.evaluation``; otherwise the final model's predictions on the sample
rows, marked "in-sample (optimistic)" in every title.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.plots import (
    plot_classification_curves,
    plot_feature_importance,
    plot_residuals,
)

logger = logging.getLogger(__name__)


def evaluation_from(results: Mapping[str, Any], X_sample, y_sample) -> dict[str, Any] | None:
    """Predictions to plot: ``results["evaluation"]``, else the model on the sample rows.

    Returns
    -------
    dict or None
        ``y_true``, ``y_pred``, ``y_proba`` (classifiers, or None), ``classes``,
        ``description``; None when there is nothing to plot.
    """
    given = results.get("evaluation")
    if isinstance(given, Mapping) and given.get("y_true") is not None:
        evaluation = dict(given)
        evaluation.setdefault("description", "held-out predictions")
        return evaluation
    model = results.get("pipeline")
    if model is None or X_sample is None or y_sample is None:
        return None
    from orchestrator.tracking.model_logging import to_model_input

    X = to_model_input(X_sample)
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    return {"y_true": np.asarray(y_sample), "y_pred": model.predict(X), "y_proba": proba,
            "classes": list(getattr(model, "classes_", [])) or None,
            "description": f"in-sample, {len(X)} training rows (optimistic)"}


def _is_classification(results: Mapping[str, Any], evaluation: Mapping[str, Any]) -> bool:
    task = results.get("task")
    if task in ("classification", "regression"):
        return task == "classification"
    return evaluation.get("classes") is not None or evaluation.get("y_proba") is not None


def draw_plots(results: Mapping[str, Any], *, X_sample, y_sample, output_dir) -> list[Path]:
    """Draw every plot that applies and return the PNG paths.

    Parameters
    ----------
    results : mapping
        Workflow results (``pipeline``, ``task``, ``pos_label``, ``evaluation``).
    X_sample, y_sample
        Rows for in-sample plots when ``results`` carries no ``evaluation``.
    output_dir : path

    Returns
    -------
    list of Path
    """
    output_dir = Path(output_dir)
    paths: list[Path] = []
    evaluation = evaluation_from(results, X_sample, y_sample)
    if evaluation is not None:
        if _is_classification(results, evaluation):
            paths.extend(plot_classification_curves(evaluation, results.get("pos_label"), output_dir))
        else:
            paths.append(plot_residuals(evaluation, output_dir / "residuals.png"))
    importance = feature_importance(results.get("pipeline"))
    if importance is not None:
        paths.append(plot_feature_importance(*importance, output_dir / "feature_importance.png"))
    return paths


def feature_importance(model) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Feature names, importances and what they measure, when the model has them.

    Uses ``feature_importances_`` (trees) or the absolute ``coef_`` (linear
    models; averaged over classes), with names from the preprocessing step.
    """
    from orchestrator.tracking.model_logging import find_pipeline

    pipeline = find_pipeline(model)
    if pipeline is None:
        return None
    estimator = pipeline.steps[-1][1]
    if hasattr(estimator, "feature_importances_"):
        values = np.asarray(estimator.feature_importances_, dtype=float)
        label = "impurity-based importance"
    elif hasattr(estimator, "coef_"):
        coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=float))
        values = np.abs(coef).mean(axis=0)
        label = "|coefficient| (on the preprocessed features)"
    else:
        return None
    names = None
    if len(pipeline.steps) > 1:
        transform = pipeline[:-1]
        try:
            names = np.asarray(transform.get_feature_names_out(), dtype=object)
        except (AttributeError, ValueError, TypeError) as exc:
            logger.debug("no feature names from the preprocessing step: %s", exc)
    if names is None or len(names) != len(values):
        names = np.asarray([f"feature {i}" for i in range(len(values))], dtype=object)
    return names, values, label


