"""Every plot the package draws, as PNG files, with one figure convention.

matplotlib is imported inside the functions and drawn with the Agg canvas on a
bare :class:`~matplotlib.figure.Figure` (:func:`_figure`, :func:`_save`): no
pyplot state and no global backend switch, so plotting works headless
(spark-submit, CI), from threads, and leaves a notebook's backend alone. The
functions take plain values (arrays, curves, trial lists); choosing what to
plot for a run is :mod:`orchestrator.tracking.plots`' job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from orchestrator.steps.calibration import ReliabilityCurve

logger = logging.getLogger(__name__)

_DPI = 110
_TOP_FEATURES = 20

__all__ = ["plot_classification_curves", "plot_feature_importance", "plot_reliability_diagram",
           "plot_residuals", "plot_shap_summary", "plot_threshold_curve", "plot_tuning_history"]


def plot_reliability_diagram(before: ReliabilityCurve | None, after: ReliabilityCurve | None,
                             path: str | Path, *, title: str = "Reliability diagram",
                             x_label: str = "predicted probability",
                             before_label: str = "uncalibrated",
                             after_label: str = "calibrated") -> Path:
    """Draw a reliability diagram with a histogram of the predicted probabilities.

    Top panel: observed frequency against mean predicted probability per bin,
    for the model before and after calibration, with the diagonal of perfect
    calibration. Bottom panel: how many rows fall in each probability bin.

    Parameters
    ----------
    before, after : ReliabilityCurve or None
        Per-bin statistics (:func:`orchestrator.steps.calibration.reliability_curve`);
        a curve that is None is left out (e.g. a model with no predict_proba).
    path : str or Path
        Where to write the PNG.
    title, x_label, before_label, after_label : str
        Figure title, x-axis label and legend entries.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If both curves are None.

    Examples
    --------
    >>> from orchestrator.steps.calibration import reliability_curve
    >>> curve = reliability_curve([0.1, 0.8, 0.9], [0, 1, 1])
    >>> plot_reliability_diagram(None, curve, "reliability.png")  # doctest: +SKIP
    PosixPath('reliability.png')
    """
    curves = [(c, label, style) for c, label, style in (
        (before, before_label, {"color": "tab:red", "marker": "o", "linestyle": "--"}),
        (after, after_label, {"color": "tab:blue", "marker": "s", "linestyle": "-"}),
    ) if c is not None]
    if not curves:
        raise ValueError("nothing to plot: both reliability curves are None.")
    path = Path(path)

    figure = _figure(7, 8, axes=False)
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
    top = figure.add_subplot(grid[0])
    bottom = figure.add_subplot(grid[1], sharex=top)

    top.plot([0, 1], [0, 1], color="0.4", linestyle=":", linewidth=1.5,
             label="perfectly calibrated")
    edges = curves[0][0].bin_edges
    for curve, label, style in curves:
        filled = curve.counts > 0
        top.plot(curve.mean_predicted[filled], curve.observed[filled], linewidth=2,
                 markersize=6, label=label, **style)
        bottom.hist(curve.probabilities, bins=edges, histtype="step", linewidth=2,
                    color=style["color"], linestyle=style["linestyle"], label=label)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency", title=title)
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    top.tick_params(labelbottom=False)
    bottom.set(xlabel=x_label, ylabel="rows per bin")
    bottom.set_xticks(np.linspace(0, 1, 6))
    bottom.grid(True, alpha=0.3)
    _save(figure, path)
    logger.info("reliability diagram written to %s", path)
    return path


def plot_tuning_history(trials: list[dict], path: str | Path, *, metric: str,
                        title: str = "Tuning history") -> Path:
    """Each trial's score in the order it finished, with the best score so far.

    Parameters
    ----------
    trials : list of dict
        ``tuning_summary["trials"]``: each with ``number``, ``status`` and ``score``.
    path : str or Path
        Where to write the PNG.
    metric : str
        The tuned metric (greater is better, as scikit-learn scorers).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If no trial has a score.
    """
    scored = [t for t in trials if t.get("score") is not None]
    if not scored:
        raise ValueError("nothing to plot: no trial has a score.")
    order = np.arange(1, len(scored) + 1)
    scores = np.asarray([float(t["score"]) for t in scored])
    failed = sum(1 for t in trials if t.get("score") is None)

    figure, axes = _figure(8, 4.5)
    axes.scatter(order, scores, color="tab:blue", s=28, label="trial score", zorder=3)
    axes.step(order, np.maximum.accumulate(scores), where="post", color="tab:orange",
              linewidth=2, label="best so far")
    best = int(np.argmax(scores))
    axes.scatter([order[best]], [scores[best]], color="tab:red", s=90, marker="*", zorder=4,
                 label=f"best: {scores[best]:.4f} (completed trial {order[best]})")
    axes.set(xlabel="completed trial", ylabel=metric,
             title=f"{title} ({len(scored)} scored" + (f", {failed} failed)" if failed else ")"))
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=9)  # never over a trial's point
    _save(figure, path)
    logger.info("tuning history written to %s", path)
    return Path(path)


_DPI = 110


_TOP_FEATURES = 20


def _figure(width: float = 6.4, height: float = 5.0, *, axes: bool = True):
    """A bare Agg figure (no pyplot state) and, by default, one axes on it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return (figure, figure.add_subplot()) if axes else figure


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def plot_classification_curves(evaluation: Mapping[str, Any], pos_label: Any,
                               output_dir: Path) -> list[Path]:
    """ROC and precision-recall curves (binary, with probabilities) and the confusion matrix.

    ``evaluation`` holds ``y_true``, ``y_pred``, optionally ``y_proba`` and
    ``classes``, and ``description`` (which rows these are).
    """
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        RocCurveDisplay,
    )

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


def plot_residuals(evaluation: Mapping[str, Any], path: Path) -> Path:
    """Actual vs predicted and residuals vs predicted, side by side (regression)."""
    from sklearn.metrics import PredictionErrorDisplay

    y_true = np.asarray(evaluation["y_true"], dtype=float)
    y_pred = np.asarray(evaluation["y_pred"], dtype=float)
    figure = _figure(11, 4.8, axes=False)
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


def plot_feature_importance(names: np.ndarray, values: np.ndarray, label: str,
                            path: Path) -> Path:
    """Horizontal bars of the largest importances (top 20), labelled with what they measure."""
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


def plot_threshold_curve(thresholds: np.ndarray, scores: np.ndarray, best_threshold: float,
                         path: str | Path, *, score_label: str, title: str) -> Path:
    """The cross-validated score of every candidate decision threshold, the chosen one marked.

    Parameters
    ----------
    thresholds, scores : array
        ``TunedThresholdClassifierCV.cv_results_`` (mean score over its folds).
    best_threshold : float
    path : str or Path
    score_label, title : str
        What the score is (a metric, or minus the expected cost) and the figure title.

    Returns
    -------
    Path
    """
    thresholds = np.asarray(thresholds, dtype=float)
    scores = np.asarray(scores, dtype=float)
    figure, axes = _figure(7, 4.5)
    axes.plot(thresholds, scores, color="tab:blue", linewidth=1.8, label="cross-validated score")
    best_score = float(np.interp(best_threshold, thresholds, scores)) if \
        np.all(np.diff(thresholds) >= 0) else float(np.max(scores))
    axes.axvline(best_threshold, color="tab:red", linestyle="--",
                 label=f"chosen threshold {best_threshold:.3f}")
    axes.scatter([best_threshold], [best_score], color="tab:red", zorder=3)
    axes.set(xlabel="decision threshold", ylabel=score_label, title=title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    return _save(figure, Path(path))


def plot_shap_summary(values: np.ndarray, features: np.ndarray, names: np.ndarray,
                      path: str | Path, *, title: str = "SHAP summary") -> Path:
    """A SHAP summary (beeswarm) plot drawn without pyplot: one row per feature, the
    largest mean |SHAP| at the top, each point a row coloured by its feature value.

    Parameters
    ----------
    values : array (rows, features)
        SHAP values.
    features : array (rows, features)
        The feature values the model saw (preprocessed).
    names : array of str
    path : str or Path

    Returns
    -------
    Path
    """
    values = np.asarray(values, dtype=float)
    features = np.asarray(features, dtype=float)
    order = np.argsort(np.abs(values).mean(axis=0))[::-1][:_TOP_FEATURES]
    rng = np.random.default_rng(0)
    figure, axes = _figure(8, max(3.0, 0.38 * len(order) + 1.6))
    scatter = None
    for row, index in enumerate(order[::-1]):
        column = features[:, index]
        span = np.nanmax(column) - np.nanmin(column) if np.isfinite(column).any() else 0.0
        colour = (column - np.nanmin(column)) / span if span > 0 else np.full(len(column), 0.5)
        jitter = rng.uniform(-0.3, 0.3, size=len(column))
        scatter = axes.scatter(values[:, index], row + jitter, c=colour, cmap="coolwarm",
                               vmin=0, vmax=1, s=8, alpha=0.7, linewidths=0)
    shown = [str(n) if len(str(n)) <= 45 else str(n)[:42] + "..." for n in names[order[::-1]]]
    axes.set_yticks(range(len(order)), shown)
    axes.axvline(0, color="grey", linewidth=0.8)
    axes.set(xlabel="SHAP value (impact on the model's raw output)", title=title)
    if scatter is not None:
        bar = figure.colorbar(scatter, ax=axes, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value")
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, Path(path))
