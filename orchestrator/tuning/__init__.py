"""Workflow step 3: hyperparameter tuning of the whole pipeline, never fatal to the workflow.

:func:`tune` searches the spec's space with one of the backends below and returns the
best pipeline parameters; it raises :class:`TuningError` when tuning cannot run
or every trial failed, which the workflow turns into a warning and carries on
with the model spec's own parameters.

Backends
--------
spark
    hyperopt with :class:`orchestrator.tuning.spark_trials.BroadcastSparkTrials`, one Spark
    task per trial. The training rows are broadcast once per run; each trial's
    closure carries only the unfitted pipeline, the scorer and its parameters.
    On a Spark Connect session (no SparkContext) it runs as ``connect``.
connect (chosen, not written in specs)
    hyperopt suggesting each point on the driver, the trials on executors through
    :class:`orchestrator.cluster.connect.ConnectTaskRunner` (DataFrame APIs only,
    the training rows staged once per run): what ``auto`` and ``spark`` run on a
    Spark Connect session (serverless, standard access mode, ``remote``).
local
    hyperopt ``Trials`` on the driver, one trial after another.
optuna
    Optuna (TPESampler / RandomSampler) ask/tell on the driver. With an active
    SparkSession (classic or Connect) the trials run on executors through the same
    Connect task runner; without one, on the driver. ``backend_reason`` says which.
auto
    spark when a SparkContext is usable; connect on a Spark Connect session (optuna
    there if hyperopt is missing); else local (else optuna). The choice and the
    reason are logged and kept in the summary. When the training rows cannot be
    staged for the executors (a cluster without ``staging_dir``), connect and optuna
    run on the driver and ``backend_reason`` says why.

Each trial scores ``clone(pipeline).set_params(**params)`` with ``cv_folds``-fold
cross-validation (stratified and shuffled with ``seed`` for classifiers) on the
rows given, which the workflow has already stripped of any hold-out.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.cluster.connect import is_connect_session
from orchestrator.cluster.worker import STATUS_FAIL, STATUS_OK
from orchestrator.errors import (
    ClusterTaskError,
    TuningError,
    did_you_mean,
)
from orchestrator.io.session import active_session
from orchestrator.specs.tuning import (
    TuningSpec,
    plain_param_name,
)
from orchestrator.tuning.backend import choose_backend, spark_unusable_reason
from orchestrator.tuning.connect_backend import run_on_cluster_runner
from orchestrator.tuning.hyperopt_backend import run_hyperopt
from orchestrator.tuning.objective import (
    STOP_EARLY,
    STOP_MAX_EVALS,
    STOP_TIMEOUT,
    TrialMonitor,
    TrialObjective,
    TuningProgress,
    make_cv,
    spark_slots,
    trials_without_improvement,
)
from orchestrator.tuning.optuna_backend import run_optuna
from orchestrator.tuning.space import build_hyperopt_space

logger = logging.getLogger(__name__)

__all__ = [
    "TuningError",
    "TuningOutcome",
    "TuningProgress",
    "TrialObjective",
    "tune",
    "choose_backend",
    "spark_unusable_reason",
    "trials_without_improvement",
    "build_hyperopt_space",
]


@dataclass(frozen=True)
class TuningOutcome:
    """What tuning found.

    Attributes
    ----------
    best_params : dict
        Pipeline parameter names to values, ready for ``pipeline.set_params(**best_params)``
        (``{"model__C": 3.2, "model__max_depth": 5}``): ints are ints and choices are
        the option values.
    summary : dict
        backend, backend_reason, algo, metric, best_params (plain names), best_score,
        trials_run / trials_ok / trials_failed / trials_cancelled, stop_reason,
        wall_time_s, parallelism, and ``trials``: each trial's number, status, params,
        score, duration_s (the objective's own time), wall_s, error, start_ms and end_ms.
        Tuning that finds nothing raises :class:`TuningError` instead of returning.
    """

    best_params: dict
    summary: dict


# ---------------------------------------------------------------- Spark configuration


# ---------------------------------------------------------------- backend choice


# ---------------------------------------------------------------- search space


# ---------------------------------------------------------------- the objective


# ---------------------------------------------------------------- stopping and progress


# ---------------------------------------------------------------- running the search


def tune(pipeline, X, y, spec: TuningSpec, *, model_spec, scoring, spark=None,
         progress: Callable[[TuningProgress], None] | None = None,
         mlflow_parent_run_id: str | None = None, cv=None,
         sample_weight=None) -> TuningOutcome:
    """Search the spec's space for the pipeline parameters with the best CV score.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Unfitted ``Pipeline([("preprocess", ...), ("model", ...)])``; not modified.
    X : pandas.DataFrame
        Training rows only (no hold-out).
    y : array-like
    spec : TuningSpec
    model_spec : ModelSpec
        Gives the task (stratified folds for classification).
    scoring : str or callable
        The primary metric (higher is better); ``spec.metric`` overrides it.
    spark : SparkSession, optional
        Default: the active session, if any.
    progress : callable, optional
        Called with a :class:`TuningProgress` each time trials complete (progress is
        logged at INFO either way).
    mlflow_parent_run_id : str, optional
        Kept for callers; the tracker logs every trial as a child run of its
        workflow run from ``summary["trials"]``, whatever the backend.
    cv : list of (train, test) positions, optional
        The inner folds (grouped or time-ordered, like the workflow's validation);
        default: ``cv_folds`` shuffled folds, stratified for classifiers.
    sample_weight : array-like, optional
        One weight per row of ``X``: each trial's folds fit with their training rows'
        weights (the pipeline's model step must request them, see
        :func:`orchestrator.steps.weights.request_sample_weight`) and score with their
        test rows'.

    Returns
    -------
    TuningOutcome

    Raises
    ------
    TuningError
        When no backend can run, a preprocessing parameter does not exist in the
        pipeline, or every trial failed (``.summary`` then lists the trials and errors).

    Examples
    --------
    >>> outcome = tune(pipeline, X, y, specs.tuning, model_spec=specs.model,
    ...                scoring="roc_auc", spark=spark)  # doctest: +SKIP
    >>> pipeline.set_params(**outcome.best_params)  # doctest: +SKIP
    """
    started = time.perf_counter()
    _check_pipeline_params(pipeline, spec)
    session, spark_reason = spark_unusable_reason(spark)
    any_session, no_session_reason = active_session(spark)
    backend, why = choose_backend(
        spec.backend, spark_reason=spark_reason,
        hyperopt_installed=importlib.util.find_spec("hyperopt") is not None,
        optuna_installed=importlib.util.find_spec("optuna") is not None,
        connect_session=any_session is not None and is_connect_session(any_session))
    # A callable scorer (the workflow's, which knows pos_label) wins over a bare scorer name.
    metric = scoring if callable(scoring) else (spec.metric or scoring)
    metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", repr(metric))
    logger.info("Tuning %d parameters with backend %s (%s), algo %s, metric %s, %d trials",
                len(spec.search_space), backend, why, spec.algo, metric_name, spec.max_evals)
    monitor = TrialMonitor(rounds=spec.early_stopping_rounds, max_evals=spec.max_evals,
                            metric=metric_name, progress=progress, started=started)
    cv = make_cv(spec, model_spec) if cv is None else list(cv)

    ran = None
    if backend == "connect" or (backend == "optuna" and any_session is not None):
        library = "optuna" if backend == "optuna" else "hyperopt"
        try:
            ran = run_on_cluster_runner(any_session, pipeline, X, y, spec, metric, cv, monitor,
                                        library=library, slots=spark_slots(any_session),
                                        sample_weight=sample_weight)
            if backend == "optuna":
                why = f"{why}; optuna asks and tells on the driver, trials run on executors"
        except ClusterTaskError as exc:  # the training rows could not be staged for executors
            logger.warning("Tuning: trials cannot run on executors (%s); running them on the "
                           "driver", exc)
            why = f"{why}; {library} ran on the driver: {exc}"
            backend = "optuna" if library == "optuna" else "local"
    elif backend == "optuna":
        why = f"{why}; optuna ran on the driver: {no_session_reason}"
    if ran is not None:
        records, parallelism, cancelled_reason = ran
    elif backend == "optuna":
        records, parallelism, cancelled_reason = run_optuna(
            pipeline, X, y, spec, metric, cv, monitor, sample_weight=sample_weight)
    else:
        records, parallelism, cancelled_reason = run_hyperopt(
            pipeline, X, y, spec, metric, cv, monitor, session if backend == "spark" else None,
            sample_weight=sample_weight)
    wall = time.perf_counter() - started

    stop_reason = _stop_reason(spec, records, monitor, cancelled_reason, wall)
    summary = _summarize(records, backend=backend, why=why, spec=spec, metric=metric_name,
                         stop_reason=stop_reason, wall=wall, parallelism=parallelism)
    ok = [r for r in records if r["status"] == STATUS_OK]
    if not ok:
        errors = sorted({r["error"] for r in records if r.get("error")})
        reason = errors[0] if errors else f"no trial completed ({stop_reason})"
        raise TuningError(f"tuning found no parameters: all {len(records)} trials failed or "
                          f"were cancelled; first error: {reason}", summary=summary)
    best = max(ok, key=lambda r: r["score"])
    logger.info("Tuning done in %.1f s: best %s %.4f with %s (%s)", wall, metric_name,
                best["score"], summary["best_params"], stop_reason)
    return TuningOutcome(best_params=dict(best["pipeline_params"]), summary=summary)


def _check_pipeline_params(pipeline, spec: TuningSpec) -> None:
    available = pipeline.get_params(deep=True)
    problems = []
    for key, name in spec.pipeline_params().items():
        if name not in available:
            candidates = [k for k in available if "__" in k]
            problems.append(f"{key!r}{did_you_mean(name, candidates)}")
    if problems:
        raise TuningError("tuning_spec.search_space: no such pipeline parameter: "
                          + ", ".join(problems))


def _stop_reason(spec: TuningSpec, records, monitor, cancelled_reason, wall) -> str:
    if monitor.stopped_early:
        return STOP_EARLY
    if cancelled_reason and "timeout" in cancelled_reason:
        return STOP_TIMEOUT
    if cancelled_reason:
        return cancelled_reason
    finished = sum(r["status"] != "cancelled" for r in records)
    if spec.timeout_s is not None and finished < spec.max_evals and wall >= spec.timeout_s:
        return STOP_TIMEOUT
    return STOP_MAX_EVALS


def _summarize(records, *, backend, why, spec, metric, stop_reason, wall, parallelism) -> dict:
    ok = [r for r in records if r["status"] == STATUS_OK]
    best = max(ok, key=lambda r: r["score"]) if ok else None
    return {
        "backend": backend,
        "backend_reason": why,
        "algo": spec.algo,
        "metric": metric,
        "parallelism": parallelism,
        "best_params": _spec_param_names(best["pipeline_params"]) if best else None,
        "best_score": best["score"] if best else None,
        "trials_run": len(records),
        "trials_ok": len(ok),
        "trials_failed": sum(r["status"] == STATUS_FAIL for r in records),
        "trials_cancelled": sum(r["status"] == "cancelled" for r in records),
        "stop_reason": stop_reason,
        "wall_time_s": round(wall, 3),
        "trials": [{"number": r["number"], "status": r["status"],
                    "params": _spec_param_names(r["pipeline_params"]), "score": r["score"],
                    "duration_s": r["duration_s"], "wall_s": r["wall_s"], "error": r["error"],
                    "start_ms": r["start_ms"], "end_ms": r["end_ms"]}
                   for r in records],
    }


def _spec_param_names(params: Mapping[str, Any]) -> dict:
    """Pipeline parameter names (model__C) as the spec writes them (C)."""
    return {plain_param_name(name): value for name, value in params.items()}

