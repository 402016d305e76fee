"""The model spec: which estimator, its parameters, the task and its metric.

Only scikit-learn, xgboost and lightgbm classes can be named: a config never
imports anything else.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import did_you_mean
from orchestrator.specs.problems import Problems

#: Short names users write in YAML, and the class each one stands for.
ESTIMATOR_REGISTRY: dict[str, str] = {
    "logistic_regression": "sklearn.linear_model.LogisticRegression",
    "random_forest": "sklearn.ensemble.RandomForestClassifier",
    "random_forest_classifier": "sklearn.ensemble.RandomForestClassifier",
    "gradient_boosting": "sklearn.ensemble.GradientBoostingClassifier",
    "gradient_boosting_classifier": "sklearn.ensemble.GradientBoostingClassifier",
    "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingClassifier",
    "hist_gradient_boosting_classifier": "sklearn.ensemble.HistGradientBoostingClassifier",
    "gaussian_nb": "sklearn.naive_bayes.GaussianNB",
    "linear_svc": "sklearn.svm.LinearSVC",
    "linear_regression": "sklearn.linear_model.LinearRegression",
    "ridge": "sklearn.linear_model.Ridge",
    "lasso": "sklearn.linear_model.Lasso",
    "random_forest_regressor": "sklearn.ensemble.RandomForestRegressor",
    "gradient_boosting_regressor": "sklearn.ensemble.GradientBoostingRegressor",
    "hist_gradient_boosting_regressor": "sklearn.ensemble.HistGradientBoostingRegressor",
    "xgboost": "xgboost.XGBClassifier",
    "xgboost_classifier": "xgboost.XGBClassifier",
    "xgboost_regressor": "xgboost.XGBRegressor",
    "lightgbm": "lightgbm.LGBMClassifier",
    "lightgbm_classifier": "lightgbm.LGBMClassifier",
    "lightgbm_regressor": "lightgbm.LGBMRegressor",
}
ALLOWED_MODULE_PREFIXES = ("sklearn.", "xgboost.", "lightgbm.")
TASKS = ("classification", "regression")
DEFAULT_METRICS = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}

# Scorers that only make sense for one task (sklearn scorer names).
_REGRESSION_ONLY_PREFIXES = ("r2", "neg_mean", "neg_root_mean", "neg_median", "explained_variance",
                             "max_error", "neg_max_error", "d2_")
_MODEL_KEYS = ("estimator", "params", "task", "metric", "pos_label", "class_weight")
_PROBABILITY_METRICS = ("neg_log_loss", "neg_brier_score")


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model spec.

    Attributes
    ----------
    estimator : str
        What the user wrote (a registry name or a dotted class path).
    class_path : str
        The dotted path of the estimator class.
    params : dict
        Constructor parameters, checked against the class's own parameters.
    task : {"classification", "regression"}
    metric : str or None
        Primary metric (a scikit-learn scorer name); None means the default for
        the task, decided once the labels are known.
    pos_label : object or None
        The positive class of a binary task.
    class_weight : "balanced", dict or None
        Class weights for imbalanced classes, set as the estimator's own
        ``class_weight`` parameter (only estimators that have one accept it).
    """

    estimator: str
    class_path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    task: str = "classification"
    metric: str | None = None
    pos_label: Any = None
    class_weight: Any = None

    def estimator_class(self) -> type:
        return load_estimator_class(self.class_path)

    def make_estimator(self, **overrides: Any):
        """A new unfitted estimator with the spec's params and ``overrides``."""
        params = dict(self.params)
        if self.class_weight is not None:
            params["class_weight"] = (dict(self.class_weight)
                                      if isinstance(self.class_weight, Mapping)
                                      else self.class_weight)
        return self.estimator_class()(**{**params, **overrides})


def load_estimator_class(class_path: str) -> type:
    module_name, _, class_name = class_path.rpartition(".")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def estimator_param_names(cls: type) -> list[str]:
    """The constructor parameters of an estimator class (sklearn's own rule)."""
    get_names = getattr(cls, "_get_param_names", None)
    if _takes_extra_params(cls):
        # XGBClassifier's signature is (objective, **kwargs); its get_params lists the rest.
        try:
            return list(cls().get_params(deep=False))
        except TypeError:
            pass
    if get_names is not None:
        return list(get_names())
    signature = inspect.signature(cls.__init__)
    return [p for p in signature.parameters if p != "self"]


def _resolve_class(name: str, where: str, problems: Problems) -> tuple[str, type] | None:
    if name in ESTIMATOR_REGISTRY:
        path = ESTIMATOR_REGISTRY[name]
    elif "." in name:
        if not name.startswith(ALLOWED_MODULE_PREFIXES):
            problems.add(where, f"estimator {name!r} is outside scikit-learn, xgboost and lightgbm; "
                         "only classes from those packages can be named in a spec.")
            return None
        path = name
    else:
        problems.add(where, f"unknown estimator {name!r}{did_you_mean(name, ESTIMATOR_REGISTRY)}. "
                     f"Use a registry name ({', '.join(sorted(ESTIMATOR_REGISTRY))}) or a dotted "
                     "class path such as sklearn.svm.SVC.")
        return None
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        problems.add(where, f"cannot import module {module_name!r} for estimator {name!r}: is the "
                     "package installed? (xgboost and lightgbm are optional extras)")
        return None
    cls = getattr(module, class_name, None)
    public = [n for n in dir(module) if not n.startswith("_")]
    if not isinstance(cls, type):
        problems.add(where, f"module {module_name!r} has no class {class_name!r}"
                     f"{did_you_mean(class_name, public)}.")
        return None
    if not (hasattr(cls, "fit") and hasattr(cls, "get_params")):
        problems.add(where, f"{path} is not an estimator (it needs fit and get_params).")
        return None
    return path, cls


def _takes_extra_params(cls: type) -> bool:
    """True for xgboost's and lightgbm's estimators, whose ``**kwargs`` reach the booster."""
    if not cls.__module__.startswith(("xgboost.", "lightgbm.")):
        return False
    signature = inspect.signature(cls.__init__)
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def infer_task(cls: type) -> str | None:
    from sklearn.base import is_classifier, is_regressor

    try:
        instance = cls()
    except TypeError:
        return None
    if is_classifier(instance):
        return "classification"
    if is_regressor(instance):
        return "regression"
    return None


def _is_clusterer(cls: type) -> bool:
    from sklearn.base import is_clusterer

    try:
        return bool(is_clusterer(cls()))
    except TypeError:
        return False


def metric_fits_task(metric: str, task: str) -> bool:
    regression_metric = metric.startswith(_REGRESSION_ONLY_PREFIXES)
    return regression_metric == (task == "regression")


def parse_model_spec(raw: object, problems: Problems) -> ModelSpec | None:
    """Parse ``model_spec``; record every problem in ``problems``."""
    where = "model_spec"
    if not isinstance(raw, Mapping):
        problems.expected(where, "a mapping such as {estimator: random_forest, params: {...}}", raw)
        return None
    problems.unknown_keys(raw, _MODEL_KEYS, where)
    name = problems.string(raw, "estimator", where)
    params = raw.get("params", {}) or {}
    if not isinstance(params, Mapping):
        problems.expected(f"{where}.params", "a mapping of estimator parameters", params)
        params = {}
    resolved = _resolve_class(name, f"{where}.estimator", problems) if name else None
    task = raw.get("task")
    if task is not None and task not in TASKS:
        problems.choice(raw, "task", TASKS, where)
        task = None
    if resolved is None:
        return None
    path, cls = resolved

    known = estimator_param_names(cls)
    for key in params:
        # xgboost and lightgbm take their native parameters (verbose, ...) as **kwargs.
        if key not in known and not _takes_extra_params(cls):
            problems.add(f"{where}.params", f"{cls.__name__} has no parameter {key!r}"
                         f"{did_you_mean(key, known)}.")
    inferred = infer_task(cls)
    if inferred is None and _is_clusterer(cls):
        problems.add(f"{where}.estimator", f"{cls.__name__} is a clustering estimator; the "
                     "workflow trains classifiers and regressors (it needs labels to learn "
                     "from), so choose one of those.")
        return None
    if task is None:
        task = inferred
        if task is None:
            problems.add(where, f"cannot tell whether {cls.__name__} is a classifier or a "
                         "regressor; set task: classification or task: regression.")
            return None
    elif inferred is not None and inferred != task:
        problems.add(f"{where}.task", f"{cls.__name__} is a {inferred} estimator but task is "
                     f"{task!r}; fix the task or choose a {task} estimator.")

    metric = raw.get("metric")
    if metric is not None:
        metric = check_metric(metric, task, f"{where}.metric", problems)
    pos_label = raw.get("pos_label")
    if pos_label is not None and task == "regression":
        problems.add(f"{where}.pos_label", "pos_label applies to classification only; remove it.")
    elif pos_label is not None and not isinstance(pos_label, (str, int, float, bool)):
        problems.expected(f"{where}.pos_label", "one class label (a string or a number)",
                          pos_label)
    if metric in _PROBABILITY_METRICS and not hasattr(cls, "predict_proba"):
        problems.add(f"{where}.metric", f"{metric!r} needs predicted probabilities but "
                     f"{cls.__name__} has no predict_proba; choose another metric or add "
                     "calibration.")

    class_weight = _check_class_weight(raw.get("class_weight"), cls, params, task, where,
                                       problems)

    if not problems or all(not m.startswith(where) for m in problems.messages):
        try:
            instance = cls(**params, **({} if class_weight is None
                                        else {"class_weight": class_weight}))
            # sklearn checks parameter values at fit time; check them now, against its own table.
            check_values = getattr(instance, "_validate_params", None)
            # xgboost/lightgbm inherit _validate_params but have no constraints table.
            if check_values is not None and hasattr(instance, "_parameter_constraints"):
                check_values()
        except (TypeError, ValueError) as exc:
            problems.add(f"{where}.params", f"{cls.__name__} rejected the params: {exc}")
    return ModelSpec(estimator=name, class_path=path, params=dict(params), task=task,
                     metric=metric, pos_label=pos_label, class_weight=class_weight)


def _check_class_weight(value: object, cls: type, params: Mapping, task: str, where: str,
                        problems: Problems) -> Any:
    """``class_weight``: "balanced" or a mapping of class -> positive weight, for an
    estimator that has its own ``class_weight`` parameter; None after a problem."""
    if value is None:
        return None
    key = f"{where}.class_weight"
    if task == "regression":
        problems.add(key, "class_weight applies to classification only; remove it.")
        return None
    if "class_weight" not in estimator_param_names(cls):
        hint = (" For XGBClassifier use params.scale_pos_weight (the negative/positive row "
                "ratio) instead." if cls.__name__ == "XGBClassifier" else "")
        problems.add(key, f"{cls.__name__} has no class_weight parameter, so class weights "
                     "cannot be set on it; choose an estimator that has one (e.g. "
                     "logistic_regression, random_forest, hist_gradient_boosting, lightgbm) "
                     f"or remove class_weight.{hint}")
        return None
    if "class_weight" in params:
        problems.add(key, "class_weight is given both here and in params; keep one.")
        return None
    if value == "balanced":
        return "balanced"
    if isinstance(value, Mapping) and value and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0
            for w in value.values()):
        return dict(value)
    problems.expected(key, "'balanced' or a mapping of class label to a positive weight, "
                      "e.g. {0: 1, 1: 10}", value)
    return None


def check_metric(metric: object, task: str, where: str, problems: Problems) -> str | None:
    """Check a scikit-learn scorer name for ``task``; None after recording a problem."""
    from sklearn.metrics import get_scorer_names

    names = list(get_scorer_names())
    if not isinstance(metric, str) or metric not in names:
        problems.expected(where, "a scikit-learn scorer name such as roc_auc, f1_macro, r2 or "
                          "neg_root_mean_squared_error", metric,
                          did_you_mean(metric, names).strip())
        return None
    if not metric_fits_task(metric, task):
        problems.add(where, f"metric {metric!r} does not fit a {task} task; pick a {task} metric.")
        return None
    return metric
