"""Workflow step 3: hyperparameter tuning of the whole pipeline, never fatal to the workflow.

:func:`tune` searches the spec's space with one of four backends and returns the
best pipeline parameters; it raises :class:`TuningError` when tuning cannot run
or every trial failed, which the workflow turns into a warning and carries on
with the model spec's own parameters.

Backends
--------
spark
    hyperopt with :class:`orchestrator.tuning.spark_trials.BroadcastSparkTrials`, one Spark
    task per trial. The training rows are broadcast once per run; each trial's
    closure carries only the unfitted pipeline, the scorer and its parameters.
local
    hyperopt ``Trials`` on the driver, one trial after another.
optuna
    Optuna (TPESampler / RandomSampler), for runtimes without hyperopt or without a
    SparkContext (Spark Connect, serverless). With an active SparkSession (classic or
    Spark Connect) the trials run on Spark executors through MLflow's
    ``MlflowSparkStudy``, whose ``MlflowStorage`` keeps the study in an MLflow
    tracking store every executor reaches: the workflow run's experiment when MLflow
    is on, else a temporary sqlite store. Without a session, or when the Spark study
    cannot be set up, optuna runs on the driver; ``backend_reason`` says which and why.
auto
    spark when a SparkContext is usable, else local (else optuna if hyperopt is
    missing); the choice and the reason are logged and kept in the summary.

Each trial scores ``clone(pipeline).set_params(**params)`` with ``cv_folds``-fold
cross-validation (stratified and shuffled with ``seed`` for classifiers) on the
rows given, which the workflow has already stripped of any hold-out.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.cluster.worker import STATUS_FAIL, STATUS_OK
from orchestrator.errors import (
    OrchestratorError,
    TuningError,
    did_you_mean,
)
from orchestrator.specs.tuning import (
    Distribution,
    TuningSpec,
    pipeline_param_name,
    plain_param_name,
)

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

STOP_MAX_EVALS = "max_evals reached"
STOP_EARLY = "early stopping"
STOP_TIMEOUT = "timeout"


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


@dataclass(frozen=True)
class TuningProgress:
    """One progress report, made each time trials complete."""

    completed: int
    ok: int
    failed: int
    max_evals: int
    best_score: float | None
    elapsed_s: float
    metric: str


# ---------------------------------------------------------------- Spark configuration


# ---------------------------------------------------------------- backend choice


def spark_unusable_reason(spark) -> tuple[Any, str | None]:
    """Return ``(session, None)`` if ``spark`` (or the active session) has a usable SparkContext.

    Otherwise ``(None, reason)``: no pyspark, no active session, Spark Connect or
    serverless (no SparkContext), or a stopped context.
    """
    spark, reason = _optuna_spark_session(spark)
    if spark is None:
        return None, reason
    try:
        from pyspark.sql.utils import is_remote

        if is_remote():
            return None, "the session is Spark Connect, which has no SparkContext"
        context = spark.sparkContext
    except (NotImplementedError, AttributeError) as exc:
        return None, f"the session has no SparkContext ({exc})"
    if getattr(context, "_jsc", None) is None:
        return None, "the SparkContext is stopped"
    return spark, None


def choose_backend(requested: str, *, spark_reason: str | None, hyperopt_installed: bool,
                   optuna_installed: bool) -> tuple[str, str]:
    """Decide the backend from plain facts; return ``(backend, why)``.

    Parameters
    ----------
    requested : {"auto", "spark", "local", "optuna"}
    spark_reason : str or None
        Why no SparkContext is usable, or None when one is.
    hyperopt_installed, optuna_installed : bool

    Returns
    -------
    tuple of (str, str)

    Raises
    ------
    TuningError
        When the requested backend cannot run here.

    Examples
    --------
    >>> choose_backend("auto", spark_reason="no active SparkSession", hyperopt_installed=True,
    ...                optuna_installed=False)[0]
    'local'
    """
    def unavailable(why: str) -> TuningError:
        return TuningError(f"tuning backend {requested!r} is unavailable: {why}.")

    if requested == "spark":
        if not hyperopt_installed:
            raise unavailable("hyperopt is not installed (Databricks ML runtimes after 16.4 "
                              "no longer ship it; use backend optuna)")
        if spark_reason:
            raise unavailable(f"SparkTrials needs a SparkContext and {spark_reason}")
        return "spark", "requested"
    if requested == "local":
        if not hyperopt_installed:
            raise unavailable("hyperopt is not installed; use backend optuna")
        return "local", "requested"
    if requested == "optuna":
        if not optuna_installed:
            raise unavailable("optuna is not installed (pip install optuna)")
        return "optuna", "requested"
    if hyperopt_installed and not spark_reason:
        return "spark", "auto: a SparkContext is usable"
    if hyperopt_installed:
        return "local", f"auto: {spark_reason}, so trials run on the driver"
    if optuna_installed:
        return "optuna", "auto: hyperopt is not installed"
    raise TuningError("no tuning backend is available: install hyperopt or optuna.")


# ---------------------------------------------------------------- search space


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


def _suggest_optuna(trial, label: str, dist: Distribution):
    kind = dist.kind
    if kind == "choice":
        index = trial.suggest_categorical(label, list(range(len(dist.options))))
        option = dist.options[index]
        return _suggest_optuna(trial, f"{label}[{index}]", option) if isinstance(
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


# ---------------------------------------------------------------- the objective


class TrialObjective:
    """Score one parameter set: inner cross-validation of the whole pipeline.

    Picklable, and light to ship: with ``broadcast`` set, the training rows
    travel once per tuning run as a Spark broadcast and each trial's closure
    carries only the unfitted pipeline, the scorer and the splitter.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Unfitted; cloned for every trial.
    scoring : str or callable
        A scikit-learn scorer (higher is better).
    cv : int or splitter
    data : tuple (X, y), optional
        The rows, for backends that run on the driver.
    broadcast : pyspark.Broadcast, optional
        A broadcast of ``(X, y)``, for the Spark backend.

    Returns (when called)
    ---------------------
    dict
        A hyperopt result: ``status``, ``loss`` (minus the mean score), ``score``,
        ``score_std``, ``params``, ``duration_s`` (scoring time, data access
        excluded) or ``error`` for a failed trial.
    """

    def __init__(self, pipeline, *, scoring, cv, data: tuple | None = None, broadcast=None):
        if (data is None) == (broadcast is None):
            raise TuningError("TrialObjective needs exactly one of data or broadcast")
        self.pipeline = pipeline
        self.scoring = scoring
        self.cv = cv
        self.data = data
        self.broadcast = broadcast

    def __call__(self, params: dict) -> dict:
        from sklearn.base import clone
        from sklearn.model_selection import cross_val_score

        X, y = self.data if self.data is not None else self.broadcast.value
        started = time.perf_counter()
        try:
            model = clone(self.pipeline).set_params(**params)
            scores = cross_val_score(model, X, y, scoring=self.scoring, cv=self.cv, n_jobs=1,
                                     error_score="raise")
            score = float(sum(scores) / len(scores))
            if not math.isfinite(score):
                raise ValueError(f"the cross-validated score is {score}")
        except Exception as exc:  # a failing trial is a result, not a crash of the search
            return {"status": STATUS_FAIL, "error": f"{type(exc).__name__}: {exc}",
                    "params": params, "duration_s": time.perf_counter() - started}
        spread = float((sum((s - score) ** 2 for s in scores) / len(scores)) ** 0.5)
        return {"status": STATUS_OK, "loss": -score, "score": score, "score_std": spread,
                "params": params, "duration_s": time.perf_counter() - started}


# ---------------------------------------------------------------- stopping and progress


def trials_without_improvement(scores: Sequence[float | None]) -> int:
    """How many completed trials came after the best one (scores in completion order).

    ``None`` marks a failed trial. With no successful trial, every completed trial counts.

    Examples
    --------
    >>> trials_without_improvement([0.5, 0.7, None, 0.6, 0.65])
    3
    """
    best_index, best = -1, None
    for index, score in enumerate(scores):
        if score is not None and (best is None or score > best):
            best_index, best = index, score
    return len(scores) - best_index - 1


class _TrialMonitor:
    """Reports progress and decides early stopping each time trials complete."""

    def __init__(self, *, rounds: int | None, max_evals: int, metric: str,
                 progress: Callable[[TuningProgress], None] | None, started: float):
        self.rounds = rounds
        self.max_evals = max_evals
        self.metric = metric
        self.progress = progress
        self.started = started
        self.seen = 0
        self.stopped_early = False

    def update(self, completed: Sequence[tuple[str, float | None]]) -> bool:
        """``completed``: (status, score) of every completed trial, in completion order."""
        if len(completed) <= self.seen:
            return self.stopped_early
        self.seen = len(completed)
        scores = [score if status == STATUS_OK else None for status, score in completed]
        ok_scores = [s for s in scores if s is not None]
        report = TuningProgress(
            completed=len(completed), ok=len(ok_scores), failed=len(completed) - len(ok_scores),
            max_evals=self.max_evals, best_score=max(ok_scores) if ok_scores else None,
            elapsed_s=time.perf_counter() - self.started, metric=self.metric)
        logger.info("Tuning: %d/%d trials done (%d failed), best %s %s, %.1f s elapsed",
                    report.completed, report.max_evals, report.failed, report.metric,
                    "n/a" if report.best_score is None else f"{report.best_score:.4f}",
                    report.elapsed_s)
        if self.progress is not None:
            self.progress(report)
        if self.rounds is not None and trials_without_improvement(scores) >= self.rounds:
            if not self.stopped_early:
                logger.info("Tuning: %d completed trials without improvement; stopping early",
                            self.rounds)
            self.stopped_early = True
        return self.stopped_early

    def hyperopt_early_stop_fn(self, trials, *args):
        from hyperopt import base

        # A trial whose objective raised is JOB_STATE_ERROR (result {"status": "fail", ...}).
        done = [t for t in list(trials._dynamic_trials)
                if t["state"] in (base.JOB_STATE_DONE, base.JOB_STATE_ERROR)]
        done.sort(key=lambda t: (t["refresh_time"], t["tid"]))
        completed = [(t["result"].get("status"), t["result"].get("score")) for t in done]
        return self.update(completed), args


# ---------------------------------------------------------------- running the search


def tune(pipeline, X, y, spec: TuningSpec, *, model_spec, scoring, spark=None,
         progress: Callable[[TuningProgress], None] | None = None,
         mlflow_parent_run_id: str | None = None) -> TuningOutcome:
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
        When given, every trial is logged as a child run of this MLflow run; the
        optuna backend on Spark also keeps its study (a run nested under this one)
        in this run's experiment, through the global tracking URI.

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
    backend, why = choose_backend(
        spec.backend, spark_reason=spark_reason,
        hyperopt_installed=importlib.util.find_spec("hyperopt") is not None,
        optuna_installed=importlib.util.find_spec("optuna") is not None)
    # A callable scorer (the workflow's, which knows pos_label) wins over a bare scorer name.
    metric = scoring if callable(scoring) else (spec.metric or scoring)
    metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", repr(metric))
    logger.info("Tuning %d parameters with backend %s (%s), algo %s, metric %s, %d trials",
                len(spec.search_space), backend, why, spec.algo, metric_name, spec.max_evals)
    monitor = _TrialMonitor(rounds=spec.early_stopping_rounds, max_evals=spec.max_evals,
                            metric=metric_name, progress=progress, started=started)
    cv = _make_cv(spec, model_spec)

    if backend == "optuna":
        records, parallelism, cancelled_reason, where = _run_optuna(
            pipeline, X, y, spec, metric, cv, monitor, spark=spark,
            mlflow_parent_run_id=mlflow_parent_run_id)
        why = f"{why}; {where}"
    else:
        records, parallelism, cancelled_reason = _run_hyperopt(
            pipeline, X, y, spec, metric, cv, monitor, session if backend == "spark" else None)
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


def _make_cv(spec: TuningSpec, model_spec):
    from sklearn.model_selection import KFold, StratifiedKFold

    task = getattr(model_spec, "task", "classification")
    splitter = StratifiedKFold if task == "classification" else KFold
    return splitter(n_splits=spec.cv_folds, shuffle=True, random_state=spec.seed)


def _algo(name: str):
    import hyperopt

    if name == "atpe":
        from hyperopt import atpe

        return atpe.suggest
    return {"tpe": hyperopt.tpe.suggest, "random": hyperopt.rand.suggest,
            "anneal": hyperopt.anneal.suggest}[name]


def _run_hyperopt(pipeline, X, y, spec: TuningSpec, metric, cv, monitor: _TrialMonitor, session):
    import numpy as np
    from hyperopt import Trials, fmin
    from hyperopt.exceptions import AllTrialsFailed

    space = build_hyperopt_space(spec.search_space)
    rstate = np.random.default_rng(spec.seed)
    broadcast = None
    if session is None:
        objective = TrialObjective(pipeline, scoring=metric, cv=cv, data=(X, y))
        trials, parallelism = Trials(), 1
        timeout = spec.timeout_s
    else:
        from orchestrator.tuning.spark_trials import BroadcastSparkTrials

        context = session.sparkContext
        broadcast = context.broadcast((X, y))
        objective = TrialObjective(pipeline, scoring=metric, cv=cv, broadcast=broadcast)
        parallelism = min(spec.parallelism or context.defaultParallelism, spec.max_evals)
        trials = BroadcastSparkTrials(parallelism=parallelism, timeout=spec.timeout_s,
                                      spark_session=session)
        timeout = None
    try:
        fmin(objective, space, algo=_algo(spec.algo), max_evals=spec.max_evals, trials=trials,
             rstate=rstate, timeout=timeout, early_stop_fn=monitor.hyperopt_early_stop_fn,
             show_progressbar=False, return_argmin=False)
    except AllTrialsFailed:
        pass  # reported from the trial records below
    finally:
        if broadcast is not None:
            broadcast.destroy()
    records = _hyperopt_records(trials, space)
    return records, parallelism, getattr(trials, "fmin_cancelled_reason", None)


def _hyperopt_records(trials, space) -> list[dict]:
    from hyperopt import base
    from hyperopt.fmin import space_eval

    records = []
    for trial in sorted(trials._dynamic_trials, key=lambda t: t["tid"]):
        result = trial.get("result") or {}
        params = result.get("params")
        if params is None:
            params = space_eval(space, base.spec_from_misc(trial["misc"]))
        state = trial["state"]
        if state == base.JOB_STATE_DONE:
            status = result.get("status", STATUS_FAIL)
        elif state == base.JOB_STATE_CANCEL:
            status = "cancelled"
        elif state == base.JOB_STATE_ERROR:
            status = STATUS_FAIL
        else:
            continue
        error = result.get("error")
        if error is None and trial["misc"].get("error"):
            error = str(trial["misc"]["error"][1])[:500]
        book, refresh = trial.get("book_time"), trial.get("refresh_time")
        records.append({
            "number": trial["tid"], "status": status, "pipeline_params": params,
            "score": result.get("score") if status == STATUS_OK else None,
            "duration_s": result.get("duration_s"),
            "wall_s": (refresh - book).total_seconds() if book and refresh else None,
            "start_ms": int(book.timestamp() * 1000) if book else None,
            "end_ms": int(refresh.timestamp() * 1000) if refresh else None,
            "error": error})
    return records


class _OptunaTrialFailed(Exception):
    """Marks an optuna trial whose objective returned a failed result."""


def _optuna_sampler(spec: TuningSpec):
    import optuna

    sampler_cls = {"tpe": optuna.samplers.TPESampler,
                   "random": optuna.samplers.RandomSampler}.get(spec.algo)
    if sampler_cls is None:
        raise TuningError(f"the optuna backend runs tpe or random, not {spec.algo!r}")
    return sampler_cls(seed=spec.seed)


def _run_optuna(pipeline, X, y, spec: TuningSpec, metric, cv, monitor: _TrialMonitor, *,
                spark=None, mlflow_parent_run_id: str | None = None):
    """Run optuna on Spark executors when a session is active, else on the driver.

    Returns ``(records, parallelism, cancelled_reason, where)``; ``where`` says
    which path ran and why, for the summary's ``backend_reason``.
    """
    sampler = _optuna_sampler(spec)
    session, reason = _optuna_spark_session(spark)
    if session is not None:
        try:
            records, parallelism, cancelled_reason = _run_optuna_on_spark(
                session, pipeline, X, y, spec, metric, cv, monitor, sampler,
                mlflow_parent_run_id)
        except _SparkStudyUnavailable as exc:
            reason = str(exc)
            logger.warning("Optuna cannot run on Spark (%s); running it on the driver", reason)
        else:
            where = (f"optuna ran on Spark executors through MlflowSparkStudy "
                     f"(n_jobs={parallelism})")
            logger.info("Tuning: %s", where)
            return records, parallelism, cancelled_reason, where
    logger.info("Tuning: optuna runs on the driver: %s", reason)
    records, parallelism, cancelled_reason = _run_optuna_on_driver(
        pipeline, X, y, spec, metric, cv, monitor, _optuna_sampler(spec))
    return records, parallelism, cancelled_reason, f"optuna ran on the driver: {reason}"


def _optuna_spark_session(spark) -> tuple[Any, str]:
    """The given or active session (classic or Spark Connect), or why there is none."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None, "pyspark is not installed"
    if spark is None:
        spark = SparkSession.getActiveSession()
    if spark is None:
        return None, "no active SparkSession"
    return spark, ""


class _SparkStudyUnavailable(OrchestratorError):
    """MlflowSparkStudy could not be set up (or its Spark job failed before any trial ran)."""


def _run_optuna_on_driver(pipeline, X, y, spec: TuningSpec, metric, cv,
                          monitor: _TrialMonitor, sampler):
    import optuna

    objective = TrialObjective(pipeline, scoring=metric, cv=cv, data=(X, y))
    records: list[dict] = []

    def run_trial(trial):
        params = {pipeline_param_name(key): _suggest_optuna(trial, key, dist)
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


_STOP_ATTR = "orchestrator_stop_reason"


class _SparkTrialObjective:
    """The optuna objective shipped to the executors: suggest, score, record.

    It carries the training rows (inside ``objective``): ``MlflowSparkStudy``
    pickles the objective into its ``mapInPandas`` function, which Spark ships once
    per tuning run (classic PySpark broadcasts a large command automatically),
    not once per trial, so pickling X, y with it is acceptable for this backend.
    """

    def __init__(self, objective: TrialObjective, search_space: Mapping[str, Distribution]):
        self.objective = objective
        self.search_space = dict(search_space)

    def __call__(self, trial) -> float:
        params = {pipeline_param_name(key): _suggest_optuna(trial, key, dist)
                  for key, dist in self.search_space.items()}
        result = self.objective(params)
        trial.set_user_attr("duration_s", result.get("duration_s"))
        if result["status"] != STATUS_OK:
            trial.set_user_attr("error", str(result["error"])[:4000])
            raise _OptunaTrialFailed(result["error"])
        return result["score"]


class _SparkStudyStopper:
    """Executor-side callback: early stopping over every task's trials, and a global deadline.

    ``MlflowSparkStudy`` runs each Spark task's share of the trials in its own loop,
    which checks ``study._stop_flag`` before each trial (``study.stop()`` refuses to
    run outside optuna's own loop), so the flag is set directly. The study in the
    shared storage holds every task's trials, so completed trials are counted in
    completion order across tasks. The reason is kept as a study attribute for the driver.
    """

    def __init__(self, rounds: int | None, deadline: float | None):
        self.rounds = rounds
        self.deadline = deadline

    def __call__(self, study, _trial) -> None:
        import datetime

        from optuna.trial import TrialState

        reason = None
        if self.deadline is not None and time.time() >= self.deadline:
            reason = STOP_TIMEOUT
        elif self.rounds is not None:
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            done.sort(key=lambda t: (t.datetime_complete or datetime.datetime.max, t.number))
            scores = [t.value if t.state == TrialState.COMPLETE else None for t in done]
            if trials_without_improvement(scores) >= self.rounds:
                reason = STOP_EARLY
        if reason is not None:
            if _STOP_ATTR not in study.user_attrs:
                study.set_user_attr(_STOP_ATTR, reason)
                # MlflowStorage batches attributes and does not flush on executors by itself.
                flush = getattr(study._storage, "flush_all_batches", None)
                if flush is not None:
                    flush()
            study._stop_flag = True


def _run_optuna_on_spark(session, pipeline, X, y, spec: TuningSpec, metric, cv,
                         monitor: _TrialMonitor, sampler, mlflow_parent_run_id: str | None):
    """Trials on Spark executors through ``MlflowSparkStudy``.

    Limits (MlflowSparkStudy's design): each Spark task runs its share of the trials
    in a loop; ``timeout_s`` stops a task from starting new trials (measured from the
    task's start, and from the driver's start through the stopper's deadline) but
    never interrupts a running trial, so no trial is reported as cancelled; progress
    is reported once, when the Spark job returns; with ``parallelism`` above 1 each
    task reseeds its sampler, so only ``parallelism: 1`` is reproducible from ``seed``.
    """
    import tempfile

    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    try:
        import optuna
        from mlflow.optuna.storage import MlflowStorage
        from mlflow.pyspark.optuna.study import MlflowSparkStudy
    except ImportError as exc:
        raise _SparkStudyUnavailable(f"MlflowSparkStudy cannot be imported ({exc})") from exc

    parallelism = min(spec.parallelism or _spark_slots(session) or spec.max_evals,
                      spec.max_evals)
    # MlflowSparkStudy sets MLflow's global tracking URI; put back what was there.
    previous_uri = tracking_utils._tracking_uri
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    tmpdir = None
    try:
        try:
            client = mlflow.MlflowClient()
            if mlflow_parent_run_id:
                tracking_uri = mlflow.get_tracking_uri()
                experiment_id = client.get_run(mlflow_parent_run_id).info.experiment_id
            else:
                tmpdir = tempfile.mkdtemp(prefix="orchestrator_optuna_")
                tracking_uri = f"sqlite:///{tmpdir}/optuna.db"
                mlflow.set_tracking_uri(tracking_uri)
                client = mlflow.MlflowClient()
                experiment_id = client.create_experiment(
                    "orchestrator_optuna", artifact_location=f"file://{tmpdir}/artifacts")
            study_name = f"orchestrator_tuning_{os.urandom(6).hex()}"
            storage = MlflowStorage(experiment_id=experiment_id)
            study = MlflowSparkStudy(study_name, storage, sampler=sampler,
                                     pruner=optuna.pruners.NopPruner(),
                                     mlflow_tracking_uri=tracking_uri, direction="maximize")
            if mlflow_parent_run_id:
                client.set_tag(study._study_id, "mlflow.parentRunId", mlflow_parent_run_id)
        except Exception as exc:  # any setup failure means: run on the driver instead
            raise _SparkStudyUnavailable(
                f"MlflowSparkStudy could not be set up ({type(exc).__name__}: {exc})") from exc

        objective = _SparkTrialObjective(
            TrialObjective(pipeline, scoring=metric, cv=cv, data=(X, y)), spec.search_space)
        # The executors compare wall-clock time with a deadline counted from the start of tune().
        deadline = (time.time() + spec.timeout_s - (time.perf_counter() - monitor.started)
                    if spec.timeout_s is not None else None)
        stopper = _SparkStudyStopper(spec.early_stopping_rounds, deadline)
        logger.info("Tuning: optuna study %s on Spark, %d trials in %d tasks, tracking %s",
                    study_name, spec.max_evals, parallelism, tracking_uri)
        try:
            t_job = time.perf_counter()
            study.optimize(objective, n_trials=spec.max_evals, timeout=spec.timeout_s,
                           n_jobs=parallelism, catch=(_OptunaTrialFailed,),
                           callbacks=[stopper])
            job_error = None
        except Exception as exc:  # the Spark job failed; its trials so far are still read
            job_error = exc
        logger.debug("Tuning: the optuna Spark job took %.1f s", time.perf_counter() - t_job)
        trials = study._study.get_trials(deepcopy=False)
        stop_reason = study._study.user_attrs.get(_STOP_ATTR)
        storage.flush_all_batches()
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
        if tmpdir is not None:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)

    if job_error is not None and not trials:
        raise _SparkStudyUnavailable(
            f"the MlflowSparkStudy Spark job failed before any trial ran "
            f"({type(job_error).__name__}: {str(job_error)[:500]})") from job_error
    if job_error is not None:
        logger.warning("Tuning: the optuna Spark job failed after %d trials: %s", len(trials),
                       job_error)
        stop_reason = stop_reason or f"Spark job failed: {str(job_error)[:300]}"
    records = _optuna_records(trials, spec)
    monitor.update([(r["status"], r["score"]) for r in
                    sorted(records, key=lambda r: (r["end_ms"] or 0, r["number"]))])
    # The executors decided early stopping; the replay above only reports progress.
    monitor.stopped_early = stop_reason == STOP_EARLY
    return records, parallelism, stop_reason if stop_reason != STOP_EARLY else None


def _spark_slots(session) -> int | None:
    """Task slots of the session: defaultParallelism, or the conf under Spark Connect."""
    try:
        return int(session.sparkContext.defaultParallelism)
    except (NotImplementedError, AttributeError, ValueError):
        pass
    value = session.conf.get("spark.default.parallelism", None)
    return int(value) if value else None


def _optuna_records(trials, spec: TuningSpec) -> list[dict]:
    """Turn the study's frozen trials into tuning records with the actual parameter values."""
    from optuna.trial import FixedTrial, TrialState

    statuses = {TrialState.COMPLETE: STATUS_OK, TrialState.FAIL: STATUS_FAIL}
    ordered = sorted(trials, key=lambda t: (t.datetime_start is None, t.datetime_start, t.number))
    records = []
    for number, trial in enumerate(ordered):
        status = statuses.get(trial.state, "cancelled")
        try:
            # Replaying the suggestions maps choice indices back to the option values.
            fixed = FixedTrial(dict(trial.params))
            params = {pipeline_param_name(key): _suggest_optuna(fixed, key, dist)
                      for key, dist in spec.search_space.items()}
        except ValueError:  # a trial stopped before it suggested everything
            params = {pipeline_param_name(k): v for k, v in trial.params.items()
                      if k in spec.search_space}
        start, end = trial.datetime_start, trial.datetime_complete
        error = trial.user_attrs.get("error")
        if status == STATUS_FAIL and not error:
            error = "the trial failed on the executor (see its MLflow run's error_message.txt)"
        records.append({
            "number": number, "status": status, "pipeline_params": params,
            "score": float(trial.value) if status == STATUS_OK else None,
            "duration_s": trial.user_attrs.get("duration_s"),
            "wall_s": (end - start).total_seconds() if start and end else None,
            "start_ms": int(start.timestamp() * 1000) if start else None,
            "end_ms": int(end.timestamp() * 1000) if end else None,
            "error": error})
    return records


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

