"""Code that runs in Spark's Python workers during tuning.

Two things live here, both kept free of hyperopt so a worker never imports it:

* :func:`run_trial_partition`, the body of each trial's one-task Spark job. It
  drains its input partition before returning: PySpark reuses a Python worker
  only when the task read its whole input, and hyperopt's stock task function
  never does, so every stock trial forks a fresh worker and re-imports
  everything (measured at ~2-3 s per trial on local[2]).
* A preloading worker daemon: ``python -m orchestrator.cluster.worker``. Set as
  ``spark.python.daemon.module`` (see :func:`orchestrator.cluster.worker_spark_conf`),
  it imports numpy, pandas, scikit-learn and this package once and then runs
  PySpark's own ``pyspark.daemon.manager()``; every worker it forks inherits
  those modules instead of importing them again.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

#: hyperopt's STATUS_OK / STATUS_FAIL strings, written out to keep hyperopt off the workers.
STATUS_OK = "ok"
STATUS_FAIL = "fail"

#: Modules the daemon imports before forking workers (those a tuning trial uses).
PRELOAD_MODULES = (
    "numpy",
    "pandas",
    "scipy.sparse",
    "sklearn.base",
    "sklearn.model_selection",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "sklearn.impute",
    "sklearn.feature_extraction.text",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.naive_bayes",
    "sklearn.svm",
    "orchestrator.tuning",
)


def run_trial_partition(objective: Callable[[Any], Any], params: Any,
                        partition: Iterable[Any]) -> Iterator[dict]:
    """Evaluate one trial inside a Spark task and yield what the objective did.

    Parameters
    ----------
    objective : callable
        Takes the trial's parameters (already evaluated on the driver) and
        returns what a hyperopt objective may return: a result dict or a number.
    params : object
        The trial's parameter values (the search space evaluated at this point).
    partition : iterable
        The task's input partition; read to the end so the worker is reused.

    Returns
    -------
    iterator of dict
        One outcome: ``{"value": <what fn returned>}``, or, when ``fn`` raised,
        ``{"raised": <repr of the exception type>, "error": "Type: message",
        "traceback": <formatted traceback>}``. The exception is caught here so
        that Spark never retries a failing trial; the driver turns the outcome
        into hyperopt's trial states, as stock ``SparkTrials`` does.

    Examples
    --------
    >>> list(run_trial_partition(lambda p: p["x"] + 1, {"x": 1}, iter([0])))
    [{'value': 2}]
    """
    for _ in partition:
        pass
    try:
        return_value = objective(params)
    except Exception as exc:  # noqa: BLE001 - a failed trial, not a task failure Spark would retry
        yield {"raised": str(type(exc)), "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc()}
        return
    yield {"value": return_value}


def preload(modules: Iterable[str] = PRELOAD_MODULES) -> list[str]:
    """Import ``modules``; return those that could not be imported."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def main() -> None:
    """Preload the trial modules, then run PySpark's worker daemon."""
    from pyspark import daemon

    missing = preload()
    if missing:
        logger.warning("Tuning worker daemon could not preload: %s", ", ".join(missing))
    daemon.manager()


if __name__ == "__main__":
    main()
