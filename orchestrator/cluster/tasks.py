"""Run N independent Python tasks on Spark's executors, with data shared by all of them.

The machinery of the tuning backend (:mod:`orchestrator.tuning.spark_trials`),
made generic for other per-task work such as cross-validation folds:

* each task is a Spark job of one task in one job group (so an interrupt cancels
  every running task), run from a pool of ``parallelism`` driver threads;
* the task body is :func:`orchestrator.cluster.worker.run_trial_partition`, which
  drains its partition so PySpark reuses the Python worker (forked from the
  preloading daemon when :func:`orchestrator.cluster.worker_spark_conf` is set);
* ``shared`` (e.g. the training rows) travels once per run as a Spark broadcast;
  each task's closure carries only its own small arguments.

A Spark Connect session has no SparkContext: :func:`run_on_cluster` hands such a
session to :mod:`orchestrator.cluster.connect` when that runner exists, and
otherwise raises :class:`ClusterUnavailable` so the caller can run on the driver.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.cluster.worker import run_trial_partition
from orchestrator.errors import ClusterTaskError

logger = logging.getLogger(__name__)

__all__ = ["SharedTask", "cluster_unusable_reason", "run_on_cluster", "task_slots"]


class SharedTask:
    """``task_fn(shared, args)`` with ``shared`` read from a broadcast (picklable).

    Parameters
    ----------
    task_fn : callable
        A module-level function ``(shared, args) -> result``.
    broadcast : pyspark.Broadcast or None
        The shared data; ``None`` to call with ``value`` instead (on the driver).
    value : object, optional
        The shared data itself, when there is no broadcast.
    """

    def __init__(self, task_fn: Callable[[Any, Any], Any], broadcast=None, value: Any = None):
        self.task_fn = task_fn
        self.broadcast = broadcast
        self.value = value

    def __call__(self, args: Any) -> Any:
        shared = self.broadcast.value if self.broadcast is not None else self.value
        return self.task_fn(shared, args)


def is_connect_session(session) -> bool:
    """True for a Spark Connect session (it has no SparkContext)."""
    return type(session).__module__.startswith("pyspark.sql.connect")


def cluster_unusable_reason(session) -> str | None:
    """Why tasks cannot run on this session's executors, or None when they can.

    Examples
    --------
    >>> cluster_unusable_reason(None)
    'no SparkSession'
    """
    if session is None:
        return "no SparkSession"
    if is_connect_session(session):
        from orchestrator.cluster.connect import session_master

        master = session_master(session)
        if master is None or not master.startswith("local"):
            # The Connect runner stages the shared rows where the executors read them: only a
            # local master has a default place (tuning_spec.staging_dir names one for tuning).
            return (f"a Spark Connect session on a cluster (master {master or 'not shown'}) "
                    f"needs a staging directory for the tasks' shared rows, which only "
                    f"tuning_spec.staging_dir sets")
        return None
    try:
        session.sparkContext  # noqa: B018 - raises when the context is stopped or unusable
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable
        return f"the SparkContext is not usable ({type(exc).__name__}: {exc})"
    return None


def task_slots(session) -> int | None:
    """Task slots of the session: defaultParallelism, or the conf under Spark Connect."""
    try:
        return int(session.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Connect raises on sparkContext; then read the conf
        pass
    try:
        value = session.conf.get("spark.default.parallelism", None)
    except Exception:  # noqa: BLE001
        return None
    return int(value) if value else None


def run_on_cluster(session, task_fn: Callable[[Any, Any], Any], task_args_list: Sequence[Any],
                   shared: Any, parallelism: int, *, description: str = "orchestrator task",
                   ) -> list[Any]:
    """Run ``task_fn(shared, args)`` for every ``args`` as Spark tasks; results in order.

    Parameters
    ----------
    session : SparkSession
        Classic (tasks as one-task jobs) or, when :mod:`orchestrator.cluster.connect`
        exists, Spark Connect.
    task_fn : callable
        A module-level (picklable) function ``(shared, args) -> result``.
    task_args_list : sequence
        One picklable argument per task.
    shared : object
        Data every task reads, sent once per run.
    parallelism : int
        Tasks at once.
    description : str
        Shown in the Spark UI.

    Returns
    -------
    list
        ``task_fn``'s results, in the order of ``task_args_list``.

    Raises
    ------
    ClusterTaskError
        When a task raised or its Spark job failed; the other tasks are cancelled.
    """
    if is_connect_session(session):
        from orchestrator.cluster import connect

        return connect.run_on_cluster(session, task_fn, task_args_list, shared, parallelism)
    context = session.sparkContext
    broadcast = context.broadcast(shared)
    group = f"orchestrator_tasks_{uuid.uuid4().hex[:12]}"
    failed = threading.Event()

    def run_one(index: int) -> Any:
        if failed.is_set():
            return None
        task = functools.partial(run_trial_partition, SharedTask(task_fn, broadcast),
                                 task_args_list[index])
        context.setJobGroup(group, f"{description} {index + 1}/{len(task_args_list)}",
                            interruptOnCancel=True)
        try:
            outcome = context.parallelize([0], 1).mapPartitions(task).collect()[0]
        except Exception as exc:  # noqa: BLE001 - Spark failed or cancelled the job
            failed.set()
            raise ClusterTaskError(f"{description} {index + 1}: its Spark job failed: "
                                   f"{_first_line(exc)}") from exc
        if "raised" in outcome:
            failed.set()
            raise ClusterTaskError(f"{description} {index + 1} failed: {outcome['error']}",
                                   remote_traceback=outcome.get("traceback"))
        progress.one_done()
        return outcome["value"]

    workers = max(1, min(int(parallelism), len(task_args_list)))
    progress = _Progress(description, len(task_args_list))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cluster-task")
    try:
        futures = [pool.submit(run_one, index) for index in range(len(task_args_list))]
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception:  # a task failed: stop the others (interrupts are handled below)
                failed.set()
                context.cancelJobGroup(group)
                raise
        return results
    except (KeyboardInterrupt, SystemExit):
        failed.set()
        context.cancelJobGroup(group)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        broadcast.destroy()


def run_on_driver(task_fn: Callable[[Any, Any], Any], task_args_list: Sequence[Any],
                  shared: Any) -> list[Any]:
    """The same tasks one after another in this process (identical results)."""
    task = SharedTask(task_fn, value=shared)
    progress = _Progress("task", len(task_args_list))
    results = []
    for args in task_args_list:
        results.append(task(args))
        progress.one_done()
    return results


class _Progress:
    """One "Progress: k/n <what> done" line per finished task (the console thins them out)."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done = what, total, 0
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def one_done(self) -> None:
        with self._lock:
            self.done += 1
            done = self.done
        logger.info("Progress: %d/%d %s done, %.1f s elapsed", done, self.total, self.what,
                    time.monotonic() - self._started)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    head = next((line for line in lines if "Error" in line or "Exception" in line),
                lines[0] if lines else "")
    return f"{type(exc).__name__}: {head[:500]}"
