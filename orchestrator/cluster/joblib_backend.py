"""scikit-learn's own ``n_jobs`` parallelism on Spark's executors (a joblib backend).

scikit-learn parallelises internal folds with joblib (``CalibratedClassifierCV``
fits one classifier/calibrator pair per fold through ``Parallel(n_jobs=...)``).
Inside :func:`cluster_parallel`, those ``Parallel`` calls run each batch of
calls as a task on the session's executors, through the same machinery as the
tuning trials and validation folds:

* classic sessions: one-task Spark jobs in one job group, the task body
  :func:`orchestrator.cluster.worker.run_trial_partition` (workers reused);
* Spark Connect: :class:`orchestrator.cluster.connect.ConnectTaskRunner`.

Large arguments (the training rows, which every fold's call carries) travel once
per ``Parallel`` call, not once per task: each batch is pickled with every array
or frame above :data:`SHARED_MIN_BYTES` replaced by a reference, and those
objects are sent once (a broadcast on classic sessions, the runner's staged
data on Connect). Nested ``Parallel`` calls inside a task run sequentially
there (joblib's own rule for nested backends).

Use it only around code whose ``Parallel`` calls are worth a Spark task each:
estimators that parallelise over trees with ``n_jobs=None`` would send every
tree as a task.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import pickle
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from orchestrator.errors import ClusterTaskError

logger = logging.getLogger(__name__)

__all__ = ["SHARED_MIN_BYTES", "ClusterParallelBackend", "cluster_parallel"]

#: Arrays and frames at least this big travel once per Parallel call, by reference.
SHARED_MIN_BYTES = 1 << 20


def _nbytes(obj: Any) -> int:
    """Bytes of a numpy array or pandas object (0 for anything else)."""
    import numpy as np
    import pandas as pd

    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return int(obj.memory_usage(index=True, deep=False).sum())
    return 0


def dumps_with_shared(obj: Any, shared: dict[int, Any], *, extract: bool = True,
                      ) -> tuple[bytes, dict[int, Any]]:
    """Pickle ``obj`` with big arrays/frames replaced by references.

    ``shared`` maps ``id(object)`` to the objects already known to travel
    separately. With ``extract``, big objects met for the first time become
    references too and are returned (the caller ships them); without it they
    are pickled inline.
    """
    from pyspark import cloudpickle

    found: dict[int, Any] = {}

    class _Pickler(cloudpickle.Pickler):
        def persistent_id(self, candidate):  # noqa: D401 - pickle protocol
            key = id(candidate)
            if key in shared:
                return ("orchestrator-shared", key)
            if extract and (key in found or _nbytes(candidate) >= SHARED_MIN_BYTES):
                found[key] = candidate
                return ("orchestrator-shared", key)
            return None

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue(), found


def loads_with_shared(payload: bytes, shared: dict[int, Any]) -> Any:
    """Unpickle what :func:`dumps_with_shared` wrote, resolving references from ``shared``."""

    class _Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):  # noqa: D401 - pickle protocol
            kind, key = pid
            if kind != "orchestrator-shared" or key not in shared:
                raise pickle.UnpicklingError(f"unknown shared object {pid!r}")
            return shared[key]

    return _Unpickler(io.BytesIO(payload)).load()


def run_pickled_batch(shared: dict[int, Any], payload: bytes) -> Any:
    """Task body: unpickle one joblib batch against the shared objects and call it."""
    return loads_with_shared(payload, shared)()


class ClusterParallelBackend:
    """A joblib backend whose batches run as tasks on the session's executors.

    Built lazily as a subclass of joblib's ``ParallelBackendBase`` by
    :func:`cluster_parallel` (joblib is imported only when it is used).
    """


def _backend_class():
    from joblib.parallel import ParallelBackendBase, SequentialBackend

    class _ClusterParallelBackend(ParallelBackendBase, ClusterParallelBackend):
        supports_retrieve_callback = True
        supports_timeout = False
        supports_return_generator = False

        def __init__(self, session, parallelism: int, description: str, **kwargs):
            super().__init__(**kwargs)
            self.session = session
            self.parallelism = max(1, int(parallelism))
            self.description = description
            self._lock = threading.Lock()
            self._pool: ThreadPoolExecutor | None = None
            self._shared: dict[int, Any] = {}
            self._runner = None  # Connect: a ConnectTaskRunner, started at the first batch
            self._broadcasts: list = []  # classic: one per set of newly met big objects
            self._group = f"orchestrator_parallel_{uuid.uuid4().hex[:12]}"
            self._submitted = 0
            self._aborted = False  # set by abort_everything: queued batches start no job

        def effective_n_jobs(self, n_jobs):
            if n_jobs == 0:
                raise ValueError("n_jobs == 0 in Parallel has no meaning")
            return self.parallelism if n_jobs is None or n_jobs < 0 else \
                max(1, min(int(n_jobs), self.parallelism))

        def configure(self, n_jobs=1, parallel=None, **backend_kwargs):
            self.parallel = parallel
            self._aborted = False
            n = self.effective_n_jobs(n_jobs)
            self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="cluster-joblib")
            return n

        def get_nested_backend(self):
            return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

        def submit(self, func, callback=None):
            try:
                with self._lock:
                    self._submitted += 1
                    index = self._submitted
                    task = self._prepare(func)
            except Exception as exc:  # noqa: BLE001 - joblib may call this from a callback
                # thread, where a raise is only logged and Parallel would wait forever.
                future = Future()
                future.set_exception(exc)
                if callback is not None:
                    future.add_done_callback(callback)
                return future
            future = self._pool.submit(task, index)
            if callback is not None:
                future.add_done_callback(callback)
            return future

        def retrieve_result_callback(self, future: Future):
            return future.result()

        def _prepare(self, func):
            from orchestrator.cluster.tasks import is_connect_session

            if is_connect_session(self.session):
                # The staged data is fixed once a Connect run starts: later big objects
                # travel inline with their task.
                payload, new = dumps_with_shared(func, self._shared,
                                                 extract=self._runner is None)
                if self._runner is None:
                    from orchestrator.cluster.connect import ConnectTaskRunner

                    self._shared.update(new)
                    self._runner = ConnectTaskRunner(self.session, dict(self._shared),
                                                     parallelism=self.parallelism)
                    self._runner.start()
                return functools.partial(self._run_connect, payload)
            payload, new = dumps_with_shared(func, self._shared)
            if new:
                self._shared.update(new)
                self._broadcasts.append(self.session.sparkContext.broadcast(new))
            return functools.partial(self._run_classic, list(self._broadcasts), payload)

        def _run_connect(self, payload: bytes, index: int):
            if self._aborted:
                raise ClusterTaskError(f"{self.description} {index}: cancelled before it started")
            result = self._runner.submit(run_pickled_batch, payload).result()
            if result.status != "ok":
                raise ClusterTaskError(f"{self.description} {index} failed: {result.error}",
                                       remote_traceback=result.traceback)
            return result.value

        def _run_classic(self, broadcasts: list, payload: bytes, index: int):
            from orchestrator.cluster.tasks import SharedTask, _first_line
            from orchestrator.cluster.worker import run_trial_partition

            if self._aborted:
                raise ClusterTaskError(f"{self.description} {index}: cancelled before it started")
            context = self.session.sparkContext
            task = functools.partial(run_trial_partition,
                                     SharedTask(_run_with_broadcasts, value=broadcasts),
                                     payload)
            context.setJobGroup(self._group, f"{self.description} {index}",
                                interruptOnCancel=True)
            try:
                outcome = context.parallelize([0], 1).mapPartitions(task).collect()[0]
            except Exception as exc:  # noqa: BLE001 - Spark failed or cancelled the job
                raise ClusterTaskError(f"{self.description} {index}: its Spark job failed: "
                                       f"{_first_line(exc)}") from exc
            if "raised" in outcome:
                raise ClusterTaskError(f"{self.description} {index} failed: "
                                       f"{outcome['error']}",
                                       remote_traceback=outcome.get("traceback"))
            return outcome["value"]

        def abort_everything(self, ensure_ready=True):
            self._aborted = True
            self._cancel()
            self.terminate()
            if self._runner is not None:
                # A cancelled Connect runner starts no more tasks: the next batches need a new
                # one, which stages the shared objects again.
                self._close_runner()
                self._shared.clear()
            if ensure_ready:
                self.configure(n_jobs=self.parallelism, parallel=self.parallel)

        def _cancel(self):
            from orchestrator.cluster.tasks import is_connect_session

            if self._runner is not None:
                self._runner.cancel()
            elif not is_connect_session(self.session):
                self.session.sparkContext.cancelJobGroup(self._group)

        def terminate(self):
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

        def _close_runner(self):
            runner, self._runner = self._runner, None
            try:
                runner.close()
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the run's outcome
                logger.warning("Could not release the staged data of %s: %s",
                               self.description, exc)

        def close(self):
            """Release what the tasks shared (broadcasts, staged data); never raises."""
            self.terminate()
            if self._runner is not None:
                self._close_runner()
            for broadcast in self._broadcasts:
                try:
                    broadcast.destroy()
                except Exception as exc:  # noqa: BLE001 - the context may be the thing that died
                    logger.warning("Could not destroy a broadcast of %s: %s",
                                   self.description, exc)
            self._broadcasts.clear()
            self._shared.clear()

    return _ClusterParallelBackend


def _run_with_broadcasts(broadcasts: list, payload: bytes) -> Any:
    """Classic task body: the shared objects come from the run's broadcasts."""
    shared: dict[int, Any] = {}
    for broadcast in broadcasts:
        shared.update(broadcast.value)
    return run_pickled_batch(shared, payload)


@contextlib.contextmanager
def cluster_parallel(session, parallelism: int, *, description: str = "parallel task"):
    """Within the block, joblib ``Parallel`` calls run their batches on the executors.

    Parameters
    ----------
    session : SparkSession
        Classic or Spark Connect (its executors must import this package).
    parallelism : int
        Tasks at once (also the ``n_jobs`` an unset ``n_jobs`` becomes).
    description : str
        Names the tasks in the Spark UI and in errors.

    Examples
    --------
    >>> with cluster_parallel(spark, 2, description="calibration fold"):  # doctest: +SKIP
    ...     CalibratedClassifierCV(model, cv=5).fit(X, y)
    """
    from joblib import parallel_config

    backend = _backend_class()(session, parallelism, description)
    try:
        with parallel_config(backend=backend, n_jobs=backend.parallelism):
            yield backend
    finally:
        backend.close()
