"""hyperopt: trials on Spark executors (BroadcastSparkTrials) or one after another on the driver."""

from __future__ import annotations

import functools
import logging

from orchestrator.cluster.worker import STATUS_FAIL, STATUS_OK
from orchestrator.specs.tuning import TuningSpec
from orchestrator.tuning.objective import TrialMonitor, TrialObjective, training_rows
from orchestrator.tuning.space import build_hyperopt_space

logger = logging.getLogger(__name__)


def _algo(name: str):
    import hyperopt

    if name == "atpe":
        from hyperopt import atpe

        return atpe.suggest
    return {"tpe": hyperopt.tpe.suggest, "random": hyperopt.rand.suggest,
            "anneal": hyperopt.anneal.suggest}[name]


def run_hyperopt(pipeline, X, y, spec: TuningSpec, metric, cv, monitor: TrialMonitor, session,
                 sample_weight=None):
    import numpy as np
    from hyperopt import Trials, fmin
    from hyperopt.exceptions import AllTrialsFailed

    space = build_hyperopt_space(spec.search_space)
    rstate = np.random.default_rng(spec.seed)
    broadcast = None
    if session is None:
        objective = TrialObjective(pipeline, scoring=metric, cv=cv,
                                   data=training_rows(X, y, sample_weight))
        trials, parallelism = Trials(), 1
        timeout = spec.timeout_s
    else:
        from orchestrator.tuning.spark_trials import BroadcastSparkTrials

        context = session.sparkContext
        broadcast = context.broadcast(training_rows(X, y, sample_weight))
        objective = TrialObjective(pipeline, scoring=metric, cv=cv, broadcast=broadcast)
        parallelism = min(spec.parallelism or context.defaultParallelism, spec.max_evals)
        trials = BroadcastSparkTrials(parallelism=parallelism, timeout=spec.timeout_s,
                                      spark_session=session)
        timeout = None
    try:
        fmin(objective, space, algo=_algo(spec.algo), max_evals=spec.max_evals, trials=trials,
             rstate=rstate, timeout=timeout, early_stop_fn=functools.partial(_early_stop, monitor),
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
    for trial in sorted(all_trials(trials), key=lambda t: t["tid"]):
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


def all_trials(trials) -> list[dict]:
    """Every trial of a hyperopt ``Trials``, failed and cancelled ones included.

    The public ``Trials.trials`` leaves out trials in the ERROR and CANCEL
    states, so this reads hyperopt's ``_dynamic_trials`` (checked against
    hyperopt 0.3.0 by tests/test_architecture.py, which names the version
    if it changes). The connect backend reads it through here too; only
    :mod:`orchestrator.tuning.spark_trials` (our SparkTrials runner, which this
    module imports) reads it itself.
    """
    return list(trials._dynamic_trials)


def _early_stop(monitor: TrialMonitor, trials, *args):
    """hyperopt's ``early_stop_fn``: completed trials (ok or failed) in completion order."""
    from hyperopt import base

    # A trial whose objective raised is JOB_STATE_ERROR (result {"status": "fail", ...}).
    done = [t for t in all_trials(trials)
            if t["state"] in (base.JOB_STATE_DONE, base.JOB_STATE_ERROR)]
    done.sort(key=lambda t: (t["refresh_time"], t["tid"]))
    completed = [(t["result"].get("status"), t["result"].get("score")) for t in done]
    return monitor.update(completed), args
