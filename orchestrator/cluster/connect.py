"""Run Python tasks on Spark's executors with DataFrame APIs only (works on Spark Connect).

:class:`ConnectTaskRunner` runs picklable tasks ``fn(shared, arg)`` on executors,
at most ``parallelism`` at a time, so a caller that decides its next task from
the results so far (hyperopt's TPE, optuna's ask/tell, cross-validation folds)
can submit tasks one by one as results arrive. It uses nothing a Spark Connect
session lacks: no SparkContext, no RDDs, no broadcast; jobs carry a tag
(``spark.addTag``) so :meth:`ConnectTaskRunner.cancel` stops the running ones
with ``spark.interruptTag``. It works the same on a classic session.

How tasks reach the executors
-----------------------------
* **Task slots** (when the driver can write the staging directory: local
  masters, a Unity Catalog Volume on a Databricks driver): ``parallelism``
  long-lived one-task jobs each take their tasks as files from a directory
  beside the staged data (:mod:`orchestrator.cluster.slots`). A task then costs
  a file write and a poll, not a Spark job (a Connect round trip plus
  scheduling, 0.1-0.3 s on a small machine).
* **One job per task** (a thin client whose file system the cluster does not
  share, or slots the executors cannot see): each task is a one-row
  ``mapInPandas`` job started from a driver thread.

How the shared data travels
---------------------------
``shared`` (the training rows) is pickled once per run, cut into chunks of a few
MiB and written by Spark as a small Parquet dataset (one binary column) under a
*staging directory*; each executor's Python worker reads it once, keyed by the
run's id, and keeps it for the tasks that follow (a worker keeps the latest
:data:`WORKER_CACHE_RUNS` runs). Each task then carries only its own small
payload. Pickling keeps every dtype exactly as on the driver (a trial scores
the same rows the driver would), and the bytes reach the cluster through Spark
itself, so a thin client (Databricks Connect, ``pyspark-client``) with no file
system in common with the cluster works. Connect artifacts (``addArtifacts``)
were the other choice; they cannot be removed before the session ends and need
a file on the client, so a long-lived notebook session would keep every run's
copy.

The staging directory must be readable as a local path by the executors:

* local masters (``local[*]``, a loopback Connect server): default a new
  temporary directory on this machine;
* Databricks: a Unity Catalog Volume, e.g. ``/Volumes/main/default/tmp``
  (executors see it through the ``/Volumes`` FUSE mount; ``dbfs:/`` paths are
  read through ``/dbfs``); give it as ``staging_dir`` (``tuning_spec.staging_dir``).

The run's data is deleted on :meth:`ConnectTaskRunner.close` (a context manager
does it), by a last one-task job (so it works where the driver cannot see the
directory) and, where the driver can, by the driver too.

Workers must import this package: the task function is pickled by reference.
A local Connect server started in-process (``builder.remote("local[2]")``)
inherits the driver's ``PYTHONPATH`` and ``PYSPARK_PYTHON``; on a cluster,
install the orchestrator wheel (a cluster library, or a serverless
environment dependency).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from orchestrator.cluster.executor import (
    TASK_CANCELLED,
    TASK_FAILED,
    TASK_OK,
    delete_staged_batches,
    run_task_batches,
)
from orchestrator.cluster.slots import SlotPool, interrupt_tag
from orchestrator.errors import ClusterTaskError

logger = logging.getLogger(__name__)

__all__ = [
    "DISPATCH_MODES",
    "TASK_CANCELLED",
    "TASK_FAILED",
    "TASK_OK",
    "ConnectTaskRunner",
    "TaskResult",
    "choose_dispatch",
    "is_connect_session",
    "local_path_view",
    "run_on_cluster",
]

#: Bytes per row of the staged data (Arrow batches and gRPC messages stay small).
CHUNK_BYTES = 4 * 1024 * 1024
#: Chunks per Spark write of the staged data (each write is one client request).
CHUNKS_PER_WRITE = 4

DISPATCH_MODES = ("auto", "slots", "jobs")

_TASK_COLUMNS = (("task_id", "long"), ("payload", "binary"))
_RESULT_COLUMNS = (("task_id", "long"), ("status", "string"), ("result", "binary"),
                   ("error", "string"), ("traceback", "string"), ("started_ms", "long"),
                   ("ended_ms", "long"), ("duration_s", "double"), ("load_s", "double"),
                   ("worker_pid", "long"))


def _struct(columns) -> Any:
    """A StructType: a DDL string would cost Spark Connect a round trip to parse, per job."""
    from pyspark.sql import types

    kinds = {"long": types.LongType(), "binary": types.BinaryType(),
             "string": types.StringType(), "double": types.DoubleType()}
    return types.StructType([types.StructField(name, kinds[kind]) for name, kind in columns])


@dataclass(frozen=True)
class TaskResult:
    """What one task did.

    Attributes
    ----------
    task_id : int
    status : {"ok", "fail", "cancelled"}
        ``fail`` when ``fn`` raised or the task's Spark job failed; ``cancelled``
        when :meth:`ConnectTaskRunner.cancel` stopped it.
    value : object
        What ``fn`` returned (``None`` unless ok).
    error : str or None
        ``"Type: message"`` of the failure.
    traceback : str or None
        The traceback formatted where the task ran.
    started_ms, ended_ms : int or None
        Epoch milliseconds on the executor around ``fn`` (None if it never ran).
    duration_s : float or None
        ``fn``'s own time on the executor.
    wall_s : float
        On the driver, from the task's start (its job started, or a slot was
        given it) to its result.
    load_s : float or None
        Time this task spent reading the shared data (0 when the worker had it).
    worker_pid : int or None
        The executor Python worker's process id.
    """

    task_id: int
    status: str
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    started_ms: int | None = None
    ended_ms: int | None = None
    duration_s: float | None = None
    wall_s: float = 0.0
    load_s: float | None = None
    worker_pid: int | None = None

    def unwrap(self) -> Any:
        """The task's value; raise :class:`ClusterTaskError` if it failed or was cancelled."""
        if self.status == TASK_OK:
            return self.value
        raise ClusterTaskError(f"task {self.task_id} {self.status}: {self.error}",
                               remote_traceback=self.traceback)


def is_connect_session(session) -> bool:
    """True for a Spark Connect session (decided from its class, not process state).

    Examples
    --------
    >>> is_connect_session(object())
    False
    """
    return type(session).__module__.startswith("pyspark.sql.connect")


def local_path_view(path: str) -> str:
    """The path as an executor's Python sees it in its local file system.

    Examples
    --------
    >>> local_path_view("file:///tmp/x"), local_path_view("dbfs:/Volumes/c/s/v/x")
    ('/tmp/x', '/Volumes/c/s/v/x')
    >>> local_path_view("dbfs:/tmp/x")
    '/dbfs/tmp/x'
    """
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("file:"):
        return path[len("file:"):]
    if path.startswith("dbfs:/Volumes/"):
        return path[len("dbfs:"):]
    if path.startswith("dbfs:/"):
        return "/dbfs/" + path[len("dbfs:/"):]
    return path


def session_master(session) -> str | None:
    """The session's master URL, or None when the session will not say (serverless)."""
    try:
        return session.conf.get("spark.master", None)
    except Exception:  # noqa: BLE001 - a serverless session refuses to show its master
        return None


class ConnectTaskRunner:
    """Run picklable tasks ``fn(shared, arg)`` on executors, shared data staged once.

    Parameters
    ----------
    session : SparkSession
        Classic or Spark Connect.
    shared : object
        Picklable data every task receives as its first argument (the training rows).
    parallelism : int
        Tasks running at once (task slots, or one-task jobs).
    staging_dir : str, optional
        Where the shared data is written for the executors (see the module
        docstring). Default: a new temporary directory, on local masters only.
    run_id : str, optional
        Names this run's staged data and job tag; default a random id.
    dispatch : {"auto", "slots", "jobs"}
        How tasks reach the executors. ``slots``: ``parallelism`` long-lived
        one-task jobs take tasks as files from a directory beside the staged
        data (:mod:`orchestrator.cluster.slots`; a task then costs no Spark job);
        the driver must be able to write the staging directory. ``jobs``: a
        one-row ``mapInPandas`` job per task (works from a thin client with no
        file system in common with the cluster). ``auto`` (default): slots when
        the driver sees the staging directory, else jobs; also jobs when the
        executors turn out not to see the slots' directory.

    Raises
    ------
    ClusterTaskError
        When no staging directory is given and the master is not local, or the
        shared data cannot be staged.

    Examples
    --------
    >>> with ConnectTaskRunner(spark, (X, y), parallelism=2) as runner:  # doctest: +SKIP
    ...     futures = [runner.submit(fit_fold, fold) for fold in range(5)]
    ...     scores = [f.result().unwrap() for f in futures]
    """

    def __init__(self, session, shared: Any, *, parallelism: int,
                 staging_dir: str | None = None, run_id: str | None = None,
                 dispatch: str = "auto"):
        if dispatch not in DISPATCH_MODES:
            raise ClusterTaskError(f"dispatch must be one of {', '.join(DISPATCH_MODES)}, "
                                   f"got {dispatch!r}")
        self.session = session
        self.shared = shared
        self.parallelism = max(1, int(parallelism))
        self.staging_dir = staging_dir
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self.tag = f"orchestrator-tasks-{self.run_id}"
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._cancelled = False
        self._data_path: str | None = None
        self._owned_dir: str | None = None
        self._slots: SlotPool | None = None
        self.dispatch = dispatch
        self.stage_s: float | None = None

    # ---- lifecycle

    def __enter__(self) -> ConnectTaskRunner:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Stage the shared data and start the driver threads."""
        started = time.perf_counter()
        self._data_path = self._stage(self._resolve_staging_dir())
        self.stage_s = time.perf_counter() - started
        logger.debug("Staged the shared data of run %s at %s in %.2f s", self.run_id,
                     self._data_path, self.stage_s)
        self._task_schema = _struct(_TASK_COLUMNS)
        self._result_schema = _struct(_RESULT_COLUMNS)
        self._pool = ThreadPoolExecutor(max_workers=self.parallelism,
                                        thread_name_prefix="cluster-task")
        directory = self._data_path + "_slots"
        if choose_dispatch(self.dispatch, os.path.isdir(local_path_view(self._data_path))) \
                == "slots":
            self._slots = SlotPool(
                self.session, slots=self.parallelism, directory=local_path_view(directory),
                executor_directory=self._executor_path(directory),
                data_path=self._executor_path(self._data_path), run_id=self.run_id,
                tag=self.tag, make_result=_task_result)
            try:
                self._slots.start(handoff=self._submit_job)
            except BaseException:
                self.close()  # staged data and threads must not outlive a failed start
                raise
        logger.debug("Tasks of run %s go to executors as %s", self.run_id,
                     "files to long-lived task slots" if self._slots else "one job each")

    def close(self) -> None:
        """Cancel what still runs, wait for the driver threads, delete the staged data."""
        if self._slots is not None:
            self._slots.close()
        if self._pool is not None:
            if self._cancelled:
                self._interrupt()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._data_path is not None:
            self._delete_staged(self._data_path)
            self._data_path = None

    def cancel(self) -> None:
        """Stop every running task of this run (their results say cancelled); start no more."""
        with self._lock:
            self._cancelled = True
        if self._slots is not None:
            self._slots.cancel()  # interrupts the slots' jobs and any sent as jobs (one tag)
        else:
            self._interrupt()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    # ---- tasks

    def submit(self, fn: Callable[[Any, Any], Any], arg: Any = None) -> Future:
        """Run ``fn(shared, arg)`` on an executor; the future gives a :class:`TaskResult`.

        The future never raises for a failure of ``fn`` or of its Spark job: the
        result's ``status`` says what happened.
        """
        if self._pool is None:
            raise ClusterTaskError("ConnectTaskRunner.submit before start() (use it as a "
                                   "context manager)")
        from pyspark import cloudpickle

        with self._lock:
            task_id = self._next_id
            self._next_id += 1
        payload = cloudpickle.dumps((fn, arg))
        if self._slots is not None:
            return self._slots.submit(task_id, payload)
        return self._submit_job(task_id, payload)

    @property
    def slots_in_use(self) -> bool:
        """True while tasks go to long-lived task slots rather than one job each."""
        return self._slots is not None and not self._slots.unreachable

    def _submit_job(self, task_id: int, payload: bytes) -> Future:
        return self._pool.submit(self._run_one, task_id, payload)

    def _executor_path(self, path: str) -> str:
        """A path under the staging directory as the executors' Python sees it."""
        return local_path_view(path)

    def map(self, fn: Callable[[Any, Any], Any], args: Iterable[Any], *,
            on_result: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
        """Run ``fn(shared, arg)`` for every arg; results in the order of ``args``.

        ``on_result`` is called on the caller's thread as each task finishes.
        """
        from concurrent.futures import as_completed

        futures = [self.submit(fn, arg) for arg in args]
        if on_result is not None:
            for future in as_completed(futures):
                on_result(future.result())
        return [future.result() for future in futures]

    def _run_one(self, task_id: int, payload: bytes) -> TaskResult:
        import pandas as pd

        started = time.perf_counter()
        if self._cancelled:
            return TaskResult(task_id, TASK_CANCELLED, error="cancelled before it started")
        task = functools.partial(run_task_batches, self._executor_path(self._data_path),
                                 self.run_id)
        self.session.addTag(self.tag)
        try:
            frame = self.session.createDataFrame(
                pd.DataFrame({"task_id": [task_id], "payload": [payload]}), self._task_schema)
            rows = frame.mapInPandas(task, self._result_schema).collect()
        except Exception as exc:  # noqa: BLE001 - a failed or interrupted job is a task result
            status = TASK_CANCELLED if self._cancelled else TASK_FAILED
            return TaskResult(task_id, status, error=_short_error(exc),
                              traceback=traceback.format_exc(),
                              wall_s=time.perf_counter() - started)
        finally:
            self.session.removeTag(self.tag)
        return _task_result(rows[0].asDict(), time.perf_counter() - started)

    def _interrupt(self) -> None:
        interrupt_tag(self.session, self.tag)

    # ---- staged data

    def _resolve_staging_dir(self) -> str:
        if self.staging_dir:
            return self.staging_dir.rstrip("/")
        master = session_master(self.session)
        if master is None or not master.startswith("local"):
            raise ClusterTaskError(
                f"running tasks on the cluster (master {master or 'unknown'}) needs a staging "
                f"directory the executors can read: set tuning_spec.staging_dir (or pass "
                f"staging_dir=...) to a Unity Catalog Volume path such as "
                f"/Volumes/main/default/tmp")
        self._owned_dir = tempfile.mkdtemp(prefix="orchestrator_tasks_")
        return "file://" + self._owned_dir

    def _stage(self, directory: str) -> str:
        import pandas as pd
        from pyspark import cloudpickle

        blob = cloudpickle.dumps(self.shared, protocol=pickle.HIGHEST_PROTOCOL)
        chunks = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        path = f"{directory}/run_{self.run_id}"
        schema = _struct((("chunk", "long"), ("data", "binary")))
        try:
            # A few chunks per request: one 88 MB local relation resets Connect's gRPC stream.
            for first in range(0, len(chunks), CHUNKS_PER_WRITE):
                part = chunks[first:first + CHUNKS_PER_WRITE]
                frame = pd.DataFrame({"chunk": range(first, first + len(part)), "data": part})
                (self.session.createDataFrame(frame, schema).coalesce(1).write
                 .mode("overwrite" if first == 0 else "append").parquet(path))
        except Exception as exc:
            raise ClusterTaskError(
                f"could not stage the shared data ({len(blob) / 1e6:.1f} MB) at {path}: "
                f"{_short_error(exc)}") from exc
        return path

    def _delete_staged(self, path: str) -> None:
        import pandas as pd

        view = local_path_view(path)
        try:
            schema = _struct(_TASK_COLUMNS[:1])
            frame = self.session.createDataFrame(pd.DataFrame({"task_id": [0]}), schema)
            frame.mapInPandas(functools.partial(delete_staged_batches, view), schema).collect()
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the run's own outcome
            logger.warning("Could not delete the staged data at %s: %s", path, exc)
        if os.path.isdir(view):
            shutil.rmtree(view, ignore_errors=True)
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None


def run_on_cluster(session, task_fn: Callable[[Any, Any], Any], task_args_list: Iterable[Any],
                   shared: Any, parallelism: int, *, staging_dir: str | None = None) -> list[Any]:
    """Run ``task_fn(shared, args)`` for every ``args`` on executors; values in order.

    Parameters
    ----------
    session : SparkSession
    task_fn : callable
        Picklable ``(shared, args) -> value``.
    task_args_list : iterable
    shared : object
        Staged once for all tasks.
    parallelism : int
    staging_dir : str, optional
        See :class:`ConnectTaskRunner`.

    Returns
    -------
    list

    Raises
    ------
    ClusterTaskError
        The first task that failed (the others are cancelled), with its remote traceback.

    Examples
    --------
    >>> run_on_cluster(spark, lambda xy, k: len(xy[0]) * k, [1, 2], (X, y), 2)  # doctest: +SKIP
    [800, 1600]
    """
    args = list(task_args_list)
    if not args:
        return []
    with ConnectTaskRunner(session, shared, parallelism=min(parallelism, len(args)),
                           staging_dir=staging_dir) as runner:
        try:
            futures = [runner.submit(task_fn, arg) for arg in args]
            values = []
            for future in futures:
                result = future.result()
                if result.status != TASK_OK:
                    runner.cancel()
                values.append(result.unwrap())
            return values
        except (KeyboardInterrupt, SystemExit):
            runner.cancel()
            raise


def choose_dispatch(dispatch: str, driver_sees_staging_dir: bool) -> str:
    """``slots`` or ``jobs`` for a runner's ``dispatch`` setting.

    Examples
    --------
    >>> choose_dispatch("auto", True), choose_dispatch("auto", False), choose_dispatch("jobs", True)
    ('slots', 'jobs', 'jobs')
    """
    if dispatch == "auto":
        return "slots" if driver_sees_staging_dir else "jobs"
    return dispatch


def _task_result(row: dict, wall_s: float) -> TaskResult:
    """A :class:`TaskResult` from an executor's result row (or a driver-made one)."""
    status = row["status"]
    value = pickle.loads(row["result"]) if status == TASK_OK else None
    return TaskResult(row["task_id"], status, value=value, error=row.get("error"),
                      traceback=row.get("traceback"), started_ms=row.get("started_ms"),
                      ended_ms=row.get("ended_ms"), duration_s=row.get("duration_s"),
                      wall_s=wall_s, load_s=row.get("load_s"), worker_pid=row.get("worker_pid"))


def _short_error(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    head = next((line for line in lines if "Error" in line or "Exception" in line),
                lines[0] if lines else "")
    return f"{type(exc).__name__}: {head[:500]}"
