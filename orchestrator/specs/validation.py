"""How the workflow validates a model: cross-validation (random, grouped, time-ordered or
nested around tuning), a hold-out (random or the latest rows), or none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.specs.problems import Problems

STRATEGIES = ("cross_validation", "group_k_fold", "time_series", "nested_cross_validation",
              "train_test", "none")

#: Strategies scored by folds whose mean is ``cv_score``.
CV_STRATEGIES = ("cross_validation", "group_k_fold", "time_series", "nested_cross_validation")

#: Where the folds run: any fold strategy takes these.
_RUN_PARAMS = ("parallelism", "on_driver")
_PARAMS = {
    "cross_validation": ("cv_folds", "shuffle", "random_state", *_RUN_PARAMS),
    "group_k_fold": ("cv_folds", "groups", *_RUN_PARAMS),
    "time_series": ("cv_folds", "order_by", "gap", "max_train_size", *_RUN_PARAMS),
    "nested_cross_validation": ("outer_folds", "shuffle", "random_state", "groups", "order_by",
                                "gap", "max_train_size", *_RUN_PARAMS),
    "train_test": ("test_size", "random_state", "stratify", "order_by", "gap"),
    "none": (),
}


@dataclass(frozen=True)
class ValidationSpec:
    """A validation strategy and its parameters.

    ``cv_folds`` folds for cross-validation (stratified for classification),
    ``group_k_fold`` (no value of the ``groups`` column on both sides of a fold)
    or ``time_series`` (scikit-learn's ``TimeSeriesSplit`` over the rows ordered
    by ``order_by``, with ``gap`` rows left out before each test fold and at most
    ``max_train_size`` training rows); ``nested_cross_validation`` tunes inside
    each of ``outer_folds`` folds (random, grouped when ``groups`` is set, or
    time-ordered when ``order_by`` is set) and scores on its held-out part;
    ``test_size`` of the rows held out for train_test (the latest rows by
    ``order_by`` when set, after a ``gap``), never seen by fitting, tuning or
    calibration. ``parallelism`` folds run at once as Spark tasks (default: the
    session's task slots); ``on_driver`` fits them on the driver one after another.
    """

    strategy: str = "cross_validation"
    cv_folds: int = 5
    shuffle: bool = True
    test_size: float = 0.2
    random_state: int | None = 42
    stratify: bool = True
    groups: str | None = None
    order_by: str | None = None
    gap: int = 0
    max_train_size: int | None = None
    outer_folds: int = 5
    parallelism: int | None = None
    on_driver: bool = False

    @property
    def is_cross_validation(self) -> bool:
        """True when the score is the mean over folds."""
        return self.strategy in CV_STRATEGIES

    @property
    def split_kind(self) -> str:
        """``group_k_fold``, ``time_series`` or ``k_fold`` (random, stratified for classifiers)."""
        if self.strategy in ("group_k_fold", "time_series"):
            return self.strategy
        if self.strategy == "nested_cross_validation":
            if self.groups is not None:
                return "group_k_fold"
            if self.order_by is not None:
                return "time_series"
        if self.strategy == "train_test" and self.order_by is not None:
            return "time_ordered_holdout"
        return "k_fold"

    @property
    def folds(self) -> int:
        """Folds of the cross-validation (the outer folds for nested CV)."""
        return self.outer_folds if self.strategy == "nested_cross_validation" else self.cv_folds

    @property
    def side_columns(self) -> tuple[str, ...]:
        """Columns loaded with the data for splitting only (not features)."""
        return tuple(c for c in dict.fromkeys((self.groups, self.order_by)) if c is not None)

    def settings(self) -> dict:
        """The split settings that apply to this strategy, for the summary and MLflow."""
        allowed = _PARAMS[self.strategy]
        values = {"kind": self.split_kind}
        for key in allowed:
            if key == "cv_folds" or key == "outer_folds":
                values[key] = getattr(self, key)
            elif key not in _RUN_PARAMS:
                value = getattr(self, key)
                if value is not None:
                    values[key] = value
        return values


def parse_validation_spec(strategy: object, params: object, problems: Problems) -> ValidationSpec:
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
    get = {k: params[k] for k in params if k in allowed}
    defaults = ValidationSpec()
    random_state = get.get("random_state", defaults.random_state)
    if random_state is not None:
        random_state = problems.number(get, "random_state", where,
                                       default=defaults.random_state, integer=True, low=0)
    values: dict = {"strategy": strategy, "random_state": random_state}
    if strategy == "none":
        return ValidationSpec(strategy="none")
    if "cv_folds" in allowed:
        values["cv_folds"] = problems.number(get, "cv_folds", where, default=defaults.cv_folds,
                                             integer=True, low=2) or defaults.cv_folds
    if "outer_folds" in allowed:
        values["outer_folds"] = problems.number(get, "outer_folds", where,
                                                default=defaults.outer_folds, integer=True,
                                                low=2) or defaults.outer_folds
    if "shuffle" in allowed:
        values["shuffle"] = problems.boolean(get, "shuffle", where, default=defaults.shuffle)
    for key in ("groups", "order_by"):
        if key in allowed:
            required = (strategy == "group_k_fold" and key == "groups") or (
                strategy == "time_series" and key == "order_by")
            values[key] = (problems.string(get, key, where) if required
                           else problems.string(get, key, where, default=getattr(defaults, key)))
    if strategy == "nested_cross_validation" and values.get("groups") and values.get("order_by"):
        problems.add(where, "give at most one of 'groups' (grouped outer folds) and 'order_by' "
                     "(time-ordered outer folds).")
    if "gap" in allowed:
        values["gap"] = problems.number(get, "gap", where, default=defaults.gap, integer=True,
                                        low=0) or defaults.gap
        if values["gap"] and strategy != "time_series" and not values.get("order_by"):
            problems.add(f"{where}.gap", "a gap needs time-ordered rows; set order_by "
                         "(the timestamp column) too.")
    if "max_train_size" in allowed:
        values["max_train_size"] = problems.number(get, "max_train_size", where,
                                                   default=defaults.max_train_size,
                                                   integer=True, low=1)
        if values["max_train_size"] and strategy != "time_series" and not values.get("order_by"):
            problems.add(f"{where}.max_train_size", "max_train_size applies to time-ordered "
                         "folds; set order_by (the timestamp column) too.")
    if "parallelism" in allowed:
        values["parallelism"] = problems.number(get, "parallelism", where,
                                                default=defaults.parallelism, integer=True,
                                                low=1)
        values["on_driver"] = problems.boolean(get, "on_driver", where,
                                               default=defaults.on_driver)
    if strategy == "train_test":
        values["test_size"] = problems.number(get, "test_size", where,
                                              default=defaults.test_size, low=0, high=1,
                                              low_open=True, high_open=True) or defaults.test_size
        values["stratify"] = problems.boolean(get, "stratify", where, default=defaults.stratify)
        if values.get("order_by"):
            if get.get("stratify") is True:
                problems.add(f"{where}.stratify", "a time-ordered hold-out (order_by) holds out "
                             "the latest rows and cannot be stratified; drop stratify.")
            values["stratify"] = False
    return ValidationSpec(**values)


def check_nested_needs_tuning(spec: ValidationSpec, has_tuning: bool, problems: Problems) -> None:
    """Nested cross-validation tunes inside each outer fold: it needs a tuning spec."""
    if spec.strategy == "nested_cross_validation" and not has_tuning:
        problems.add("validation_strategy", "nested_cross_validation tunes inside each outer "
                     "fold and needs a tuning_spec; add one, or use cross_validation.")
