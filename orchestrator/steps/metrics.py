"""Which metrics a task is judged by, and one scorer that computes them all from one prediction.

The names are scikit-learn scorer names (greater is better: ``neg_log_loss``
is minus the log loss), so a user's ``metric:`` means the same here as in
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestrator.specs.model import DEFAULT_METRICS, ModelSpec

BINARY_METRICS = ("roc_auc", "average_precision", "accuracy", "balanced_accuracy", "f1",
                  "precision", "recall", "neg_log_loss", "neg_brier_score")
MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted",
                      "roc_auc_ovr", "neg_log_loss")
REGRESSION_METRICS = ("r2", "neg_root_mean_squared_error", "neg_mean_absolute_error",
                      "neg_mean_squared_error")


def target_kind(task: str, y: Sequence[Any]) -> str:
    """``"binary"``, ``"multiclass"`` or ``"regression"`` for the task and its labels."""
    if task == "regression":
        return "regression"
    return "binary" if len(np.unique(np.asarray(y))) <= 2 else "multiclass"


def primary_metric(model_spec: ModelSpec, kind: str) -> str:
    """The spec's metric, else the default for the kind of target."""
    return model_spec.metric or DEFAULT_METRICS[kind]


def default_pos_label(classes: Sequence[Any], requested: Any = None) -> Any:
    """The positive class of a binary task: the requested one, else the greater label.

    That is scikit-learn's convention (``classes_[1]``).
    """
    if requested is not None:
        return requested
    return sorted(classes, key=lambda c: (str(type(c)), c))[-1]


class WorkflowScorer:
    """A cross_validate scorer returning every metric of a task from one prediction.

    Parameters
    ----------
    kind : {"binary", "multiclass", "regression"}
    primary : str
        The primary metric; computed with scikit-learn's own scorer when it
        is not one of the standard set.
    pos_label : object, optional
        Positive class for binary metrics.
    """

    def __init__(self, kind: str, primary: str, pos_label: Any = None):
        self.kind = kind
        self.primary = primary
        self.pos_label = pos_label

    def metric_names(self) -> list[str]:
        standard = {"binary": BINARY_METRICS, "multiclass": MULTICLASS_METRICS,
                    "regression": REGRESSION_METRICS}[self.kind]
        names = list(standard)
        if self.primary not in names:
            names.insert(0, self.primary)
        return names

    def __call__(self, estimator, X, y) -> dict[str, float]:
        if self.kind == "regression":
            scores = _regression_scores(np.asarray(estimator.predict(X), dtype=float),
                                        np.asarray(y, dtype=float))
        else:
            scores = _classification_scores(estimator, X, np.asarray(y), self.kind,
                                            self.pos_label)
        if self.primary not in scores:
            scorer = _scorer_with_pos_label(self.primary, self.pos_label if self.kind == "binary"
                                            else None)
            scores[self.primary] = float(scorer(estimator, X, y))
        return scores


class MetricScorer:
    """``scorer(estimator, X, y) -> float`` for one metric, with the task's positive class.

    The tuning objective: unlike a bare scikit-learn scorer name, it scores
    the positive class the model spec names.
    """

    def __init__(self, kind: str, metric: str, pos_label: Any = None):
        self.kind = kind
        self.metric = metric
        self.pos_label = pos_label
        self.__name__ = metric

    def __call__(self, estimator, X, y) -> float:
        return WorkflowScorer(self.kind, self.metric, self.pos_label)(estimator, X, y)[self.metric]


def _scorer_with_pos_label(name: str, pos_label: Any):
    """scikit-learn's scorer for ``name``, scoring ``pos_label`` where the metric takes one."""
    import inspect

    from sklearn.metrics import get_scorer, make_scorer

    scorer = get_scorer(name)
    score_func = getattr(scorer, "_score_func", None)
    if pos_label is None or score_func is None:
        return scorer
    if "pos_label" not in inspect.signature(score_func).parameters:
        return scorer
    kwargs = {**getattr(scorer, "_kwargs", {}), "pos_label": pos_label}
    return make_scorer(score_func, greater_is_better=getattr(scorer, "_sign", 1) > 0,
                       response_method=getattr(scorer, "_response_method", "predict"), **kwargs)


def _regression_scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    mse = metrics.mean_squared_error(y, pred)
    return {"r2": float(metrics.r2_score(y, pred)),
            "neg_root_mean_squared_error": -float(np.sqrt(mse)),
            "neg_mean_absolute_error": -float(metrics.mean_absolute_error(y, pred)),
            "neg_mean_squared_error": -float(mse)}


def _classification_scores(estimator, X, y: np.ndarray, kind: str,
                           pos_label: Any) -> dict[str, float]:
    from sklearn import metrics

    classes = np.asarray(estimator.classes_)
    proba = estimator.predict_proba(X) if hasattr(estimator, "predict_proba") else None
    if proba is not None:
        # Same rule as predict for probabilistic classifiers, without a second pass.
        pred = classes[np.argmax(proba, axis=1)]
    else:
        pred = estimator.predict(X)
    scores = {"accuracy": float(metrics.accuracy_score(y, pred)),
              "balanced_accuracy": float(metrics.balanced_accuracy_score(y, pred))}
    if kind == "binary":
        pos = default_pos_label(classes, pos_label)
        positive = y == pos
        scores["f1"] = float(metrics.f1_score(y, pred, pos_label=pos, zero_division=0))
        scores["precision"] = float(metrics.precision_score(y, pred, pos_label=pos,
                                                            zero_division=0))
        scores["recall"] = float(metrics.recall_score(y, pred, pos_label=pos, zero_division=0))
        if proba is not None:
            p_pos = proba[:, list(classes).index(pos)]
        else:
            decision = estimator.decision_function(X)
            p_pos = decision if list(classes).index(pos) == 1 else -decision
        if positive.all() or not positive.any():
            scores["roc_auc"] = float("nan")
            scores["average_precision"] = float("nan")
        else:
            scores["roc_auc"] = float(metrics.roc_auc_score(positive, p_pos))
            scores["average_precision"] = float(metrics.average_precision_score(positive, p_pos))
        if proba is not None:
            scores["neg_brier_score"] = -float(metrics.brier_score_loss(positive, p_pos))
            scores["neg_log_loss"] = -float(metrics.log_loss(y, proba, labels=classes))
    else:
        scores["f1_macro"] = float(metrics.f1_score(y, pred, average="macro", zero_division=0))
        scores["f1_weighted"] = float(metrics.f1_score(y, pred, average="weighted",
                                                       zero_division=0))
        if proba is not None:
            scores["neg_log_loss"] = -float(metrics.log_loss(y, proba, labels=classes))
            present = np.isin(classes, np.unique(y))
            if present.all():
                scores["roc_auc_ovr"] = float(metrics.roc_auc_score(
                    y, proba, multi_class="ovr", labels=classes))
            else:
                scores["roc_auc_ovr"] = float("nan")
    return scores
