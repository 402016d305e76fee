"""Choosing a binary classifier's decision threshold (after calibration, before validation).

The procedure (pipeline, or calibration around it) is wrapped in scikit-learn's
:class:`~sklearn.model_selection.TunedThresholdClassifierCV`: it cross-validates
the procedure on the rows it is fitted on, picks the threshold that maximises
the objective (or minimises the expected cost), and refits the procedure on all
of them. The wrapped procedure is what the workflow returns, so ``predict``, the
logged MLflow model and batch scoring apply the threshold; and it is what
cross-validation refits in each fold, so the threshold is chosen inside the
folds and validation rows never choose it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from orchestrator.specs.threshold import ThresholdSpec

logger = logging.getLogger(__name__)

__all__ = ["negative_expected_cost", "symmetric_score", "threshold_scorer", "threshold_summary",
           "with_threshold"]


def negative_expected_cost(y_true, y_pred, *, pos_label: Any, cost_false_positive: float,
                           cost_false_negative: float, sample_weight=None) -> float:
    """Minus the mean cost per row of the mistakes in ``y_pred`` (greater is better).

    With ``sample_weight`` a row's mistake costs its weight times the cost, and the
    mean is over the total weight.

    Examples
    --------
    >>> negative_expected_cost([0, 1, 1, 0], [1, 0, 1, 0], pos_label=1,
    ...                        cost_false_positive=1, cost_false_negative=5)
    -1.5
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    weights = (np.ones(len(y_true)) if sample_weight is None
               else np.asarray(sample_weight, dtype=float))
    false_positives = np.sum(weights * ((y_pred == pos_label) & (y_true != pos_label)))
    false_negatives = np.sum(weights * ((y_pred != pos_label) & (y_true == pos_label)))
    cost = cost_false_positive * false_positives + cost_false_negative * false_negatives
    total = float(np.sum(weights)) if sample_weight is not None else len(y_true)
    return -float(cost) / total if total > 0 else 0.0


def threshold_scorer(spec: ThresholdSpec, pos_label: Any):
    """The scikit-learn scorer the threshold maximises."""
    from sklearn.metrics import (
        f1_score,
        jaccard_score,
        make_scorer,
        precision_score,
        recall_score,
    )

    if spec.uses_cost:
        return make_scorer(negative_expected_cost, pos_label=pos_label,
                           cost_false_positive=spec.cost_false_positive,
                           cost_false_negative=spec.cost_false_negative)
    with_pos_label = {"f1": f1_score, "precision": precision_score, "recall": recall_score,
                      "jaccard": jaccard_score}
    if spec.objective in with_pos_label:
        # zero_division=0: a threshold predicting no positive scores 0, without a warning.
        return make_scorer(with_pos_label[spec.objective], pos_label=pos_label,
                           zero_division=0.0)
    # These metrics need no positive class, but TunedThresholdClassifierCV reads it from the
    # scorer's arguments (string labels have no default), so it is passed and ignored.
    return make_scorer(symmetric_score, metric=spec.objective, pos_label=pos_label)


def symmetric_score(y_true, y_pred, *, metric: str, pos_label: Any = None,
                    sample_weight=None) -> float:
    """accuracy, balanced_accuracy or matthews_corrcoef (``pos_label`` is not used).

    Examples
    --------
    >>> symmetric_score([0, 1, 1, 1], [0, 1, 0, 1], metric="accuracy", pos_label=1)
    0.75
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        matthews_corrcoef,
    )

    functions = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score,
                 "matthews_corrcoef": matthews_corrcoef}
    return float(functions[metric](y_true, y_pred, sample_weight=sample_weight))


def with_threshold(procedure, spec: ThresholdSpec, pos_label: Any, *, weighted: bool = False):
    """``procedure`` wrapped to choose its decision threshold by cross-validation (unfitted).

    With ``weighted`` the objective is scored with the rows' ``sample_weight``: fit the
    wrapper with :func:`orchestrator.steps.weights.fit_weighted`, which routes the
    weights to the procedure's fit and to this scorer.
    """
    import sklearn
    from sklearn.model_selection import StratifiedKFold, TunedThresholdClassifierCV

    scorer = threshold_scorer(spec, pos_label)
    if weighted:
        with sklearn.config_context(enable_metadata_routing=True):
            scorer = scorer.set_score_request(sample_weight=True)
    return TunedThresholdClassifierCV(
        procedure, scoring=scorer,
        cv=StratifiedKFold(n_splits=spec.cv_folds, shuffle=True,
                           random_state=spec.random_state),
        store_cv_results=True, random_state=spec.random_state)


def threshold_summary(model, spec: ThresholdSpec) -> dict[str, Any]:
    """What the fitted wrapper chose: the threshold, its cross-validated score, the curve."""
    results = getattr(model, "cv_results_", None) or {}
    summary: dict[str, Any] = {
        "threshold": float(model.best_threshold_),
        "objective": spec.describe(),
        "cv_score": float(model.best_score_),
        "cv_folds": spec.cv_folds,
        "score_kind": "minus expected cost per row" if spec.uses_cost else spec.objective,
    }
    if results:
        summary["curve"] = {"thresholds": np.asarray(results["thresholds"], dtype=float),
                            "scores": np.asarray(results["scores"], dtype=float)}
    return summary
