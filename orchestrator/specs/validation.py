"""How the workflow validates a model: cross-validation, a hold-out, or none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.specs.problems import Problems

STRATEGIES = ("cross_validation", "train_test", "none")
_PARAMS = {
    "cross_validation": ("cv_folds", "shuffle", "random_state"),
    "train_test": ("test_size", "random_state", "stratify"),
    "none": (),
}


@dataclass(frozen=True)
class ValidationSpec:
    """A validation strategy and its parameters.

    ``cv_folds`` folds for cross-validation (stratified for classification);
    ``test_size`` of the rows held out for train_test, never seen by fitting,
    tuning or calibration.
    """

    strategy: str = "cross_validation"
    cv_folds: int = 5
    shuffle: bool = True
    test_size: float = 0.2
    random_state: int | None = 42
    stratify: bool = True


def parse_validation_spec(strategy: object, params: object, problems: Problems) -> ValidationSpec:
    where = "validation_strategy"
    if strategy not in STRATEGIES:
        problems.choice({"validation_strategy": strategy}, "validation_strategy", STRATEGIES,
                        "run_ml_workflow")
        return ValidationSpec()
    params = params if params is not None else {}
    if not isinstance(params, Mapping):
        problems.expected("validation_params", "a mapping", params)
        return ValidationSpec(strategy=strategy)
    allowed = _PARAMS[strategy]
    problems.unknown_keys(params, allowed, f"validation_params ({strategy})")
    where = "validation_params"
    random_state = params.get("random_state", 42)
    if random_state is not None:
        random_state = problems.number(params, "random_state", where, default=42, integer=True,
                                       low=0)
    if strategy == "cross_validation":
        folds = problems.number(params, "cv_folds", where, default=5, integer=True, low=2)
        shuffle = problems.boolean(params, "shuffle", where, default=True)
        return ValidationSpec(strategy=strategy, cv_folds=folds or 5, shuffle=shuffle,
                              random_state=random_state)
    if strategy == "train_test":
        test_size = problems.number(params, "test_size", where, default=0.2, low=0, high=1,
                                    low_open=True, high_open=True)
        stratify = problems.boolean(params, "stratify", where, default=True)
        return ValidationSpec(strategy=strategy, test_size=test_size or 0.2,
                              random_state=random_state, stratify=stratify)
    return ValidationSpec(strategy="none")
