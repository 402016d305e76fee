"""Progress lines while a long Spark action runs (a point-in-time join, a scoring write).

:func:`spark_progress` is a context manager: while its block runs, a thread logs
a ``Progress:`` line every ``interval_s`` seconds. Where the counts come from
depends on the session:

* classic Spark: the SparkContext's status tracker, the active stages of the
  block's jobs (found by their job group: the caller's, or one set for the
  block and restored after it);
* Spark Connect (no SparkContext): the client's progress handler
  (``spark.registerProgressHandler``), which the server feeds while an
  operation of the session runs;
* neither (a classic session whose SparkContext is not reachable, e.g. a
  Databricks shared cluster): a plain "still running" line.

What line to print is :func:`progress_message`, a plain function of the counts.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_INTERVAL_S", "progress_message", "spark_progress", "task_counts"]

#: Seconds between two progress lines of one action.
DEFAULT_INTERVAL_S = 10.0

# The local properties SparkContext.setJobGroup sets, restored after the block.
_JOB_GROUP_PROPERTIES = ("spark.jobGroup.id", "spark.job.description",
                         "spark.job.interruptOnCancel")


def task_counts(stages: Iterable[tuple[int, int]]) -> tuple[int, int] | None:
    """Completed and total tasks over ``(completed, total)`` pairs; None before any task exists.

    Examples
    --------
    >>> task_counts([(3, 8), (0, 2)])
    (3, 10)
    >>> task_counts([]) is None
    True
    """
    done = total = 0
    for completed, tasks in stages:
        done, total = done + completed, total + tasks
    return (done, total) if total > 0 else None


def progress_message(what: str, elapsed_s: float,
                     counts: tuple[int, int] | None) -> tuple[str, tuple[Any, ...]]:
    """The log format and arguments of one progress line.

    With task counts the line leads with ``k/n``, as every ``Progress:`` line
    does, so the console's filter recognises it; without them it says how long
    the action has run.

    Parameters
    ----------
    what : str
        The action, e.g. ``"point-in-time join"``.
    elapsed_s : float
        Seconds since the action started.
    counts : tuple of (int, int), optional
        Completed and total tasks, see :func:`task_counts`.

    Returns
    -------
    tuple
        ``(format, args)`` for ``logger.info(format, *args)``.

    Examples
    --------
    >>> fmt, args = progress_message("scoring churn", 20.4, (12, 40))
    >>> fmt % args
    'Progress: 12/40 tasks done (scoring churn), 20 s elapsed'
    >>> fmt, args = progress_message("scoring churn", 10.0, None)
    >>> fmt % args
    'Progress: scoring churn still running, 10 s elapsed'
    """
    if counts is None:
        return "Progress: %s still running, %.0f s elapsed", (what, elapsed_s)
    done, total = counts
    return "Progress: %d/%d tasks done (%s), %.0f s elapsed", (done, total, what, elapsed_s)


class _StatusTrackerCounts:
    """Task counts of the block's running jobs, from a classic SparkContext's status tracker."""

    def __init__(self, context, what: str):
        self.context = context
        self.what = what

    def __enter__(self) -> _StatusTrackerCounts:
        context = self.context
        self.tracker = context.statusTracker()
        self.saved = {key: context.getLocalProperty(key) for key in _JOB_GROUP_PROPERTIES}
        # A caller's group (a cancellable harness) is kept: its jobs stay cancellable by it.
        self.group = self.saved["spark.jobGroup.id"]
        self.own_group = self.group is None
        if self.own_group:
            self.group = f"orchestrator-progress-{uuid.uuid4().hex}"
            context.setJobGroup(self.group, f"orchestrator: {self.what}")
        self.earlier_jobs = set(self.tracker.getJobIdsForGroup(self.group))
        return self

    def __exit__(self, *exc_info) -> None:
        if self.own_group:
            for key, value in self.saved.items():
                self.context.setLocalProperty(key, value)  # None removes the property

    def __call__(self) -> tuple[int, int] | None:
        tracker = self.tracker
        active = set(tracker.getActiveStageIds())
        stages = set()
        for job_id in set(tracker.getJobIdsForGroup(self.group)) - self.earlier_jobs:
            job = tracker.getJobInfo(job_id)
            if job is not None and job.status == "RUNNING":
                stages.update(s for s in job.stageIds if s in active)
        infos = (tracker.getStageInfo(s) for s in stages)
        return task_counts((i.numCompletedTasks, i.numTasks) for i in infos if i is not None)


class _ConnectCounts:
    """Task counts a Spark Connect session's progress handler reports, per operation."""

    def __init__(self, session):
        self.session = session
        self.lock = threading.Lock()
        self.operations: dict[str | None, tuple[int, int]] = {}

    def __enter__(self) -> _ConnectCounts:
        self.session.registerProgressHandler(self.on_progress)
        return self

    def __exit__(self, *exc_info) -> None:
        self.session.removeProgressHandler(self.on_progress)

    def on_progress(self, stages, inflight_tasks: int, operation_id: str | None,
                    done: bool) -> None:
        # Called by the client in the thread running the operation; counts every operation
        # of the session while the block runs (the block's own, in the jobs we wrap).
        counts = task_counts((s.num_completed_tasks, s.num_tasks) for s in stages or ())
        if counts is not None:
            with self.lock:
                self.operations[operation_id] = counts

    def __call__(self) -> tuple[int, int] | None:
        with self.lock:
            return task_counts(self.operations.values())


class _NoCounts:
    def __enter__(self) -> _NoCounts:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def __call__(self) -> None:
        return None


def _counts_for(spark, what: str):
    from orchestrator.io.delta import spark_errors
    from orchestrator.io.session import is_connect_session

    if is_connect_session(spark):
        return _ConnectCounts(spark)
    try:
        context = spark.sparkContext
    except (*spark_errors(), AttributeError):  # no SparkContext here (shared clusters)
        logger.debug("no SparkContext for progress; %s reports elapsed time only", what)
        return _NoCounts()
    return _StatusTrackerCounts(context, what)


def _report_until(stop: threading.Event, what: str, counts: Callable[[], Any],
                  interval_s: float, clock: Callable[[], float], started: float) -> None:
    while not stop.wait(interval_s):
        try:
            current = counts()
        except Exception as exc:  # noqa: BLE001 - progress is optional: never fail the action
            logger.debug("reading the progress of %s failed: %s", what, exc)
            current = None
        fmt, args = progress_message(what, clock() - started, current)
        logger.info(fmt, *args)


@contextmanager
def spark_progress(spark, what: str, *, interval_s: float = DEFAULT_INTERVAL_S,
                   clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Log a ``Progress:`` line every ``interval_s`` seconds while the block's Spark action runs.

    Parameters
    ----------
    spark : SparkSession
        The session running the action (classic or Spark Connect).
    what : str
        What the lines call the action, e.g. ``"point-in-time join"``.
    interval_s : float
        Seconds between lines; an action shorter than that logs none.
    clock : callable
        Monotonic seconds (for tests).

    Examples
    --------
    >>> with spark_progress(spark, "scoring churn"):  # doctest: +SKIP
    ...     scored.write.format("delta").mode("append").save(path)
    """
    started = clock()
    with _counts_for(spark, what) as counts:
        stop = threading.Event()
        reporter = threading.Thread(target=_report_until, name=f"progress: {what}", daemon=True,
                                    args=(stop, what, counts, interval_s, clock, started))
        reporter.start()
        try:
            yield
        finally:
            stop.set()
            # A status call still under way ends by itself; the action's own result matters more.
            reporter.join(timeout=5.0)
