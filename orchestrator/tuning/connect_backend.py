"""Trials on Spark executors through the Connect task runner, points suggested on the driver.

hyperopt (its ``algo(new_ids, domain, trials, seed)``, as ``fmin`` calls it) or
optuna (``study.ask`` / ``study.tell``) suggests each point on the driver as a
slot frees up, and :class:`orchestrator.cluster.connect.ConnectTaskRunner` scores
it on an executor, at most ``parallelism`` at a time. Only DataFrame APIs are
used, so it runs on Spark Connect (serverless, standard access mode) and on
classic sessions alike; neither library runs on the workers.

Stopping behaves as the classic backend: early stopping and the timeout cancel
the running trials' Spark jobs (their tag) and record them as cancelled; Ctrl-C
or SIGTERM (``SystemExit`` from the entry point) cancels them and re-raises.
With ``parallelism: 1`` the points are those the driver backends suggest for
the same seed (hyperopt ``local``, optuna on the driver).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, wait

from orchestrator.cluster.connect import TASK_CANCELLED, TASK_OK, ConnectTaskRunner
from orchestrator.cluster.worker import STATUS_FAIL, STATUS_OK
from orchestrator.specs.tuning import TuningSpec, pipeline_param_name
from orchestrator.tuning.objective import (
    STOP_TIMEOUT,
    TrialMonitor,
    TrialObjective,
    training_rows,
)
from orchestrator.tuning.space import build_hyperopt_space, suggest_optuna

logger = logging.getLogger(__name__)

__all__ = ["cluster_parallelism", "run_on_cluster_runner"]


class ScoreTrial:
    """The task each trial runs on an executor: ``(X, y[, sample_weight])`` staged once, the
    params per trial."""

    def __init__(self, pipeline, scoring, cv):
        self.pipeline = pipeline
        self.scoring = scoring
        self.cv = cv

    def __call__(self, shared, params: dict) -> dict:
        return TrialObjective(self.pipeline, scoring=self.scoring, cv=self.cv,
                              data=shared)(params)


def cluster_parallelism(requested: int | None, slots: int | None, max_evals: int) -> int:
    """Trials at once: the spec's parallelism, else the session's task slots, at most max_evals.

    Examples
    --------
    >>> cluster_parallelism(None, 2, 8), cluster_parallelism(4, 2, 3), cluster_parallelism(None, None, 8)
    (2, 3, 1)
    """
    return max(1, min(requested or slots or 1, max_evals))


class _HyperoptSearch:
    """hyperopt suggestions one point at a time, as ``fmin``'s loop makes them."""

    def __init__(self, spec: TuningSpec):
        import numpy as np
        from hyperopt import Trials, base

        from orchestrator.tuning.hyperopt_backend import _algo

        self.space = build_hyperopt_space(spec.search_space)
        self.domain = base.Domain(_never_called, self.space)
        self.trials = Trials()
        self.algo = _algo(spec.algo)
        self.rstate = np.random.default_rng(spec.seed)

    def ask(self) -> tuple[int, dict, dict]:
        from hyperopt import base
        from hyperopt.fmin import space_eval
        from hyperopt.utils import coarse_utcnow

        from orchestrator.tuning.hyperopt_backend import all_trials

        new_ids = self.trials.new_trial_ids(1)
        self.trials.refresh()
        docs = self.algo(new_ids, self.domain, self.trials, self.rstate.integers(2 ** 31 - 1))
        self.trials.insert_trial_docs(docs)
        self.trials.refresh()
        doc = next(t for t in all_trials(self.trials) if t["tid"] == new_ids[0])
        doc["state"] = base.JOB_STATE_RUNNING
        doc["book_time"] = doc["refresh_time"] = coarse_utcnow()
        params = space_eval(self.space, base.spec_from_misc(doc["misc"]))
        return doc["tid"], params, doc

    def tell(self, doc: dict, record: dict) -> None:
        from hyperopt import base
        from hyperopt.utils import coarse_utcnow

        if record["status"] == STATUS_OK:
            doc["state"] = base.JOB_STATE_DONE
            doc["result"] = {"status": STATUS_OK, "loss": -record["score"],
                             "score": record["score"]}
        elif record["status"] == TASK_CANCELLED:
            doc["state"] = base.JOB_STATE_CANCEL
        else:
            doc["state"] = base.JOB_STATE_DONE
            doc["result"] = {"status": STATUS_FAIL, "error": record["error"]}
        doc["refresh_time"] = coarse_utcnow()
        self.trials.refresh()


def _never_called(params):  # hyperopt's Domain wants a function; the runner scores instead
    raise NotImplementedError


class _OptunaSearch:
    """optuna ask/tell on the driver."""

    def __init__(self, spec: TuningSpec):
        import optuna

        from orchestrator.tuning.optuna_backend import optuna_sampler

        self.search_space = dict(spec.search_space)
        self.study = optuna.create_study(direction="maximize", sampler=optuna_sampler(spec))

    def ask(self):
        trial = self.study.ask()
        params = {pipeline_param_name(key): suggest_optuna(trial, key, dist)
                  for key, dist in self.search_space.items()}
        return trial.number, params, trial

    def tell(self, trial, record: dict) -> None:
        from optuna.trial import TrialState

        if record["status"] == STATUS_OK:
            self.study.tell(trial, record["score"])
        else:  # failed, or cancelled: optuna has no cancelled state; the record keeps it
            self.study.tell(trial, state=TrialState.FAIL)


def run_on_cluster_runner(session, pipeline, X, y, spec: TuningSpec, metric, cv,
                          monitor: TrialMonitor, *, library: str, slots: int | None,
                          sample_weight=None):
    """Run the search with ``library`` ("hyperopt" or "optuna") suggesting on the driver.

    Returns
    -------
    (records, parallelism, cancelled_reason)
        As the other backends: one record per trial (number, status, pipeline_params,
        score, duration_s, wall_s, start_ms, end_ms, error).
    """
    search = _HyperoptSearch(spec) if library == "hyperopt" else _OptunaSearch(spec)
    parallelism = cluster_parallelism(spec.parallelism, slots, spec.max_evals)
    task = ScoreTrial(pipeline, metric, cv)
    deadline = monitor.started + spec.timeout_s if spec.timeout_s is not None else None
    records: list[dict] = []
    completed: list[tuple[str, float | None]] = []
    cancelled_reason = None
    with ConnectTaskRunner(session, training_rows(X, y, sample_weight), parallelism=parallelism,
                           staging_dir=spec.staging_dir) as runner:
        logger.info("Tuning: %s suggests on the driver, trials run on Spark executors "
                    "(%d at a time; training rows staged once in %.1f s)", library,
                    parallelism, runner.stage_s)
        running: dict = {}
        asked = 0
        try:
            while True:
                stopping = (runner.cancelled or monitor.stopped_early
                            or (deadline is not None and time.perf_counter() >= deadline))
                while not stopping and len(running) < parallelism and asked < spec.max_evals:
                    number, params, handle = search.ask()
                    asked += 1
                    future = runner.submit(task, params)
                    running[future] = (number, params, handle, int(time.time() * 1000))
                if not running:
                    break
                left = None if deadline is None else max(0.0, deadline - time.perf_counter())
                done, _ = wait(running, timeout=left, return_when=FIRST_COMPLETED)
                if not done:
                    if not runner.cancelled:
                        logger.warning("Tuning: timeout after %.1f s; cancelling %d running "
                                       "trials", spec.timeout_s, len(running))
                        cancelled_reason = STOP_TIMEOUT
                        runner.cancel()
                    deadline = None  # now wait for the cancelled jobs to return
                    continue
                for future in done:
                    number, params, handle, submitted_ms = running.pop(future)
                    record = _record(number, params, future.result(), submitted_ms)
                    records.append(record)
                    search.tell(handle, record)
                    if record["status"] != TASK_CANCELLED:
                        completed.append((record["status"], record["score"]))
                    # One progress report per completed trial, as on the classic backend,
                    # even when several finish between two polls.
                    if monitor.update(completed) and not runner.cancelled:
                        runner.cancel()
        except (KeyboardInterrupt, SystemExit):
            runner.cancel()
            raise
    records.sort(key=lambda r: r["number"])
    return records, parallelism, cancelled_reason


def _record(number: int, params: dict, result, submitted_ms: int) -> dict:
    """One tuning record from a task result (the objective's own result inside it)."""
    if result.status == TASK_OK:
        outcome = result.value
        status = outcome["status"]
        error = outcome.get("error")
        duration = outcome.get("duration_s")
    else:
        status = TASK_CANCELLED if result.status == TASK_CANCELLED else STATUS_FAIL
        error = result.error
        duration = result.duration_s
    return {"number": number, "status": status, "pipeline_params": params,
            "score": outcome["score"] if status == STATUS_OK else None,
            "duration_s": duration, "wall_s": result.wall_s,
            "start_ms": submitted_ms,
            "end_ms": submitted_ms + int(result.wall_s * 1000), "error": error}
