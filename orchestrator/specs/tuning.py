"""The tuning spec: the search space and how the search runs.

Search-space keys are the model's own parameter names (``C``, ``n_estimators``),
checked against the estimator class. Preprocessing parameters are tuned under the
:data:`PREPROCESS_PREFIX`, written as the full pipeline parameter name, e.g.
``preprocess__numeric_0__scaler__with_mean`` (transformers are named
``<type>_<index>`` after their place in ``feature_specs``).

Distributions (``dist``) and their keys:

==============  ==========================  ===============================================
dist            keys                        values
==============  ==========================  ===============================================
uniform         low, high                   floats in [low, high]
loguniform      low, high (both > 0)        floats, log-uniform between low and high
quniform        low, high, q                round(uniform / q) * q; ints if all three are ints
qloguniform     low, high, q (low > 0)      as quniform, log-uniform
randint         low, high (ints)            ints in [low, high) (high excluded, as numpy)
normal          mu, sigma (sigma > 0)       floats, normally distributed
choice          options (a list)            one option as written; an option that is itself
                                            a ``{dist: ...}`` mapping is sampled (nesting)
==============  ==========================  ===============================================

Nothing here imports hyperopt, optuna or Spark.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import did_you_mean
from orchestrator.specs.problems import Problems

#: Search-space keys starting with this prefix are pipeline parameters of the preprocessing step.
PREPROCESS_PREFIX = "preprocess__"
#: The pipeline step holding the estimator; plain search-space keys are its parameters.
MODEL_STEP = "model"

DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "quniform": ("low", "high", "q"),
    "qloguniform": ("low", "high", "q"),
    "randint": ("low", "high"),
    "normal": ("mu", "sigma"),
    "choice": ("options",),
}
ALGOS = ("tpe", "random", "anneal", "atpe")
BACKENDS = ("auto", "spark", "local", "optuna")
#: The algos the optuna backend can run (as TPESampler and RandomSampler).
OPTUNA_ALGOS = ("tpe", "random")

_TUNING_KEYS = ("search_space", "max_evals", "parallelism", "algo", "metric", "cv_folds",
                "timeout_s", "early_stopping_rounds", "backend", "seed", "staging_dir")


@dataclass(frozen=True)
class Distribution:
    """One parameter's distribution.

    Attributes
    ----------
    kind : str
        One of :data:`DISTRIBUTIONS`.
    low, high, q, mu, sigma : float or None
        The bounds and shape of numeric distributions.
    options : tuple
        For ``choice``: the options, each a plain value or a nested :class:`Distribution`.
    integer : bool
        True when sampled values are cast to ``int`` (``randint``, and ``quniform`` /
        ``qloguniform`` whose low, high and q are all integers).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    q: float | None = None
    mu: float | None = None
    sigma: float | None = None
    options: tuple[Any, ...] = ()
    integer: bool = False


@dataclass(frozen=True)
class TuningSpec:
    """A validated tuning spec.

    Attributes
    ----------
    search_space : mapping of str to Distribution
        Keyed as the user wrote it: plain model parameter names, or
        ``preprocess__...`` pipeline parameter names.
    max_evals : int
        Trials to run at most.
    parallelism : int or None
        Trials at once on Spark; None means Spark's default parallelism.
    algo : {"tpe", "random", "anneal", "atpe"}
    metric : str or None
        Scorer to maximise; None means the model's primary metric.
    cv_folds : int
        Inner cross-validation folds inside each trial.
    timeout_s : float or None
        Wall-time budget; finished trials are kept, running ones cancelled.
    early_stopping_rounds : int or None
        Stop after this many completed trials without improvement.
    backend : {"auto", "spark", "local", "optuna"}
    seed : int or None
        Seed of the search algorithm and of the inner CV shuffling.
    staging_dir : str or None
        Where trials on Spark Connect stage the training rows for the executors
        (a Unity Catalog Volume path on Databricks); None: a temporary local
        directory, which only local masters can use.
    """

    search_space: Mapping[str, Distribution] = field(default_factory=dict)
    max_evals: int = 20
    parallelism: int | None = None
    algo: str = "tpe"
    metric: str | None = None
    cv_folds: int = 3
    timeout_s: float | None = None
    early_stopping_rounds: int | None = None
    backend: str = "auto"
    seed: int | None = 42
    staging_dir: str | None = None

    def pipeline_params(self) -> dict[str, str]:
        """Map each search-space key to its pipeline parameter name."""
        return {key: pipeline_param_name(key) for key in self.search_space}


def pipeline_param_name(key: str) -> str:
    """The pipeline parameter a search-space key stands for (``C`` -> ``model__C``)."""
    return key if key.startswith(PREPROCESS_PREFIX) else f"{MODEL_STEP}__{key}"


def plain_param_name(pipeline_name: str) -> str:
    """The inverse of :func:`pipeline_param_name` (``model__C`` -> ``C``)."""
    prefix = f"{MODEL_STEP}__"
    return pipeline_name[len(prefix):] if pipeline_name.startswith(prefix) else pipeline_name


def parse_tuning_spec(raw: object, problems: Problems, model_spec=None) -> TuningSpec | None:
    """Parse ``tuning_spec``; record every problem in ``problems``.

    Parameters
    ----------
    raw : mapping or None
        The spec as written in YAML; None means no tuning.
    problems : Problems
        Collector of spec problems (nothing is raised here).
    model_spec : ModelSpec or None
        When given, search-space keys are checked against the estimator's
        parameters and ``metric`` against its task.

    Returns
    -------
    TuningSpec or None

    Examples
    --------
    >>> p = Problems()
    >>> spec = parse_tuning_spec({"search_space": {"C": {"dist": "loguniform", "low": 0.01,
    ...                           "high": 10}}}, p)
    >>> spec.search_space["C"].kind, bool(p)
    ('loguniform', False)
    """
    where = "tuning_spec"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.expected(where, "a mapping such as {search_space: {C: {dist: loguniform, "
                          "low: 0.01, high: 10}}, max_evals: 20}", raw)
        return None
    problems.unknown_keys(raw, _TUNING_KEYS, where)

    space = _parse_search_space(raw.get("search_space"), f"{where}.search_space", problems,
                                model_spec)
    defaults = TuningSpec()
    max_evals = problems.number(raw, "max_evals", where, default=defaults.max_evals,
                                integer=True, low=1)
    parallelism = problems.number(raw, "parallelism", where, default=defaults.parallelism,
                                  integer=True, low=1)
    algo = problems.choice(raw, "algo", ALGOS, where, default=defaults.algo)
    backend = problems.choice(raw, "backend", BACKENDS, where, default=defaults.backend)
    metric = raw.get("metric")
    if metric is not None:
        if model_spec is not None:
            from orchestrator.specs.model import check_metric

            metric = check_metric(metric, model_spec.task, f"{where}.metric", problems)
        elif not isinstance(metric, str) or not metric:
            problems.expected(f"{where}.metric", "a scikit-learn scorer name", metric)
            metric = None
    cv_folds = problems.number(raw, "cv_folds", where, default=defaults.cv_folds, integer=True,
                               low=2)
    timeout_s = problems.number(raw, "timeout_s", where, default=defaults.timeout_s, low=0,
                                low_open=True)
    rounds = problems.number(raw, "early_stopping_rounds", where,
                             default=defaults.early_stopping_rounds, integer=True, low=1)
    seed = problems.number(raw, "seed", where, default=defaults.seed, integer=True, low=0)
    staging_dir = raw.get("staging_dir", defaults.staging_dir)
    if staging_dir is not None and (not isinstance(staging_dir, str) or not staging_dir.strip()):
        problems.expected(f"{where}.staging_dir", "a directory path the executors can read, "
                          "such as /Volumes/main/default/tmp", staging_dir)
        staging_dir = None

    if algo == "atpe" and importlib.util.find_spec("lightgbm") is None:
        problems.add(f"{where}.algo", "algo 'atpe' needs lightgbm, which is not installed; "
                     "use tpe, or install lightgbm.")
    if backend == "optuna":
        if algo is not None and algo not in OPTUNA_ALGOS:
            problems.add(f"{where}.algo", f"backend 'optuna' runs {' or '.join(OPTUNA_ALGOS)}, "
                         f"not {algo!r}; choose one of those or another backend.")
        for key, dist in (space or {}).items():
            if _uses(dist, "normal"):
                problems.add(f"{where}.search_space.{key}", "the optuna backend has no normal "
                             "distribution; use uniform, or the local/spark backend.")
    if space is None:
        return None
    # A value with a problem was recorded above; the spec keeps the default in its place.
    return TuningSpec(search_space=space, max_evals=max_evals or defaults.max_evals,
                      parallelism=parallelism, algo=algo or defaults.algo, metric=metric,
                      cv_folds=cv_folds or defaults.cv_folds,
                      timeout_s=float(timeout_s) if timeout_s is not None else None,
                      early_stopping_rounds=rounds, backend=backend or defaults.backend,
                      seed=seed, staging_dir=staging_dir)


def _uses(dist: Distribution, kind: str) -> bool:
    return dist.kind == kind or any(isinstance(o, Distribution) and _uses(o, kind)
                                    for o in dist.options)


def _parse_search_space(raw: object, where: str, problems: Problems,
                        model_spec) -> dict[str, Distribution] | None:
    if raw is None:
        problems.add(where.rpartition(".")[0], "missing required key 'search_space' (a mapping "
                     "of parameter name to distribution, e.g. {C: {dist: loguniform, low: 0.01, "
                     "high: 10}}).")
        return None
    if not isinstance(raw, Mapping) or not raw:
        problems.expected(where, "a non-empty mapping of parameter name to distribution", raw)
        return None
    known = _estimator_params(model_spec)
    space = {}
    for key, value in raw.items():
        key_where = f"{where}.{key}"
        if not isinstance(key, str) or not key:
            problems.expected(where, "parameter names as keys", key)
            continue
        _check_param_name(key, key_where, known, model_spec, problems)
        dist = _parse_distribution(value, key_where, problems)
        if dist is not None:
            space[key] = dist
    return space


def _estimator_params(model_spec) -> list[str] | None:
    if model_spec is None:
        return None
    from orchestrator.specs.model import estimator_param_names

    return estimator_param_names(model_spec.estimator_class())


def _check_param_name(key: str, where: str, known: list[str] | None, model_spec,
                      problems: Problems) -> None:
    if key.startswith(PREPROCESS_PREFIX):
        parts = key[len(PREPROCESS_PREFIX):].split("__")
        if len(parts) < 2 or not all(parts):
            problems.add(where, f"a preprocessing parameter is written "
                         f"{PREPROCESS_PREFIX}<transformer>__<step>__<param>, e.g. "
                         f"preprocess__numeric_0__scaler__with_mean; got {key!r}.")
        return
    model_prefix = f"{MODEL_STEP}__"
    if key.startswith(model_prefix):
        problems.add(where, f"write the plain parameter name {key[len(model_prefix):]!r}; "
                     f"the {model_prefix!r} prefix is added for you.")
        return
    if known is not None and key not in known:
        cls_name = model_spec.class_path.rpartition(".")[2]
        problems.add(where, f"{cls_name} has no parameter {key!r}{did_you_mean(key, known)}. "
                     f"Preprocessing parameters go under {PREPROCESS_PREFIX!r}.")


def _parse_distribution(raw: object, where: str, problems: Problems) -> Distribution | None:
    if not isinstance(raw, Mapping):
        problems.expected(where, "a distribution such as {dist: uniform, low: 0, high: 1}", raw)
        return None
    kind = raw.get("dist")
    if kind not in DISTRIBUTIONS:
        if "dist" not in raw:
            problems.add(where, f"missing required key 'dist'; choose one of "
                         f"{', '.join(DISTRIBUTIONS)}.")
        else:
            problems.expected(f"{where}.dist", f"one of {', '.join(DISTRIBUTIONS)}", kind,
                              did_you_mean(kind, list(DISTRIBUTIONS)).strip())
        return None
    keys = DISTRIBUTIONS[kind]
    problems.unknown_keys(raw, ("dist",) + keys, where)
    if kind == "choice":
        return _parse_choice(raw, where, problems)

    count = len(problems.messages)
    integer = kind == "randint"
    values = {k: problems.number(raw, k, where, integer=integer) for k in keys}
    if len(problems.messages) > count:
        return None
    if kind == "normal":
        if values["sigma"] <= 0:
            problems.expected(f"{where}.sigma", "a number > 0", values["sigma"])
            return None
        return Distribution(kind=kind, mu=float(values["mu"]), sigma=float(values["sigma"]))
    low, high = values["low"], values["high"]
    if low >= high:
        problems.add(where, f"low must be below high, got low={low!r} >= high={high!r}; "
                     "swap or widen the bounds.")
        return None
    if kind in ("loguniform", "qloguniform") and low <= 0:
        problems.expected(f"{where}.low", "a number > 0 for a log-scale distribution", low)
        return None
    q = values.get("q")
    if q is not None and q <= 0:
        problems.expected(f"{where}.q", "a number > 0", q)
        return None
    if q is not None:
        integer = all(isinstance(v, int) for v in (low, high, q))
    return Distribution(kind=kind, low=low, high=high, q=q, integer=integer)


def _parse_choice(raw: Mapping[str, Any], where: str, problems: Problems) -> Distribution | None:
    options = raw.get("options")
    if not isinstance(options, (list, tuple)) or not options:
        problems.expected(f"{where}.options", "a non-empty list of values", options)
        return None
    parsed = []
    for index, option in enumerate(options):
        if isinstance(option, Mapping) and "dist" in option:
            nested = _parse_distribution(option, f"{where}.options[{index}]", problems)
            if nested is None:
                return None
            parsed.append(nested)
        else:
            parsed.append(option)
    return Distribution(kind="choice", options=tuple(parsed))
