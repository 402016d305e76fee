"""Long-lived task slots: the driver side of :func:`orchestrator.cluster.executor.run_slot_batches`.

A Spark job costs Spark Connect a client round trip and the server a scheduling
pass (0.1-0.3 s each on a small machine), which is most of a short trial's
overhead when every trial is its own job. Where the driver can write a
directory the executors read (the staging directory of a local master, or a
Unity Catalog Volume on a Databricks driver), :class:`SlotPool` instead starts
one long-lived one-task job per slot and hands each slot its tasks as files:

* the driver writes ``slot_<i>/in/<task_id>.task``, one task per idle slot;
* the slot renames it to ``.running``, runs it, writes ``out/<task_id>.result``
  and deletes the task file; the driver polls for the result;
* ``stop`` ends every slot; a slot also ends when the driver's ``heartbeat``
  file has not been touched for :data:`~orchestrator.cluster.executor.SLOT_ORPHAN_S`.

Each slot is its own Spark job, so a Python worker that dies fails only the
task it was running (reported with Spark's reason); the slot's job is then
started again for the tasks that follow. Cancelling interrupts the slots' jobs
by their tag, as it would one-task jobs. Slots that cannot see the directory
(the executors' file system is not the driver's) say so and end at once; the
caller then sends tasks as one-task jobs (:meth:`SlotPool.unreachable`).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from orchestrator.cluster.executor import (
    HEARTBEAT_FILE,
    READY_FILE,
    RESULT_SUFFIX,
    RUNNING_SUFFIX,
    STOP_FILE,
    STOPPED,
    TASK_CANCELLED,
    TASK_FAILED,
    TASK_SUFFIX,
    UNREACHABLE,
    run_slot_batches,
    write_atomically,
)

logger = logging.getLogger(__name__)

__all__ = ["SlotPool", "interrupt_tag"]

#: The driver's polling interval for results grows from the first to the second.
RESULT_POLL_S = (0.002, 0.02)
#: Times one slot's job is started again after it failed (a dead worker), per pool.
MAX_SLOT_RESTARTS = 3


@dataclass
class _Task:
    task_id: int
    payload: bytes
    future: Future
    # When a slot was given it (wall times count from there, as a job's from its start).
    handed: float = field(default_factory=time.perf_counter)


@dataclass
class _Slot:
    index: int
    task: _Task | None = None
    running: bool = False   # its Spark job was started (it may still wait for a core)
    ready: bool = False     # its job runs: it wrote its ready file
    usable: bool = True     # a job may run (again) for it
    restarts: int = 0


class SlotPool:
    """Run tasks in ``slots`` long-lived one-task Spark jobs that take them from files.

    Parameters
    ----------
    session : SparkSession
        Classic or Spark Connect.
    slots : int
        Slots (Spark jobs, each holding one task slot of the cluster while the pool lives).
    directory : str
        The slots' directory as the driver sees it (created here).
    executor_directory : str
        The same directory as the executors see it.
    data_path : str
        The staged shared data, as the executors see it.
    run_id, tag : str
        The run's id (the workers' cache key) and the job tag to cancel by.
    make_result : callable
        ``(row, wall_s) -> result`` for a result row of
        :func:`~orchestrator.cluster.executor.execute_payload`; also called with
        ``{"task_id", "status", "error"}`` rows for tasks that failed or were
        cancelled without a result.
    """

    def __init__(self, session, *, slots: int, directory: str, executor_directory: str,
                 data_path: str, run_id: str, tag: str,
                 make_result: Callable[[dict, float], Any]):
        self.session = session
        self.directory = directory
        self.executor_directory = executor_directory
        self.data_path = data_path
        self.run_id = run_id
        self.tag = tag
        self.make_result = make_result
        self._slots = [_Slot(i) for i in range(max(1, int(slots)))]
        self._queue: deque[_Task] = deque()
        self._ended: deque[tuple[_Slot, str, BaseException | None]] = deque()
        self._condition = threading.Condition()
        self._cancelled = False
        self._closing = False
        self._unreachable = False
        self._handoff: Callable[[int, bytes], Future] | None = None
        self._dispatcher: threading.Thread | None = None
        self._jobs: list[threading.Thread] = []

    # ---- lifecycle

    def start(self, handoff: Callable[[int, bytes], Future]) -> None:
        """Create the slot directories and start the slots' jobs and the dispatcher.

        ``handoff(task_id, payload)`` runs a task another way when no slot can
        see the directory; its future's result becomes the task's.
        """
        self._handoff = handoff
        for slot in self._slots:
            for box in ("in", "out"):
                os.makedirs(os.path.join(self._slot_dir(slot), box), exist_ok=True)
        self._touch_heartbeat()
        for slot in self._slots:
            self._start_job(slot)
        self._dispatcher = threading.Thread(target=self._dispatch, name="slot-dispatcher",
                                            daemon=True)
        self._dispatcher.start()

    def submit(self, task_id: int, payload: bytes) -> Future:
        """Queue a task for the next free slot; the future gives ``make_result``'s value."""
        task = _Task(task_id, payload, Future())
        with self._condition:
            if self._cancelled or self._closing:
                self._resolve_without_result(task, TASK_CANCELLED, "cancelled before it started")
            elif self._unreachable:
                self._hand_off(task)
            else:
                self._queue.append(task)
                self._condition.notify_all()
        return task.future

    def cancel(self) -> None:
        """Cancel the queued tasks, stop the slots and interrupt their jobs (running tasks)."""
        with self._condition:
            self._cancelled = True
            self._condition.notify_all()
        self._write_stop()
        interrupt_tag(self.session, self.tag)

    def close(self) -> None:
        """Wait for the running tasks, cancel queued ones, end the slots, delete the directory."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._dispatcher is not None:
            self._dispatcher.join()
        self._write_stop()
        for job in self._jobs:
            job.join()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def unreachable(self) -> bool:
        """True once every slot said it cannot see the directory (tasks go to ``handoff``)."""
        return self._unreachable

    # ---- the slots' jobs

    def _slot_dir(self, slot: _Slot) -> str:
        return os.path.join(self.directory, f"slot_{slot.index}")

    def _start_job(self, slot: _Slot) -> None:
        slot.running = True
        job = threading.Thread(target=self._run_job, args=(slot,), daemon=True,
                               name=f"slot-{slot.index}")
        self._jobs.append(job)
        job.start()

    def _run_job(self, slot: _Slot) -> None:
        import pandas as pd
        from pyspark.sql import types

        status, error = STOPPED, None
        try:
            self.session.addTag(self.tag)
            schema = types.StructType([types.StructField("slot", types.LongType())])
            result = types.StructType([
                types.StructField("slot", types.LongType()),
                types.StructField("status", types.StringType()),
                types.StructField("tasks", types.LongType()),
                types.StructField("worker_pid", types.LongType())])
            body = functools.partial(run_slot_batches, self.executor_directory, self.data_path,
                                     self.run_id)
            frame = self.session.createDataFrame(pd.DataFrame({"slot": [slot.index]}), schema)
            rows = frame.mapInPandas(body, result).collect()
            status = rows[0]["status"]
        except Exception as exc:  # noqa: BLE001 - a dead worker or a cancel: the dispatcher decides
            status, error = TASK_FAILED, exc
        finally:
            self.session.removeTag(self.tag)
        with self._condition:
            self._ended.append((slot, status, error))
            self._condition.notify_all()

    # ---- the dispatcher

    def _dispatch(self) -> None:
        try:
            self._dispatch_until_done()
        except BaseException as exc:  # noqa: BLE001 - no caller may wait forever for a result
            logger.error("The task slots' dispatcher of run %s failed: %s", self.run_id, exc,
                         exc_info=True)
            with self._condition:
                self._cancelled = True
                pending = [slot.task for slot in self._slots if slot.task] + list(self._queue)
                self._queue.clear()
                for slot in self._slots:
                    slot.task = None
                for task in pending:
                    if not task.future.done():
                        self._resolve_without_result(
                            task, TASK_FAILED, f"ClusterTaskError: the dispatcher failed: {exc}")
            self._write_stop()
            interrupt_tag(self.session, self.tag)

    def _dispatch_until_done(self) -> None:
        pause = RESULT_POLL_S[0]
        beat = time.monotonic()
        while True:
            with self._condition:
                self._handle_ended_jobs()
                found = self._collect_results()
                if self._cancelled:
                    while self._queue:
                        self._resolve_without_result(self._queue.popleft(), TASK_CANCELLED,
                                                     "cancelled before it started")
                elif self._closing:
                    while self._queue:
                        self._resolve_without_result(self._queue.popleft(), TASK_CANCELLED,
                                                     "the runner closed before it started")
                assigned = self._assign()
                busy = any(slot.task for slot in self._slots)
                if not busy and not self._queue and (self._closing or self._cancelled):
                    return
                if found or assigned:
                    pause = RESULT_POLL_S[0]
                if not busy:
                    self._condition.wait(timeout=1.0)
                    pause = RESULT_POLL_S[0]
            if time.monotonic() - beat > 1.0:
                beat = time.monotonic()
                self._touch_heartbeat()
            if busy:
                time.sleep(pause)
                pause = min(pause * 2, RESULT_POLL_S[1])

    def _collect_results(self) -> bool:
        found = False
        for slot in self._slots:
            if slot.task is not None and self._take_result(slot):
                found = True
        return found

    def _take_result(self, slot: _Slot) -> bool:
        """Resolve the slot's task from its result file, if there is one yet."""
        task = slot.task
        path = os.path.join(self._slot_dir(slot), "out", f"{task.task_id}{RESULT_SUFFIX}")
        try:
            with open(path, "rb") as handle:
                row = pickle.loads(handle.read())
        except FileNotFoundError:
            return False
        os.remove(path)
        slot.task = None
        wall = time.perf_counter() - task.handed
        try:
            task.future.set_result(self.make_result(row, wall))
        except Exception as exc:  # noqa: BLE001 - e.g. a value the driver cannot unpickle
            self._resolve_without_result(task, TASK_FAILED,
                                         f"{type(exc).__name__}: {exc} (reading its result)")
        return True

    def _assign(self) -> bool:
        assigned = False
        for slot in self._slots:
            if not self._queue:
                break
            if slot.task is None and slot.usable and not self._cancelled and self._ready(slot):
                task = self._queue.popleft()
                name = f"{task.task_id}{TASK_SUFFIX}"
                task.handed = time.perf_counter()
                write_atomically(os.path.join(self._slot_dir(slot), "in", name), task.payload)
                slot.task = task
                assigned = True
        if self._queue and not any(slot.usable for slot in self._slots):
            self._unreachable_or_failed()
        return assigned

    def _ready(self, slot: _Slot) -> bool:
        """A slot takes tasks once its job runs: a job still waiting for a core (more slots
        than the cluster has free) would hold its task forever."""
        if not slot.ready:
            slot.ready = os.path.exists(os.path.join(self._slot_dir(slot), READY_FILE))
        return slot.ready

    def _handle_ended_jobs(self) -> None:
        while self._ended:
            slot, status, error = self._ended.popleft()
            slot.running = False
            slot.ready = False
            try:
                os.remove(os.path.join(self._slot_dir(slot), READY_FILE))
            except FileNotFoundError:
                pass
            if status == UNREACHABLE:
                slot.usable = False
                if slot.task is not None:  # never started: it may run another way
                    self._clear_inbox(slot, slot.task)
                    self._queue.appendleft(slot.task)
                    slot.task = None
                if not any(s.usable for s in self._slots):
                    self._unreachable = True
                continue
            if slot.task is not None and not self._take_result(slot):
                task, slot.task = slot.task, None
                self._clear_inbox(slot, task)
                if self._cancelled:
                    self._resolve_without_result(task, TASK_CANCELLED, _short_error(error))
                else:
                    self._resolve_without_result(task, TASK_FAILED, _short_error(error))
            if status == STOPPED or self._cancelled or self._closing:
                slot.usable = False
                continue
            # The slot's job failed (its Python worker died): start it again for the next tasks.
            logger.warning("Task slot %d of run %s ended: %s", slot.index, self.run_id,
                           _short_error(error))
            if slot.restarts < MAX_SLOT_RESTARTS:
                slot.restarts += 1
                self._start_job(slot)
            else:
                slot.usable = False

    def _unreachable_or_failed(self) -> None:
        """No slot can take the queued tasks: hand them off, or fail them."""
        while self._queue:
            task = self._queue.popleft()
            if self._unreachable:
                self._hand_off(task)
            else:
                self._resolve_without_result(task, TASK_FAILED,
                                             "ClusterTaskError: every task slot's job failed")

    def _hand_off(self, task: _Task) -> None:
        other = self._handoff(task.task_id, task.payload)

        def copy_outcome(done: Future) -> None:
            if done.cancelled() or done.exception() is not None:
                error = "cancelled before it started" if done.cancelled() else \
                    f"{type(done.exception()).__name__}: {done.exception()}"
                self._resolve_without_result(
                    task, TASK_CANCELLED if done.cancelled() else TASK_FAILED, error)
            else:
                task.future.set_result(done.result())

        other.add_done_callback(copy_outcome)

    def _clear_inbox(self, slot: _Slot, task: _Task) -> None:
        inbox = os.path.join(self._slot_dir(slot), "in")
        for suffix in (TASK_SUFFIX, RUNNING_SUFFIX):
            try:
                os.remove(os.path.join(inbox, f"{task.task_id}{suffix}"))
            except FileNotFoundError:
                pass

    def _resolve_without_result(self, task: _Task, status: str, error: str) -> None:
        row = {"task_id": task.task_id, "status": status, "error": error}
        task.future.set_result(self.make_result(row, time.perf_counter() - task.handed))

    # ---- files

    def _touch_heartbeat(self) -> None:
        path = os.path.join(self.directory, HEARTBEAT_FILE)
        try:
            with open(path, "a"):
                pass
            os.utime(path)
        except OSError as exc:  # noqa: PERF203 - the directory may be gone at close
            logger.debug("Could not touch %s: %s", path, exc)

    def _write_stop(self) -> None:
        try:
            write_atomically(os.path.join(self.directory, STOP_FILE), b"")
        except OSError as exc:
            logger.debug("Could not write the stop file in %s: %s", self.directory, exc)


def interrupt_tag(session, tag: str) -> None:
    """Interrupt the session's jobs tagged ``tag``; best effort (the session may be gone)."""
    try:
        session.interruptTag(tag)
    except Exception as exc:  # noqa: BLE001 - a cancel must not raise over the run's own outcome
        logger.warning("Could not interrupt the tasks tagged %s: %s", tag, exc)


def _short_error(exc: BaseException | None) -> str:
    if exc is None:
        return "the task's slot ended without its result"
    lines = str(exc).strip().splitlines()
    head = next((line for line in lines if "Error" in line or "Exception" in line),
                lines[0] if lines else "")
    return f"{type(exc).__name__}: {head[:500]}"
