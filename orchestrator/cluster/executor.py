"""What runs in an executor's Python worker for :mod:`orchestrator.cluster.connect`.

Two ways a task reaches a worker, both through ``mapInPandas`` only (Spark Connect):

* :func:`run_task_batches`: the body of a one-row job that carries one task.
* :func:`run_slot_batches`: the body of a long-lived *slot*, a one-task job that
  takes tasks from its inbox directory one after another until the driver
  writes a stop file (see :mod:`orchestrator.cluster.slots` for the driver
  side). A trial then costs a file write and a file read instead of a Spark job.

Both read the run's shared data (the training rows) once per Python worker
(:func:`load_shared`) and never let an exception of the task fail the Spark
task: it becomes a result with status ``fail``.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

__all__ = [
    "TASK_CANCELLED",
    "TASK_FAILED",
    "TASK_OK",
    "execute_payload",
    "load_shared",
    "run_slot_batches",
    "run_task_batches",
]

TASK_OK = "ok"
TASK_FAILED = "fail"
TASK_CANCELLED = "cancelled"

#: Runs whose shared data a Python worker keeps in memory (the newest ones).
WORKER_CACHE_RUNS = 2

#: A slot's polling interval grows from the first to the second while its inbox stays empty.
SLOT_POLL_S = (0.002, 0.02)
#: A slot ends when the driver's heartbeat file is older than this (the driver is gone; a
#: driver that only stalls for a while must not lose its slots).
SLOT_ORPHAN_S = 600.0

#: The reason a slot gives for a task an earlier attempt of the slot was running.
LOST_WORKER_ERROR = ("WorkerLost: the Python worker running this task died (its Spark task "
                     "was retried; the task is not run again)")

#: Per worker process: run id -> shared data, newest last (at most WORKER_CACHE_RUNS).
_WORKER_SHARED: OrderedDict[str, Any] = OrderedDict()


def load_shared(path: str, run_id: str) -> tuple[Any, float]:
    """The run's shared data in this worker, read from ``path`` the first time; and the load time."""
    if run_id in _WORKER_SHARED:
        return _WORKER_SHARED[run_id], 0.0
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table = pq.read_table(path, columns=["chunk", "data"]).sort_by("chunk")
    buffer = io.BytesIO()
    for chunk in table.column("data").to_pylist():
        buffer.write(chunk)
    shared = pickle.loads(buffer.getbuffer())
    _WORKER_SHARED[run_id] = shared
    while len(_WORKER_SHARED) > WORKER_CACHE_RUNS:
        _WORKER_SHARED.popitem(last=False)
    return shared, time.perf_counter() - started


def execute_payload(path: str, run_id: str, task_id: int, payload: bytes) -> dict:
    """Run one pickled ``(fn, arg)`` as ``fn(shared, arg)``; the result row as a dict.

    ``result`` holds the pickled value when ``status`` is ok; an exception of
    ``fn`` (or of unpickling it) is a ``fail`` row with its traceback.
    """
    started_ms = int(time.time() * 1000)
    started = time.perf_counter()
    load_s = None
    try:
        shared, load_s = load_shared(path, run_id)
        fn, arg = pickle.loads(payload)
        began = time.perf_counter()
        value = fn(shared, arg)
        duration = time.perf_counter() - began
        result, status, error, trace = pickle.dumps(value), TASK_OK, None, None
    except Exception as exc:  # noqa: BLE001 - reported to the driver as a failed task
        duration = time.perf_counter() - started
        result, status = None, TASK_FAILED
        error, trace = f"{type(exc).__name__}: {exc}"[:4000], traceback.format_exc()
    return {"task_id": int(task_id), "status": status, "result": result, "error": error,
            "traceback": trace, "started_ms": started_ms,
            "ended_ms": int(time.time() * 1000), "duration_s": duration, "load_s": load_s,
            "worker_pid": os.getpid()}


def run_task_batches(path: str, run_id: str, batches: Iterator) -> Iterator:
    """``mapInPandas`` body: run each task row ``(task_id, payload)``; yield one result row each."""
    import pandas as pd

    for batch in batches:
        for task_id, payload in zip(batch["task_id"], batch["payload"]):
            row = execute_payload(path, run_id, task_id, payload)
            yield pd.DataFrame({key: [value] for key, value in row.items()})


def delete_staged_batches(path: str, batches: Iterator) -> Iterator:
    """``mapInPandas`` body of the cleanup job: delete the staged run directory."""
    for batch in batches:
        shutil.rmtree(path, ignore_errors=True)
        yield batch


# ---------------------------------------------------------------- slots

# The files of a slot directory (names shared with orchestrator.cluster.slots):
#   in/<task_id>.task       a pickled (fn, arg) the driver wrote, not started yet
#   in/<task_id>.running    the same task once this slot took it
#   out/<task_id>.result    the pickled result row (written whole, then renamed)
# and in the slots' common directory: ``heartbeat`` (the driver touches it) and ``stop``.
TASK_SUFFIX = ".task"
RUNNING_SUFFIX = ".running"
RESULT_SUFFIX = ".result"
HEARTBEAT_FILE = "heartbeat"
STOP_FILE = "stop"
#: In a slot's directory once its job runs (the driver gives tasks only to running slots).
READY_FILE = "ready"
UNREACHABLE = "unreachable"
STOPPED = "stopped"


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees either nothing or the whole file."""
    temporary = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def run_slot_batches(slots_dir: str, path: str, run_id: str, batches: Iterator) -> Iterator:
    """``mapInPandas`` body of a slot: run the tasks of its inbox until the driver says stop.

    Each input row is a slot number. Yields one row per slot: ``(slot, status,
    tasks, worker_pid)``, status ``unreachable`` when this worker cannot see
    ``slots_dir`` (the driver then sends tasks as jobs instead).
    """
    import pandas as pd

    for batch in batches:
        for slot in batch["slot"]:
            status, done = _serve_slot(slots_dir, int(slot), path, run_id)
            yield pd.DataFrame({"slot": [int(slot)], "status": [status], "tasks": [done],
                                "worker_pid": [os.getpid()]})


def _serve_slot(slots_dir: str, slot: int, path: str, run_id: str) -> tuple[str, int]:
    base = os.path.join(slots_dir, f"slot_{slot}")
    inbox, outbox = os.path.join(base, "in"), os.path.join(base, "out")
    if not (os.path.isdir(inbox) and os.path.isdir(outbox)):
        return UNREACHABLE, 0
    # A task left running belonged to an earlier attempt of this slot whose worker died:
    # it is a failed task (as a one-task job without retries would be), never run twice.
    for name in os.listdir(inbox):
        if name.endswith(RUNNING_SUFFIX):
            task_id = int(name[:-len(RUNNING_SUFFIX)])
            _finish(inbox, outbox, name, {
                "task_id": task_id, "status": TASK_FAILED, "result": None,
                "error": LOST_WORKER_ERROR, "traceback": None, "started_ms": None,
                "ended_ms": None, "duration_s": None, "load_s": None,
                "worker_pid": os.getpid()})
    done = 0
    pause = SLOT_POLL_S[0]
    heartbeat = os.path.join(slots_dir, HEARTBEAT_FILE)
    stop = os.path.join(slots_dir, STOP_FILE)
    write_atomically(os.path.join(base, READY_FILE), str(os.getpid()).encode())
    checked = time.monotonic()
    while True:
        if os.path.exists(stop):  # before any task: a cancelled run starts nothing more
            return STOPPED, done
        waiting = sorted((name for name in os.listdir(inbox) if name.endswith(TASK_SUFFIX)),
                         key=lambda name: int(name[:-len(TASK_SUFFIX)]))
        if waiting:
            name = waiting[0]
            task_id = int(name[:-len(TASK_SUFFIX)])
            running = f"{task_id}{RUNNING_SUFFIX}"
            os.replace(os.path.join(inbox, name), os.path.join(inbox, running))
            with open(os.path.join(inbox, running), "rb") as handle:
                payload = handle.read()
            _finish(inbox, outbox, running, execute_payload(path, run_id, task_id, payload))
            done += 1
            pause = SLOT_POLL_S[0]
            continue
        now = time.monotonic()
        if now - checked > 1.0:
            checked = now
            try:
                orphaned = time.time() - os.stat(heartbeat).st_mtime > SLOT_ORPHAN_S
            except FileNotFoundError:  # the driver deleted the run's directory
                orphaned = True
            if orphaned:
                return STOPPED, done
        time.sleep(pause)
        pause = min(pause * 2, SLOT_POLL_S[1])


def _finish(inbox: str, outbox: str, running: str, row: dict) -> None:
    write_atomically(os.path.join(outbox, f"{row['task_id']}{RESULT_SUFFIX}"), pickle.dumps(row))
    os.remove(os.path.join(inbox, running))
