"""Where runs go, and whether that place answers: tracking URIs and the bounded reachability check.

Nothing here changes process state: the check runs MLflow calls in a thread
with a deadline, and :func:`bounded_http_env` only *returns* the settings that
bound MLflow's HTTP retries, for entry points to apply
(:func:`orchestrator.entrypoints.process.bound_mlflow_requests`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import TrackingUnavailableError
from orchestrator.redaction import redact_text
from orchestrator.specs.mlflow import MLflowSpec

logger = logging.getLogger(__name__)

__all__ = ["bounded_http_env", "check_tracking_reachable", "client_for", "default_tracking_uri",
           "registry_uri_for", "resolve_tracking_uri", "tracking_errors"]


_HTTP_RETRIES = 1


def default_tracking_uri(environ: Mapping[str, str] | None = None,
                         cwd: str | os.PathLike | None = None) -> str:
    """Where runs go when the spec names no tracking URI.

    Parameters
    ----------
    environ : mapping, optional
        Environment variables (default ``os.environ``).
    cwd : path, optional
        Working directory (default the current one).

    Returns
    -------
    str
        ``$MLFLOW_TRACKING_URI`` when set, else ``"databricks"`` on a
        Databricks runtime, else ``sqlite:///<cwd>/mlruns/mlflow.db``.

    Examples
    --------
    >>> default_tracking_uri({"DATABRICKS_RUNTIME_VERSION": "15.4"}, "/tmp")
    'databricks'
    >>> default_tracking_uri({}, "/work")
    'sqlite:////work/mlruns/mlflow.db'
    """
    environ = os.environ if environ is None else environ
    if environ.get("MLFLOW_TRACKING_URI", "").strip():
        return environ["MLFLOW_TRACKING_URI"].strip()
    if environ.get("DATABRICKS_RUNTIME_VERSION", "").strip():
        return "databricks"
    base = Path(os.getcwd() if cwd is None else cwd).absolute()
    return f"sqlite:///{(base / 'mlruns' / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(spec: MLflowSpec, environ: Mapping[str, str] | None = None,
                         cwd: str | os.PathLike | None = None) -> str:
    """The spec's tracking URI, else :func:`default_tracking_uri`."""
    return spec.tracking_uri or default_tracking_uri(environ, cwd)


def _uri_scheme(uri: str) -> str:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    # A Windows drive letter ("C:\...") is a path, not a scheme.
    return match.group(1).lower() if match and len(match.group(1)) > 1 else ""


def _local_store_dir(uri: str) -> Path | None:
    """The directory a local sqlite/file store lives in, or None for remote stores."""
    scheme = _uri_scheme(uri)
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        return Path(path).parent if path and path != ":memory:" else None
    if scheme == "file":
        return Path(uri[len("file://"):] or "/")
    if scheme == "":
        return Path(uri)
    return None


def tracking_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "the tracking backend failed" (not a bug in our code)."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException, OSError)


def registry_uri_for(tracking_uri: str) -> str:
    """The model registry that goes with a tracking URI: Unity Catalog on Databricks, else itself.

    Passed explicitly to every client, so a registry URI set globally by other
    code in the process (``mlflow.set_registry_uri``) never redirects a run's
    model versions.

    Examples
    --------
    >>> registry_uri_for("sqlite:///mlruns.db"), registry_uri_for("databricks")
    ('sqlite:///mlruns.db', 'databricks-uc')
    """
    if _uri_scheme(tracking_uri) == "databricks":
        return "databricks-uc" + tracking_uri[len("databricks"):]
    return tracking_uri


def client_for(tracking_uri: str):
    """An ``MlflowClient`` bound to ``tracking_uri`` and its registry (no global URI is read)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri_for(tracking_uri))


def bounded_http_env(timeout_s: float) -> dict[str, str]:
    """MLflow's environment settings that bound each HTTP request to ``timeout_s``, one retry.

    Returned, not applied: only entry points change the process environment.

    Examples
    --------
    >>> bounded_http_env(2.5)["MLFLOW_HTTP_REQUEST_TIMEOUT"]
    '3'
    """
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(_HTTP_RETRIES),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    }


def _call_with_deadline(function, timeout_s: float, what: str):
    """Run ``function()`` in a daemon thread; give up after ``timeout_s`` seconds.

    A hung call keeps its thread (daemon, so it never blocks interpreter exit);
    the caller gets :class:`TrackingUnavailableError` on time.
    """
    outcome: dict[str, Any] = {}

    def target():
        try:
            outcome["value"] = function()
        except Exception as exc:  # handed to the calling thread, which decides
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"mlflow-check-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TrackingUnavailableError(
            f"MLflow tracking: {what} did not answer within {timeout_s:g} s; training goes on "
            "without tracking. Check that the server is up, or raise mlflow_spec.timeout_s.")
    if "error" in outcome:
        raise TrackingUnavailableError(
            f"MLflow tracking: {what} failed: {outcome['error']}") from outcome["error"]
    return outcome.get("value")


def check_tracking_reachable(tracking_uri: str, timeout_s: float) -> None:
    """Fail fast, within ``timeout_s``, when the tracking backend cannot be used.

    HTTP(S) servers must answer ``GET /health``; other remote backends
    (``databricks``, databases) must answer one cheap query; local sqlite and
    file stores need a directory that can be created.

    Parameters
    ----------
    tracking_uri : str
    timeout_s : float
        Hard bound on the whole check (a hung connection is abandoned).

    Raises
    ------
    TrackingUnavailableError
        With the URI (credentials redacted) and the reason.

    Examples
    --------
    >>> check_tracking_reachable("http://127.0.0.1:9", 1.0)  # doctest: +SKIP
    Traceback (most recent call last):
    TrackingUnavailableError: MLflow tracking: http://127.0.0.1:9 failed: ...
    """
    shown = redact_text(tracking_uri)
    scheme = _uri_scheme(tracking_uri)
    local_dir = _local_store_dir(tracking_uri)
    if local_dir is not None:
        _check_creatable(local_dir, shown)
        if scheme == "sqlite":
            # sqlite creates the file but not its directory; the store is usable, so make it.
            try:
                local_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingUnavailableError(
                    f"MLflow tracking: cannot create the local store directory {local_dir} for "
                    f"{shown}: {exc}") from exc
            return
        # A file store: MLflow may refuse it (maintenance mode); ask before creating anything.
        # Local, so no deadline is needed (the first mlflow import alone may take seconds).
        from mlflow import MlflowClient

        try:
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
        except tracking_errors() as exc:
            raise TrackingUnavailableError(f"MLflow tracking: cannot use {shown}: "
                                           f"{str(exc).splitlines()[0][:300]}") from exc
        return
    if scheme in ("http", "https"):
        _call_with_deadline(lambda: _http_health(tracking_uri, timeout_s), timeout_s, shown)
        return

    def query():
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)

    _call_with_deadline(query, timeout_s, shown)


def _check_creatable(directory: Path, shown: str) -> None:
    """Raise unless ``directory`` exists or could be created (nothing is created here)."""
    probe = directory.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if directory.exists() and not directory.is_dir():
        reason = f"{directory} is a file"
    elif not probe.is_dir():
        reason = f"{probe} is a file, not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        reason = f"{probe} is not writable"
    else:
        return
    raise TrackingUnavailableError(f"MLflow tracking: cannot use the local store for {shown}: "
                                   f"{reason}.")


def _http_health(tracking_uri: str, timeout_s: float) -> None:
    import requests

    verify: bool | str = True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    response = requests.get(tracking_uri.rstrip("/") + "/health", timeout=(timeout_s, timeout_s),
                            verify=verify)
    # Any answer below 500 means a server is there (a proxy may 401/404 /health).
    if response.status_code >= 500:
        raise TrackingUnavailableError(f"GET /health answered HTTP {response.status_code}")
