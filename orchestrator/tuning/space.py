"""Search spaces: the spec's distributions as hyperopt expressions and optuna suggestions."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import TuningError
from orchestrator.specs.tuning import Distribution, pipeline_param_name

logger = logging.getLogger(__name__)


def build_hyperopt_space(search_space: Mapping[str, Distribution]) -> dict[str, Any]:
    """The hyperopt space: pipeline parameter name -> hyperopt expression.

    Integer distributions are wrapped in ``scope.int`` and floats in ``scope.float``,
    so evaluated points hold plain Python ints and floats; ``choice`` evaluates to
    the option itself, never its index.
    """
    return {pipeline_param_name(key): _hyperopt_expr(key, dist)
            for key, dist in search_space.items()}


def _hyperopt_expr(label: str, dist: Distribution):
    from hyperopt import hp
    from hyperopt.pyll import scope

    kind = dist.kind
    if kind == "choice":
        return hp.choice(label, [
            _hyperopt_expr(f"{label}[{i}]", option) if isinstance(option, Distribution) else option
            for i, option in enumerate(dist.options)])
    if kind == "normal":
        return scope.float(hp.normal(label, dist.mu, dist.sigma))
    if kind == "uniform":
        expr = hp.uniform(label, dist.low, dist.high)
    elif kind == "loguniform":
        expr = hp.loguniform(label, math.log(dist.low), math.log(dist.high))
    elif kind == "quniform":
        expr = hp.quniform(label, dist.low, dist.high, dist.q)
    elif kind == "qloguniform":
        expr = hp.qloguniform(label, math.log(dist.low), math.log(dist.high), dist.q)
    elif kind == "randint":
        expr = hp.randint(label, int(dist.low), int(dist.high))
    else:
        raise TuningError(f"unknown distribution {kind!r}")
    return scope.int(expr) if dist.integer else scope.float(expr)


def suggest_optuna(trial, label: str, dist: Distribution):
    kind = dist.kind
    if kind == "choice":
        index = trial.suggest_categorical(label, list(range(len(dist.options))))
        option = dist.options[index]
        return suggest_optuna(trial, f"{label}[{index}]", option) if isinstance(
            option, Distribution) else option
    if kind == "randint":
        return trial.suggest_int(label, int(dist.low), int(dist.high) - 1)
    if kind == "quniform" and dist.integer:
        return trial.suggest_int(label, int(dist.low), int(dist.high), step=int(dist.q))
    if kind == "quniform":
        return float(trial.suggest_float(label, dist.low, dist.high, step=dist.q))
    value = trial.suggest_float(label, dist.low, dist.high, log=kind in ("loguniform",
                                                                         "qloguniform"))
    if kind == "qloguniform":
        value = round(value / dist.q) * dist.q
        return int(round(value)) if dist.integer else float(value)
    if kind in ("uniform", "loguniform"):
        return float(value)
    raise TuningError(f"the optuna backend cannot sample {kind!r}")
