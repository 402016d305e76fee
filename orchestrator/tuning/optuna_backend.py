"""optuna on the driver: one trial after another (the Spark path is connect_backend's)."""

from __future__ import annotations

import logging
import time

from orchestrator.cluster.worker import STATUS_OK
from orchestrator.errors import TuningError
from orchestrator.specs.tuning import TuningSpec, pipeline_param_name
from orchestrator.tuning.objective import TrialMonitor, TrialObjective, training_rows
from orchestrator.tuning.space import suggest_optuna

logger = logging.getLogger(__name__)


class _OptunaTrialFailed(Exception):
    """Marks an optuna trial whose objective returned a failed result."""


def optuna_sampler(spec: TuningSpec):
    """The sampler for the spec's algo, seeded with its seed."""
    import optuna

    sampler_cls = {"tpe": optuna.samplers.TPESampler,
                   "random": optuna.samplers.RandomSampler}.get(spec.algo)
    if sampler_cls is None:
        raise TuningError(f"the optuna backend runs tpe or random, not {spec.algo!r}")
    return sampler_cls(seed=spec.seed)


def run_optuna(pipeline, X, y, spec: TuningSpec, metric, cv, monitor: TrialMonitor,
               sample_weight=None):
    """Run optuna on the driver, one trial after another.

    With a SparkSession, :mod:`orchestrator.tuning.connect_backend` runs optuna's
    ask/tell on the driver and the trials on executors instead.

    Returns ``(records, parallelism, cancelled_reason)``.
    """
    return _run_optuna_on_driver(pipeline, X, y, spec, metric, cv, monitor, optuna_sampler(spec),
                                 sample_weight)


def _run_optuna_on_driver(pipeline, X, y, spec: TuningSpec, metric, cv,
                          monitor: TrialMonitor, sampler, sample_weight=None):
    import optuna

    objective = TrialObjective(pipeline, scoring=metric, cv=cv,
                               data=training_rows(X, y, sample_weight))
    records: list[dict] = []

    def run_trial(trial):
        params = {pipeline_param_name(key): suggest_optuna(trial, key, dist)
                  for key, dist in spec.search_space.items()}
        start_ms = int(time.time() * 1000)
        book = time.perf_counter()
        result = objective(params)
        ok = result["status"] == STATUS_OK
        records.append({"number": trial.number, "status": result["status"],
                        "pipeline_params": params, "score": result.get("score") if ok else None,
                        "duration_s": result.get("duration_s"),
                        "wall_s": time.perf_counter() - book, "start_ms": start_ms,
                        "end_ms": int(time.time() * 1000), "error": result.get("error")})
        if not ok:
            raise _OptunaTrialFailed(result["error"])
        return result["score"]

    def after_trial(study, _frozen):
        if monitor.update([(r["status"], r["score"]) for r in records]):
            study.stop()

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(run_trial, n_trials=spec.max_evals, timeout=spec.timeout_s,
                   catch=(_OptunaTrialFailed,), callbacks=[after_trial], n_jobs=1,
                   gc_after_trial=False, show_progress_bar=False)
    return records, 1, None
