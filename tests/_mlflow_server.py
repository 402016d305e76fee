"""Test helpers: a real ``mlflow server`` on loopback, and servers that fail on purpose.

``running_mlflow_server`` starts the venv's ``mlflow server`` with a sqlite
backend and a local artifact root, waits for ``/health`` and stops the whole
process group afterwards (the server forks uvicorn and a job runner).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_mlflow_server(root: Path, *, startup_timeout_s: float = 120) -> Iterator[str]:
    """Run ``mlflow server`` (sqlite backend, artifacts under ``root``); yield its URL."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")
    command = [str(MLFLOW_BIN), "server",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=root)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}; see "
                                   f"{root / 'server.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {startup_timeout_s} s; "
                                   f"see {root / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(process)
        log.close()


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it forked."""
    # The process is the leader of its own session: signal exactly that group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    # Children (uvicorn) may outlive the CLI briefly.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers; yield its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            accepted.append(connection)  # held open, never read or answered

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for connection in accepted:
            connection.close()
        listener.close()
