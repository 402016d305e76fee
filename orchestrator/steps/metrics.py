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

    def __call__(self, estimator, X, y, sample_weight=None) -> dict[str, float]:
        """Every metric of the task; with ``sample_weight`` each row counts by its weight."""
        predictions = _Predictions(estimator, X, y, self.kind, self.pos_label, sample_weight)
        scores = {}
        for name in self.metric_names():
            value = predictions.score(name, fallback=name == self.primary)
            if value is not None:
                scores[name] = value
        return scores


class MetricScorer:
    """``scorer(estimator, X, y) -> float`` for one metric, with the task's positive class.

    The tuning objective: unlike a bare scikit-learn scorer name, it scores
    the positive class the model spec names, and it gives exactly the value
    :class:`WorkflowScorer` reports for the same metric, computing only that one.
    """

    def __init__(self, kind: str, metric: str, pos_label: Any = None):
        self.kind = kind
        self.metric = metric
        self.pos_label = pos_label
        self.__name__ = metric

    def __call__(self, estimator, X, y, sample_weight=None) -> float:
        return _Predictions(estimator, X, y, self.kind, self.pos_label,
                            sample_weight).score(self.metric)


class _Predictions:
    """One model's predictions on one set of rows, made once and only when a metric needs them."""

    def __init__(self, estimator, X, y, kind: str, pos_label: Any, sample_weight=None):
        self.estimator, self.X, self.kind = estimator, X, kind
        self.y = np.asarray(y, dtype=float) if kind == "regression" else np.asarray(y)
        self.pos_label = pos_label
        #: Row weights (None: every row counts once), passed to every metric.
        self.w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def classes(self) -> np.ndarray:
        return self._get("classes", lambda: np.asarray(self.estimator.classes_))

    @property
    def proba(self):
        return self._get("proba", lambda: self.estimator.predict_proba(self.X)
                         if hasattr(self.estimator, "predict_proba") else None)

    @property
    def pred(self) -> np.ndarray:
        def compute():
            if self.kind == "regression":
                return np.asarray(self.estimator.predict(self.X), dtype=float)
            # Same rule as predict for probabilistic classifiers, without a second pass; a
            # tuned decision threshold (TunedThresholdClassifierCV) is not argmax: its predict.
            if self.proba is not None and not hasattr(self.estimator, "best_threshold_"):
                return self.classes[np.argmax(self.proba, axis=1)]
            return self.estimator.predict(self.X)
        return self._get("pred", compute)

    @property
    def positive_class(self):
        return default_pos_label(self.classes, self.pos_label)

    @property
    def positive(self) -> np.ndarray:
        return self.y == self.positive_class

    @property
    def positive_score(self) -> np.ndarray:
        def compute():
            index = list(self.classes).index(self.positive_class)
            if self.proba is not None:
                return self.proba[:, index]
            decision = self.estimator.decision_function(self.X)
            return decision if index == 1 else -decision
        return self._get("positive_score", compute)

    def score(self, name: str, *, fallback: bool = True) -> float | None:
        """The metric ``name`` (greater is better), from these predictions.

        Standard metrics of the task are computed here. Any other scikit-learn
        scorer name, or a standard one these predictions cannot give (a
        probability metric of a model without ``predict_proba``), is scored by
        scikit-learn when ``fallback``, else None.
        """
        compute = _METRICS.get(self.kind, {}).get(name)
        value = compute(self) if compute is not None else None
        if value is not None:
            return float(value)
        if not fallback:
            return None
        scorer = _scorer_with_pos_label(name, self.pos_label if self.kind == "binary" else None)
        weighted = {} if self.w is None else {"sample_weight": self.w}
        return float(scorer(self.estimator, self.X, self.y, **weighted))


def _ranking(metric):
    def compute(p: _Predictions):
        if p.positive.all() or not p.positive.any():
            return float("nan")
        return metric(p.positive, p.positive_score, sample_weight=p.w)
    return compute


def _needs_proba(compute):
    def guarded(p: _Predictions):
        return None if p.proba is None else compute(p)
    return guarded


def _build_metrics() -> dict[str, dict[str, Any]]:
    from sklearn import metrics as m

    common = {
        "accuracy": lambda p: m.accuracy_score(p.y, p.pred, sample_weight=p.w),
        "balanced_accuracy": lambda p: m.balanced_accuracy_score(p.y, p.pred,
                                                                 sample_weight=p.w),
    }
    binary = {
        **common,
        "f1": lambda p: m.f1_score(p.y, p.pred, pos_label=p.positive_class, zero_division=0,
                                   sample_weight=p.w),
        "precision": lambda p: m.precision_score(p.y, p.pred, pos_label=p.positive_class,
                                                 zero_division=0, sample_weight=p.w),
        "recall": lambda p: m.recall_score(p.y, p.pred, pos_label=p.positive_class,
                                           zero_division=0, sample_weight=p.w),
        "roc_auc": _ranking(m.roc_auc_score),
        "average_precision": _ranking(m.average_precision_score),
        "neg_brier_score": _needs_proba(lambda p: -m.brier_score_loss(
            p.positive, p.positive_score, sample_weight=p.w)),
        "neg_log_loss": _needs_proba(lambda p: -m.log_loss(p.y, p.proba, labels=p.classes,
                                                           sample_weight=p.w)),
    }

    def roc_auc_ovr(p: _Predictions):
        if not np.isin(p.classes, np.unique(p.y)).all():
            return float("nan")
        return m.roc_auc_score(p.y, p.proba, multi_class="ovr", labels=p.classes,
                               sample_weight=p.w)

    multiclass = {
        **common,
        "f1_macro": lambda p: m.f1_score(p.y, p.pred, average="macro", zero_division=0,
                                         sample_weight=p.w),
        "f1_weighted": lambda p: m.f1_score(p.y, p.pred, average="weighted", zero_division=0,
                                            sample_weight=p.w),
        "neg_log_loss": _needs_proba(lambda p: -m.log_loss(p.y, p.proba, labels=p.classes,
                                                           sample_weight=p.w)),
        "roc_auc_ovr": _needs_proba(roc_auc_ovr),
    }
    regression = {
        "r2": lambda p: m.r2_score(p.y, p.pred, sample_weight=p.w),
        "neg_root_mean_squared_error": lambda p: -np.sqrt(m.mean_squared_error(
            p.y, p.pred, sample_weight=p.w)),
        "neg_mean_absolute_error": lambda p: -m.mean_absolute_error(p.y, p.pred,
                                                                    sample_weight=p.w),
        "neg_mean_squared_error": lambda p: -m.mean_squared_error(p.y, p.pred,
                                                                  sample_weight=p.w),
    }
    return {"binary": binary, "multiclass": multiclass, "regression": regression}


class _LazyMetrics(dict):
    """The metric table, built on first use (importing sklearn.metrics is not free)."""

    def get(self, key, default=None):
        if not self:
            self.update(_build_metrics())
        return super().get(key, default)


_METRICS = _LazyMetrics()


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
