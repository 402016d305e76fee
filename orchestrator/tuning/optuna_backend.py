"""optuna: trials on the driver, or on Spark executors through MLflow's MlflowSparkStudy."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from orchestrator.cluster.worker import STATUS_FAIL, STATUS_OK
from orchestrator.errors import OrchestratorError, TuningError
from orchestrator.io.session import active_session
from orchestrator.specs.tuning import Distribution, TuningSpec, pipeline_param_name
from orchestrator.tuning.objective import (
    STOP_EARLY,
    STOP_TIMEOUT,
    TrialMonitor,
    TrialObjective,
    spark_slots,
    trials_without_improvement,
)
from orchestrator.tuning.space import suggest_optuna

logger = logging.getLogger(__name__)


class _OptunaTrialFailed(Exception):
    """Marks an optuna trial whose objective returned a failed result."""


def _optuna_sampler(spec: TuningSpec):
    import optuna

    sampler_cls = {"tpe": optuna.samplers.TPESampler,
                   "random": optuna.samplers.RandomSampler}.get(spec.algo)
    if sampler_cls is None:
        raise TuningError(f"the optuna backend runs tpe or random, not {spec.algo!r}")
    return sampler_cls(seed=spec.seed)


def run_optuna(pipeline, X, y, spec: TuningSpec, metric, cv, monitor: TrialMonitor, *,
                spark=None, mlflow_parent_run_id: str | None = None):
    """Run optuna on Spark executors when a session is active, else on the driver.

    Returns ``(records, parallelism, cancelled_reason, where)``; ``where`` says
    which path ran and why, for the summary's ``backend_reason``.
    """
    sampler = _optuna_sampler(spec)
    session, reason = active_session(spark)
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


class _SparkStudyUnavailable(OrchestratorError):
    """MlflowSparkStudy could not be set up (or its Spark job failed before any trial ran)."""


def _run_optuna_on_driver(pipeline, X, y, spec: TuningSpec, metric, cv,
                          monitor: TrialMonitor, sampler):
    import optuna

    objective = TrialObjective(pipeline, scoring=metric, cv=cv, data=(X, y))
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
        params = {pipeline_param_name(key): suggest_optuna(trial, key, dist)
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
                         monitor: TrialMonitor, sampler, mlflow_parent_run_id: str | None):
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

    parallelism = min(spec.parallelism or spark_slots(session) or spec.max_evals,
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
            params = {pipeline_param_name(key): suggest_optuna(fixed, key, dist)
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
