"""The task slot protocol without Spark: a slot serving its inbox in a thread, as a worker would."""

from __future__ import annotations

import os
import pickle
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.cluster import executor
from orchestrator.cluster.connect import choose_dispatch
from orchestrator.cluster.executor import (
    LOST_WORKER_ERROR,
    STOPPED,
    TASK_FAILED,
    TASK_OK,
    UNREACHABLE,
    _serve_slot,
    write_atomically,
)


def _stage(directory, shared) -> str:
    """Shared data staged as the runner stages it (one Parquet file of pickled chunks)."""
    path = os.path.join(directory, "run_data")
    os.makedirs(path)
    blob = pickle.dumps(shared)
    pq.write_table(pa.table({"chunk": [0], "data": [blob]}), os.path.join(path, "part.parquet"))
    return path


def _double(shared, arg):
    return shared["base"] + 2 * arg


def _fail(shared, arg):
    raise KeyError(arg)


def _payload(fn, arg) -> bytes:
    from pyspark import cloudpickle

    return cloudpickle.dumps((fn, arg))


def _slot_dirs(root, slot=0):
    base = os.path.join(root, f"slot_{slot}")
    inbox, outbox = os.path.join(base, "in"), os.path.join(base, "out")
    os.makedirs(inbox)
    os.makedirs(outbox)
    return inbox, outbox


def _wait_for(path, timeout=10.0):
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.005)
    with open(path, "rb") as handle:
        return pickle.loads(handle.read())


@pytest.fixture
def served(tmp_path):
    """A slot served in a thread; yields (slots dir, inbox, outbox, outcome holder)."""
    data = _stage(str(tmp_path), {"base": 100})
    slots = tmp_path / "slots"
    inbox, outbox = _slot_dirs(str(slots))
    (slots / executor.HEARTBEAT_FILE).touch()
    outcome = {}

    run_id = f"run-{tmp_path.name}"  # the worker cache is per process: one id per test

    def serve():
        outcome["value"] = _serve_slot(str(slots), 0, data, run_id)

    thread = threading.Thread(target=serve, daemon=True)
    yield slots, inbox, outbox, outcome, thread
    write_atomically(str(slots / executor.STOP_FILE), b"")
    thread.join(timeout=10)


def test_a_slot_runs_its_tasks_in_order_and_stops_on_the_stop_file(served):
    slots, inbox, outbox, outcome, thread = served
    write_atomically(os.path.join(inbox, "3.task"), _payload(_double, 1))
    write_atomically(os.path.join(inbox, "4.task"), _payload(_fail, "x"))
    thread.start()
    ok = _wait_for(os.path.join(outbox, "3.result"))
    failed = _wait_for(os.path.join(outbox, "4.result"))
    assert ok["status"] == TASK_OK and pickle.loads(ok["result"]) == 102
    assert ok["worker_pid"] == os.getpid() and ok["load_s"] > 0
    assert failed["status"] == TASK_FAILED and failed["error"] == "KeyError: 'x'"
    assert "_fail" in failed["traceback"]
    # The shared data was read once: the second task found it in the worker's cache.
    assert failed["load_s"] == 0.0
    # A task written later is picked up by the same, still polling slot.
    write_atomically(os.path.join(inbox, "5.task"), _payload(_double, 10))
    assert pickle.loads(_wait_for(os.path.join(outbox, "5.result"))["result"]) == 120
    assert (slots / "slot_0" / executor.READY_FILE).read_text() == str(os.getpid())
    write_atomically(str(slots / executor.STOP_FILE), b"")
    thread.join(timeout=10)
    assert outcome["value"] == (STOPPED, 3)
    assert os.listdir(inbox) == []  # every task file removed once its result is written


def test_a_stopped_slot_starts_no_waiting_task(served):
    slots, inbox, outbox, outcome, thread = served
    write_atomically(str(slots / executor.STOP_FILE), b"")  # the run was cancelled
    write_atomically(os.path.join(inbox, "9.task"), _payload(_double, 1))
    thread.start()
    thread.join(timeout=10)
    assert outcome["value"] == (STOPPED, 0) and os.listdir(outbox) == []


def test_a_task_left_running_by_a_dead_attempt_fails_and_is_not_run_again(served):
    slots, inbox, outbox, outcome, thread = served
    # The earlier attempt of this slot took task 7 and died: its file says .running.
    write_atomically(os.path.join(inbox, "7.running"), _payload(_double, 1))
    write_atomically(os.path.join(inbox, "8.task"), _payload(_double, 2))
    thread.start()
    lost = _wait_for(os.path.join(outbox, "7.result"))
    assert lost["status"] == TASK_FAILED and lost["error"] == LOST_WORKER_ERROR
    assert pickle.loads(_wait_for(os.path.join(outbox, "8.result"))["result"]) == 104


def test_a_slot_that_cannot_see_its_directory_says_so(tmp_path):
    assert _serve_slot(str(tmp_path / "elsewhere"), 0, "unused", "run") == (UNREACHABLE, 0)


def test_a_slot_whose_driver_went_away_ends(tmp_path, monkeypatch):
    data = _stage(str(tmp_path), {"base": 0})
    slots = tmp_path / "slots"
    _slot_dirs(str(slots))
    heartbeat = slots / executor.HEARTBEAT_FILE
    heartbeat.touch()
    stale = time.time() - executor.SLOT_ORPHAN_S - 5
    os.utime(heartbeat, (stale, stale))
    started = time.monotonic()
    assert _serve_slot(str(slots), 0, data, "run-orphan") == (STOPPED, 0)
    assert time.monotonic() - started < 5


def test_results_are_written_whole(tmp_path):
    path = tmp_path / "1.result"
    write_atomically(str(path), b"x" * 1000)
    assert path.read_bytes() == b"x" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["1.result"]  # no temporary left


def test_choose_dispatch():
    assert choose_dispatch("auto", True) == "slots"
    assert choose_dispatch("auto", False) == "jobs"
    assert choose_dispatch("slots", False) == "slots"
    assert choose_dispatch("jobs", True) == "jobs"


def test_load_shared_reassembles_chunks_in_order(tmp_path):
    blob = pickle.dumps(list(range(1000)))
    chunks = [blob[i:i + 100] for i in range(0, len(blob), 100)]
    path = tmp_path / "run_x"
    path.mkdir()
    order = list(reversed(range(len(chunks))))  # stored out of order
    pq.write_table(pa.table({"chunk": order, "data": [chunks[i] for i in order]}),
                   str(path / "part.parquet"))
    shared, load_s = executor.load_shared(str(path), "run-chunks")
    assert shared == list(range(1000)) and load_s > 0
    assert executor.load_shared(str(path), "run-chunks") == (shared, 0.0)
