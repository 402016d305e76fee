"""The plots a run carries: ROC and PR curves, confusion matrix, residuals, feature importance.

Drawn with matplotlib's object API (``matplotlib.figure.Figure``): no pyplot
state and no GUI backend, so it is safe in jobs and threads. The predictions
plotted are the held-out or out-of-fold ones the workflow passes in
``results["evaluation"]``; otherwise the final model's predictions on the
sample rows, marked "in-sample (optimistic)" in every title.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_DPI = 110
_TOP_FEATURES = 20


def _figure(width: float = 6.4, height: float = 5.0):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


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
    from orchestrator.tracking import to_model_input

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
            paths.extend(_classification_plots(evaluation, results.get("pos_label"), output_dir))
        else:
            paths.append(_residuals_plot(evaluation, output_dir / "residuals.png"))
    importance = feature_importance(results.get("pipeline"))
    if importance is not None:
        paths.append(_importance_plot(*importance, output_dir / "feature_importance.png"))
    return paths


def _classification_plots(evaluation: Mapping[str, Any], pos_label: Any,
                          output_dir: Path) -> list[Path]:
    from sklearn.metrics import (ConfusionMatrixDisplay, PrecisionRecallDisplay,
                                 RocCurveDisplay)

    y_true = np.asarray(evaluation["y_true"])
    y_pred = np.asarray(evaluation["y_pred"])
    classes = list(evaluation.get("classes") or np.unique(np.concatenate([y_true, y_pred])))
    description = evaluation["description"]
    paths = []
    proba = evaluation.get("y_proba")
    if proba is not None and len(classes) == 2:
        proba = np.asarray(proba)
        positive = pos_label if pos_label in classes else classes[1]
        score = proba[:, classes.index(positive)] if proba.ndim == 2 else proba

        for display, title, filename in (
                (RocCurveDisplay, "ROC curve", "roc_curve.png"),
                (PrecisionRecallDisplay, "Precision-recall curve", "precision_recall_curve.png")):
            figure, ax = _figure()
            display.from_predictions(y_true, score, pos_label=positive, ax=ax, name="model",
                                     plot_chance_level=True)
            ax.set_title(f"{title} (positive class: {positive})\n{description}")
            ax.grid(alpha=0.3)
            paths.append(_save(figure, output_dir / filename))

    size = max(5.0, 0.55 * len(classes) + 3)
    figure, ax = _figure(size, size * 0.85)
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=classes, ax=ax,
                                            colorbar=False, cmap="Blues", values_format="d",
                                            xticks_rotation=45 if len(classes) > 6 else
                                            "horizontal")
    ax.set_title(f"Confusion matrix (counts)\n{description}")
    paths.append(_save(figure, output_dir / "confusion_matrix.png"))
    return paths


def _residuals_plot(evaluation: Mapping[str, Any], path: Path) -> Path:
    from sklearn.metrics import PredictionErrorDisplay

    from matplotlib.figure import Figure

    y_true = np.asarray(evaluation["y_true"], dtype=float)
    y_pred = np.asarray(evaluation["y_pred"], dtype=float)
    figure = Figure(figsize=(11, 4.8), dpi=_DPI, layout="constrained")
    left, right = figure.subplots(1, 2)
    PredictionErrorDisplay.from_predictions(y_true, y_pred, kind="actual_vs_predicted",
                                            ax=left, random_state=0)
    left.set_title("Actual vs predicted")
    PredictionErrorDisplay.from_predictions(y_true, y_pred, kind="residual_vs_predicted",
                                            ax=right, random_state=0)
    right.set_title("Residuals (actual - predicted)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    figure.suptitle(evaluation["description"])
    return _save(figure, path)


def feature_importance(model) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Feature names, importances and what they measure, when the model has them.

    Uses ``feature_importances_`` (trees) or the absolute ``coef_`` (linear
    models; averaged over classes), with names from the preprocessing step.
    """
    from orchestrator.tracking import _find_pipeline

    pipeline = _find_pipeline(model)
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


def _importance_plot(names: np.ndarray, values: np.ndarray, label: str, path: Path) -> Path:
    order = np.argsort(values)[::-1][:_TOP_FEATURES][::-1]
    shown = [str(n) for n in names[order]]
    # ColumnTransformer prefixes ("numeric_0__age") say which spec made the column; keep them
    # but cut very long names so the bars keep their room.
    shown = [n if len(n) <= 45 else n[:42] + "..." for n in shown]
    figure, ax = _figure(7.5, max(3.0, 0.32 * len(order) + 1.5))
    ax.barh(range(len(order)), values[order], color="#3b75af")
    ax.set_yticks(range(len(order)), shown)
    ax.set_xlabel(label)
    title = "Feature importance"
    if len(values) > _TOP_FEATURES:
        title += f" (top {_TOP_FEATURES} of {len(values)})"
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, path)
