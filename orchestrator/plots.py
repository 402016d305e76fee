"""Diagnostic plots written as PNG files.

matplotlib is imported inside the functions and drawn with the Agg canvas on a
bare :class:`~matplotlib.figure.Figure`: no pyplot state and no global backend
switch, so plotting works headless (spark-submit, CI) and leaves a notebook's
backend alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from orchestrator.steps.calibration import ReliabilityCurve

logger = logging.getLogger(__name__)

__all__ = ["plot_reliability_diagram"]


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = [(c, label, style) for c, label, style in (
        (before, before_label, {"color": "tab:red", "marker": "o", "linestyle": "--"}),
        (after, after_label, {"color": "tab:blue", "marker": "s", "linestyle": "-"}),
    ) if c is not None]
    if not curves:
        raise ValueError("nothing to plot: both reliability curves are None.")
    path = Path(path)

    figure = Figure(figsize=(7, 8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
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
    figure.savefig(path, format="png")
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [t for t in trials if t.get("score") is not None]
    if not scored:
        raise ValueError("nothing to plot: no trial has a score.")
    order = np.arange(1, len(scored) + 1)
    scores = np.asarray([float(t["score"]) for t in scored])
    failed = sum(1 for t in trials if t.get("score") is None)

    figure = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
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
    figure.savefig(path, format="png")
    logger.info("tuning history written to %s", path)
    return path
