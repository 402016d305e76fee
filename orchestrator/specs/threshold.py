"""The threshold spec: choosing a binary classifier's decision threshold.

Either a metric to maximise (``objective: f1``) or the costs of the two kinds
of mistakes to minimise (``cost: {false_positive: 1, false_negative: 5}``).
The threshold is chosen by cross-validation on the training rows
(:class:`sklearn.model_selection.TunedThresholdClassifierCV`), never on the rows
used for validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.specs.model import ModelSpec
from orchestrator.specs.problems import Problems

#: Metrics that depend on the threshold (a ranking metric such as roc_auc does not).
THRESHOLD_OBJECTIVES = ("f1", "balanced_accuracy", "accuracy", "precision", "recall",
                        "matthews_corrcoef", "jaccard")
_KEYS = ("objective", "cost", "cv_folds", "random_state")
_COST_KEYS = ("false_positive", "false_negative")


@dataclass(frozen=True)
class ThresholdSpec:
    """A resolved threshold spec.

    Attributes
    ----------
    objective : str or None
        The metric to maximise (one of :data:`THRESHOLD_OBJECTIVES`); None when
        costs are given.
    cost_false_positive, cost_false_negative : float or None
        The cost of one false positive and of one false negative; the threshold
        minimises their expected sum per row.
    cv_folds : int
        Folds of the cross-validation that chooses the threshold.
    random_state : int
    """

    objective: str | None = None
    cost_false_positive: float | None = None
    cost_false_negative: float | None = None
    cv_folds: int = 5
    random_state: int = 0

    @property
    def uses_cost(self) -> bool:
        return self.cost_false_positive is not None

    def describe(self) -> str:
        if self.uses_cost:
            return (f"minimum expected cost (false positive {self.cost_false_positive:g}, "
                    f"false negative {self.cost_false_negative:g})")
        return f"maximum {self.objective}"


def parse_threshold_spec(raw: object, problems: Problems,
                         model: ModelSpec | None) -> ThresholdSpec | None:
    """Parse ``threshold``; record every problem in ``problems``."""
    if raw is None:
        return None
    where = "threshold"
    if not isinstance(raw, Mapping):
        problems.expected(where, "a mapping such as {objective: f1} or {cost: {false_positive: "
                          "1, false_negative: 5}}", raw)
        return None
    problems.unknown_keys(raw, _KEYS, where)
    if model is not None and model.task != "classification":
        problems.add(where, f"a decision threshold applies to binary classifiers only, but the "
                     f"model's task is {model.task!r}; remove the threshold section.")
    elif model is not None:
        cls = model.estimator_class()
        if not (hasattr(cls, "predict_proba") or hasattr(cls, "decision_function")):
            problems.add(where, f"{cls.__name__} has neither predict_proba nor "
                         "decision_function, so it has no score to threshold.")
    objective, cost = raw.get("objective"), raw.get("cost")
    fp = fn = None
    if (objective is None) == (cost is None):
        problems.add(where, "give exactly one of objective (a metric to maximise, e.g. f1) or "
                     "cost ({false_positive: 1, false_negative: 5}).")
    elif objective is not None and objective not in THRESHOLD_OBJECTIVES:
        problems.expected(f"{where}.objective", "a threshold-dependent metric: "
                          + ", ".join(THRESHOLD_OBJECTIVES), objective)
        objective = None
    elif cost is not None:
        if not isinstance(cost, Mapping):
            problems.expected(f"{where}.cost", "a mapping {false_positive: <cost>, "
                              "false_negative: <cost>}", cost)
        else:
            problems.unknown_keys(cost, _COST_KEYS, f"{where}.cost")
            values = []
            for key in _COST_KEYS:
                value = cost.get(key)
                if (isinstance(value, bool) or not isinstance(value, (int, float))
                        or value < 0):
                    problems.expected(f"{where}.cost.{key}", "a cost >= 0 (a number)", value)
                    value = None
                values.append(value)
            fp, fn = values
            if fp is not None and fn is not None and fp + fn == 0:
                problems.add(f"{where}.cost", "both costs are 0, so every threshold is "
                             "equally good; give at least one positive cost.")
            if fp is None or fn is None:
                fp = fn = None
    defaults = ThresholdSpec()
    cv_folds = raw.get("cv_folds", defaults.cv_folds)
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, int) or cv_folds < 2:
        problems.expected(f"{where}.cv_folds", "an integer >= 2", cv_folds)
        cv_folds = defaults.cv_folds
    random_state = raw.get("random_state", defaults.random_state)
    if isinstance(random_state, bool) or not isinstance(random_state, int):
        problems.expected(f"{where}.random_state", "an integer", random_state)
        random_state = defaults.random_state
    return ThresholdSpec(objective=objective if cost is None else None,
                         cost_false_positive=None if fp is None else float(fp),
                         cost_false_negative=None if fn is None else float(fn),
                         cv_folds=cv_folds, random_state=random_state)
