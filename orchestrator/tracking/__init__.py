"""Step 7: tracking a workflow run in MLflow, never blocking and never fatal.

The workflow uses three pieces:

* :func:`start_tracking` checks, within ``spec.timeout_s``, that the tracking
  server answers, then starts the run and logs the resolved config (secrets
  redacted), the library versions and the tags. An unreachable or hanging
  server raises :class:`TrackingUnavailableError` quickly; the workflow then
  trains without tracking.
* :func:`ensure_run_ends` wraps the workflow's steps so that the run ends
  FINISHED on success, FAILED when a step raises and KILLED on SIGTERM/SIGINT,
  never left RUNNING.
* :meth:`Tracker.log_results` logs what the run produced: metrics (per-fold
  values as steps), model parameters, data lineage, plots, artifacts, and the
  model itself with a signature, registered and aliased when asked.

While a run is active every HTTP request MLflow makes is bounded by
``timeout_s`` and retried at most once (MLflow's defaults retry for minutes).

Probabilities through pyfunc
----------------------------
The model is logged with ``pyfunc_predict_fn="predict"``, so ``pyfunc.predict``
returns the same labels as the pipeline (what ``mlflow models serve`` and
``spark_udf`` return). Class probabilities are reached through the same
pyfunc object, as ``mlflow.evaluate`` itself does::

    model = mlflow.pyfunc.load_model(uri)
    labels = model.predict(to_model_input(X))
    proba = model.get_raw_model().predict_proba(to_model_input(X))

The model's metadata records ``classes`` (the column order of ``proba``).
Logging a second copy with ``pyfunc_predict_fn="predict_proba"`` or a custom
``PythonModel`` wrapper would need cloudpickle; the skops format keeps the
model safe to load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.redaction import redact, redact_text
from orchestrator.specs.mlflow import MLflowSpec

logger = logging.getLogger(__name__)

__all__ = [
    "TrackingError",
    "TrackingUnavailableError",
    "ModelLoggingError",
    "RunContext",
    "Tracker",
    "ChildRun",
    "default_tracking_uri",
    "resolve_tracking_uri",
    "check_tracking_reachable",
    "start_tracking",
    "ensure_run_ends",
    "child_run",
    "to_model_input",
    "flatten_params",
    "trusted_model_types",
]

MODEL_NAME = "model"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
# Types the skops format may contain without the user declaring them: this package's own
# transformers and calibration procedure, scikit-learn's private helpers (trees, calibrators),
# and numpy dtypes. Anything else must be listed in mlflow_spec.trusted_types.
BUILTIN_TRUSTED_PREFIXES = ("orchestrator.", "sklearn.")
BUILTIN_TRUSTED_TYPES = ("numpy.dtype",)
# A library whose types appear in the model is pinned in the model's requirements.
_PIP_NAMES = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm"}
_LIBRARIES = ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy", "pyspark",
              "delta-spark", "hyperopt", "matplotlib", "pyarrow")
_MAX_PARAM_VALUE = 6000
_MAX_KEY = 250
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_HTTP_RETRIES = 1
_PARENT_RUN_TAG = "mlflow.parentRunId"


class TrackingError(OrchestratorError):
    """Logging to MLflow failed; the cause is chained."""


class TrackingUnavailableError(TrackingError):
    """The tracking server cannot be reached or did not answer within the timeout."""


class ModelLoggingError(TrackingError):
    """The model could not be logged safely (untrusted types, missing signature)."""


# ----------------------------------------------------------------------------- the tracking URI


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


# ----------------------------------------------------------------------------- bounded calls


def _tracking_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "the tracking backend failed" (not a bug in our code)."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException, OSError)


def _bounded_http_env(timeout_s: float) -> dict[str, str]:
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(_HTTP_RETRIES),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    }


def _set_env(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Set (or unset, for None) environment variables; return the previous values."""
    previous = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return previous


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
        try:
            local_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailableError(
                f"MLflow tracking: cannot create the local store directory {local_dir} for "
                f"{shown}: {exc}") from exc
        return
    if scheme in ("http", "https"):
        _call_with_deadline(lambda: _http_health(tracking_uri, timeout_s), timeout_s, shown)
        return

    def query():
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)

    previous = _set_env(_bounded_http_env(timeout_s))
    try:
        _call_with_deadline(query, timeout_s, shown)
    finally:
        _set_env(previous)


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


# ----------------------------------------------------------------------------- params


def _plain(value: Any) -> Any:
    """Config values as YAML/JSON-safe Python (dicts, lists, str, numbers, bools, None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _param_key(key: str) -> str:
    key = re.sub(r"[^\w\-. /:]", "_", key)
    if len(key) > _MAX_KEY:
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        key = key[:_MAX_KEY - 9] + "~" + digest
    return key


def _param_value(value: Any) -> str:
    # Scalars as Python writes them (True, None, 0.5), as MLflow's autologging does;
    # containers as JSON.
    plain = _plain(value)
    text = json.dumps(plain) if isinstance(plain, (dict, list)) else str(plain)
    return text if len(text) <= _MAX_PARAM_VALUE else text[:_MAX_PARAM_VALUE - 3] + "..."


def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into MLflow params, secrets redacted.

    Nested mappings become dotted keys; a list of mappings (such as the
    feature specs) is indexed (``feature_specs.0.name``); a list of scalars
    stays one JSON value.

    Examples
    --------
    >>> flatten_params({"model_spec": {"params": {"C": 0.5}}, "db": {"password": "x"}})
    {'model_spec.params.C': '0.5', 'db.password': '***REDACTED***'}
    """
    flat: dict[str, str] = {}
    _flatten_into(flat, _plain(redact(config)), prefix)
    return flat


def _flatten_into(flat: dict[str, str], value: Any, prefix: str) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten_into(flat, item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            _flatten_into(flat, item, f"{prefix}.{index}" if prefix else str(index))
    elif prefix:
        flat[_param_key(prefix)] = _param_value("" if value is None else value)


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"lib.python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            versions[f"lib.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from orchestrator import __version__

    versions["lib.orchestrator"] = __version__
    return versions


# ----------------------------------------------------------------------------- model input


def to_model_input(X):
    """The frame the logged model's signature describes: what pyfunc expects.

    pandas nullable columns are cast to what Spark and JSON requests deliver:
    nullable integers and floats (``Int64``, ``Float32``, ...) become
    ``float64`` with NaN, nullable booleans and ``string`` columns become
    ``object`` with None. Other columns are unchanged; the input is not
    modified. MLflow's signature inference and schema enforcement cannot
    handle the nullable extension types. Plain ``int64`` columns stay
    integers (``long`` in the signature, as JSON requests send them); a
    feature that may be missing when scoring should be nullable or float in
    the training frame.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"age": pd.array([1, None], dtype="Int64")})
    >>> to_model_input(frame)["age"].dtype
    dtype('float64')
    """
    import pandas as pd

    out = X.copy()
    for column in out.columns:
        dtype = out[column].dtype
        if isinstance(dtype, (pd.BooleanDtype, pd.StringDtype)):
            values = out[column].astype(object)
            out[column] = values.where(out[column].notna(), None)
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iuf":
            out[column] = out[column].astype("float64")
    return out


def trusted_model_types(model, extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Split the types of a skops-serialized model into trusted and untrusted.

    Trusted: this package's own types, scikit-learn's, numpy dtypes, and the
    names in ``extra`` (exact, or ``package.*`` for a whole package).

    Returns
    -------
    trusted, untrusted : list of str
        ``untrusted`` must be empty to log the model.
    """
    import skops.io

    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    prefixes = BUILTIN_TRUSTED_PREFIXES + tuple(name[:-1] for name in extra
                                                if name.endswith(".*"))
    exact = set(BUILTIN_TRUSTED_TYPES) | {name for name in extra if not name.endswith(".*")}
    trusted = [name for name in found if name in exact or name.startswith(prefixes)]
    untrusted = [name for name in found if name not in trusted]
    return trusted, untrusted


def _pip_requirements(type_names: list[str]) -> list[str]:
    from importlib import metadata

    packages = ["mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy"]
    for name in type_names:
        top = name.split(".")[0]
        if top in _PIP_NAMES and _PIP_NAMES[top] not in packages:
            packages.append(_PIP_NAMES[top])
    pinned = []
    for package in packages:
        try:
            pinned.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pinned.append(package)
    return pinned


def _find_pipeline(model, depth: int = 0):
    """The fitted sklearn Pipeline inside ``model``: itself, or inside a calibration wrapper.

    Fitted attributes (``calibrator_``, ``calibrated_classifiers_``, ...) are
    searched before constructor parameters, which hold unfitted templates.
    """
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if model is None or depth > 5:
        return None
    if hasattr(model, "named_steps"):
        try:
            check_is_fitted(model)
        except (NotFittedError, TypeError):
            return None
        return model
    inner = [getattr(model, name, None) for name in
             ("pipeline_", "calibrator_", "estimator_", "best_estimator_")]
    inner += list(getattr(model, "calibrated_classifiers_", None) or [])[:1]
    inner += [getattr(model, name, None) for name in ("estimator", "base_estimator", "model")]
    for candidate in inner:
        if candidate is not None and candidate is not model:
            found = _find_pipeline(candidate, depth + 1)
            if found is not None:
                return found
    return None


# ----------------------------------------------------------------------------- the tracker


@dataclass(frozen=True)
class RunContext:
    """Picklable coordinates of a run, for child runs in other threads or processes."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    timeout_s: float = 10.0


class Tracker:
    """One active MLflow run of a workflow. Create it with :func:`start_tracking`.

    Attributes
    ----------
    run_id : str
    experiment_id : str
    tracking_uri : str
    spec : MLflowSpec
    status : str or None
        The final status once :meth:`end` ran.
    """

    def __init__(self, spec: MLflowSpec, *, tracking_uri: str, run_id: str, experiment_id: str,
                 restore_env: Mapping[str, str | None], previous_tracking_uri: str | None):
        self.spec = spec
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.status: str | None = None
        self._restore_env = dict(restore_env)
        self._previous_tracking_uri = previous_tracking_uri
        self._lock = threading.Lock()

    @property
    def context(self) -> RunContext:
        return RunContext(self.tracking_uri, self.experiment_id, self.run_id,
                          self.spec.timeout_s)

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    # -- logging helpers (all through the client, with this run's id: safe from any thread)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (keys sanitized, values redacted and truncated), in batches of 100."""
        from mlflow.entities import Param

        items = [Param(_param_key(str(k)), _param_value(redact(v, key=k)))
                 for k, v in params.items()]
        client = self._client()
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=items[start:start + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log finite numeric metrics; others are skipped with a debug message."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = []
        for name, value in metrics.items():
            number = _finite(value)
            if number is None:
                logger.debug("metric %s=%r is not a finite number; not logged", name, value)
                continue
            items.append(Metric(_param_key(name), number, stamp, step))
        self._log_metric_entities(items)

    def _log_metric_entities(self, items) -> None:
        client = self._client()
        for start in range(0, len(items), _METRICS_PER_BATCH):
            client.log_batch(self.run_id, metrics=items[start:start + _METRICS_PER_BATCH])

    # -- step 7

    def log_results(self, results: Mapping[str, Any], *, X_sample, output_dir,
                    y_sample=None) -> dict[str, Any]:
        """Log what the workflow produced to this run (step 7).

        Parameters
        ----------
        results : mapping
            The workflow results: ``pipeline``, ``metrics`` (name ->
            ``{"mean", "std", "folds"}`` or ``{"value"}``), ``tuning_summary``
            (None or with ``best_score``), ``calibration_summary`` (None or
            with ``before``/``after`` metric dicts), ``timings`` (step ->
            seconds), ``data`` (lineage: ``location``, ``delta_version``,
            ``row_count``, ``feature_lookups``, ...), ``summary_text``,
            ``artifacts`` (name -> PNG path, e.g. reliability diagram, tuning
            history), ``task``, ``primary_metric`` and optionally
            ``evaluation`` (``y_true``, ``y_pred``, ``y_proba``, ``classes``,
            ``description``: held-out or out-of-fold predictions for plots).
        X_sample : pandas.DataFrame
            Training rows (a few hundred are plenty) for the model signature,
            input example and dataset schema.
        output_dir : path
            Where plot files are written before upload.
        y_sample : array-like, optional
            Labels of ``X_sample``; plots are drawn on them (marked in-sample)
            when ``results`` has no ``evaluation``.

        Returns
        -------
        dict
            ``run_id``, ``model_uri``, ``model_version``, ``registered_model_name``,
            ``model_alias``, and ``warnings`` (optional parts that failed).

        Raises
        ------
        ModelLoggingError
            The model holds types nobody declared trusted, or its signature is
            missing after logging.
        TrackingError
            The tracking backend failed (cause chained).

        Examples
        --------
        >>> with ensure_run_ends(tracker):                      # doctest: +SKIP
        ...     logged = tracker.log_results(results, X_sample=X.head(200), output_dir="out")
        """
        errors = _tracking_errors()
        outcome: dict[str, Any] = {"run_id": self.run_id, "model_uri": None,
                                   "model_version": None, "registered_model_name": None,
                                   "model_alias": None, "warnings": []}
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._log_model_params(results)
            self._log_result_metrics(results)
            self._log_result_artifacts(results)
        except errors as exc:
            raise TrackingError(f"MLflow tracking: logging results to run {self.run_id} "
                                f"failed: {exc}") from exc
        optional = [("data lineage", lambda: self._log_lineage(results, X_sample))]
        if self.spec.log_plots:
            optional.append(("plots", lambda: self._log_plots(results, X_sample, y_sample,
                                                              output_dir)))
        for what, log in optional:
            try:
                log()
            except (*errors, ValueError, TypeError, KeyError) as exc:
                message = f"MLflow tracking: {what} not logged: {exc}"
                logger.warning(message)
                outcome["warnings"].append(message)
        if self.spec.log_model and results.get("pipeline") is not None:
            try:
                outcome.update(self._log_model(results, X_sample))
            except ModelLoggingError:
                raise
            except errors as exc:
                raise ModelLoggingError(f"MLflow tracking: logging the model to run "
                                        f"{self.run_id} failed: {exc}") from exc
        return outcome

    def _log_model_params(self, results: Mapping[str, Any]) -> None:
        pipeline = _find_pipeline(results.get("pipeline"))
        estimator = pipeline.named_steps.get("model") if pipeline is not None else None
        if estimator is None:
            estimator = results.get("pipeline")
        if estimator is None or not hasattr(estimator, "get_params"):
            return
        params = {f"final_model.{k}": v for k, v in estimator.get_params(deep=False).items()
                  if not hasattr(v, "get_params")}
        params["final_model.class"] = f"{type(estimator).__module__}.{type(estimator).__name__}"
        outer = results.get("pipeline")
        if outer is not estimator and outer is not pipeline:
            params["final_model.wrapper"] = f"{type(outer).__module__}.{type(outer).__name__}"
        # "<step>_result." keeps what a step decided apart from the spec's own "<step>." params
        # (e.g. calibration.ensemble: auto in the spec, calibration_result.ensemble: True).
        for prefix, summary, keys in (
                ("tuning_result", results.get("tuning_summary"),
                 ("backend", "algo", "metric", "stop_reason", "status")),
                ("calibration_result", results.get("calibration_summary"),
                 ("method", "decision", "cv", "ensemble", "status"))):
            if isinstance(summary, Mapping):
                params.update({f"{prefix}.{key}": summary[key] for key in keys
                               if summary.get(key) is not None})
                if prefix == "tuning_result" and isinstance(summary.get("best_params"), Mapping):
                    params.update({f"tuning_result.best_params.{k}": v
                                   for k, v in summary["best_params"].items()})
        self.log_params(params)

    def _log_result_metrics(self, results: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = []

        def add(name, value, step=0):
            number = _finite(value)
            if number is not None:
                items.append(Metric(_param_key(name), number, stamp, step))

        for name, values in (results.get("metrics") or {}).items():
            if not isinstance(values, Mapping):
                add(name, values)
                continue
            add(name, values.get("mean", values.get("value")))
            add(f"{name}_std", values.get("std"))
            for step, fold_value in enumerate(values.get("folds") or []):
                add(f"{name}_fold", fold_value, step)
        if results.get("cv_score") is not None and results.get("primary_metric") is None:
            add("cv_score", results["cv_score"])
        tuning = results.get("tuning_summary") or {}
        if isinstance(tuning, Mapping):
            for key in ("best_score", "n_trials", "trials_run", "trials_ok", "trials_failed",
                        "wall_time_s"):
                add(f"tuning/{key}", tuning.get(key))
            trials = tuning.get("trials") or tuning.get("history") or []
            for index, trial in enumerate(trials):
                score = trial.get("score") if isinstance(trial, Mapping) else trial
                number = trial.get("number", index) if isinstance(trial, Mapping) else index
                add("tuning/trial_score", score, int(number) if _finite(number) is not None
                    else index)
        calibration = results.get("calibration_summary") or {}
        if isinstance(calibration, Mapping):
            for when in ("before", "after"):
                values = calibration.get(when, calibration.get(f"metrics_{when}")) or {}
                for name, value in _flat_numbers(values).items():
                    add(f"calibration/{when}/{name}", value)
        for step_name, seconds in (results.get("timings") or {}).items():
            add(f"timing/{step_name}_s", seconds)
        self._log_metric_entities(items)
        tags = {"orchestrator.task": results.get("task"),
                "orchestrator.primary_metric": results.get("primary_metric")}
        client = self._client()
        for key, value in tags.items():
            if value is not None:
                client.set_tag(self.run_id, key, str(value))

    def _log_result_artifacts(self, results: Mapping[str, Any]) -> None:
        client = self._client()
        for name in ("tuning_summary", "calibration_summary"):
            if isinstance(results.get(name), Mapping):
                client.log_dict(self.run_id, _plain(redact(dict(results[name]))), f"{name}.json")
        summary = results.get("summary_text")
        if summary:
            client.log_text(self.run_id, redact_text(str(summary)), "summary.txt")
        for name, path in (results.get("artifacts") or {}).items():
            if path and Path(path).is_file():
                client.log_artifact(self.run_id, str(path), artifact_path="plots")
            else:
                logger.debug("artifact %s=%r is not a file; not logged", name, path)

    def _log_lineage(self, results: Mapping[str, Any], X_sample) -> None:
        from mlflow.data.delta_dataset_source import DeltaDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.models import infer_signature
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        data = results.get("data")
        if not isinstance(data, Mapping) or not data:
            return
        lineage = _plain(redact(dict(data)))
        client = self._client()
        client.log_dict(self.run_id, lineage, "lineage.json")
        params = {f"data.{key}": lineage[key] for key in
                  ("location", "delta_version", "row_count", "label", "filter", "max_rows")
                  if lineage.get(key) is not None}
        self.log_params(params)
        schema = (infer_signature(to_model_input(X_sample)).inputs if X_sample is not None
                  else None)
        inputs = []
        if data.get("location"):
            inputs.append((_delta_source(DeltaDatasetSource, data["location"],
                                         data.get("delta_version")),
                           "training", data.get("row_count"), schema))
        for lookup in data.get("feature_lookups") or []:
            if isinstance(lookup, Mapping) and (lookup.get("table") or lookup.get("location")):
                location = lookup.get("table") or lookup.get("location")
                inputs.append((_delta_source(DeltaDatasetSource, location,
                                             lookup.get("delta_version", lookup.get("version"))),
                               "feature_lookup", lookup.get("row_count"), None))
        entities = []
        for source, context, rows, dataset_schema in inputs:
            source_json = source.to_json()
            digest = hashlib.sha1(f"{source_json}|{rows}".encode()).hexdigest()[:8]
            name = _dataset_name(source)
            dataset = MetaDataset(source=source, name=name, digest=digest, schema=dataset_schema)
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
            if rows is not None:
                tags.append(InputTag("row_count", str(rows)))
            entities.append(DatasetInput(dataset._to_mlflow_entity(), tags))
        if entities:
            client.log_inputs(self.run_id, datasets=entities)

    def _log_plots(self, results: Mapping[str, Any], X_sample, y_sample, output_dir: Path):
        from orchestrator.tracking import plots

        paths = plots.draw_plots(results, X_sample=X_sample, y_sample=y_sample,
                                 output_dir=output_dir / "mlflow_plots")
        client = self._client()
        for path in paths:
            client.log_artifact(self.run_id, str(path), artifact_path="plots")

    def _log_model(self, results: Mapping[str, Any], X_sample) -> dict[str, Any]:
        """Log the model as a LoggedModel of this run's experiment, then register it.

        Everything goes through this run's client: ``mlflow.sklearn.log_model``
        would create the LoggedModel in the process's *active* experiment
        (Default, unless something set one globally), where ``runs:/<run_id>/model``
        does not look, and would read the global tracking and registry URIs.
        """
        import mlflow.sklearn
        from mlflow.models import Model, infer_signature

        model = results["pipeline"]
        trusted, untrusted = trusted_model_types(model, self.spec.trusted_types)
        if untrusted:
            raise ModelLoggingError(
                "MLflow tracking: the model contains types that are not trusted for safe "
                f"(skops) loading: {', '.join(untrusted)}. If you trust them, list them in "
                "mlflow_spec.trusted_types (e.g. 'xgboost.*'); the model is not pickled instead.")
        sample = to_model_input(X_sample)
        signature = infer_signature(sample, model.predict(sample))
        if signature is None or signature.inputs is None:
            raise ModelLoggingError("MLflow tracking: no model signature could be inferred from "
                                    f"the sample columns {list(sample.columns)}.")
        metadata = {"orchestrator_version": _library_versions()["lib.orchestrator"],
                    "task": str(results.get("task") or "")}
        classes = getattr(model, "classes_", None)
        if classes is not None:
            metadata["classes"] = [_plain(c) for c in classes]
            metadata["probability_method"] = "get_raw_model().predict_proba"
        client = self._client()
        logged_model = self._create_logged_model(client)
        saved = False
        try:
            with tempfile.TemporaryDirectory(prefix="orchestrator-model-") as tmp:
                local_path = Path(tmp) / MODEL_NAME
                mlflow_model = Model(artifact_path=logged_model.artifact_location,
                                     model_uuid=logged_model.model_id, run_id=self.run_id,
                                     metadata=metadata, model_id=logged_model.model_id)
                # Writes MLmodel, the skops file, requirements, input_example.json and
                # serving_input_example.json (what `mlflow models serve` accepts).
                mlflow.sklearn.save_model(
                    model, str(local_path), mlflow_model=mlflow_model,
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                    skops_trusted_types=trusted or None,
                    signature=signature,
                    input_example=sample.head(5),
                    pip_requirements=_pip_requirements(trusted),
                    pyfunc_predict_fn="predict",
                )
                if mlflow_model.signature is None or mlflow_model.signature.inputs is None:
                    raise ModelLoggingError("MLflow tracking: the saved model has no signature; "
                                            "it was not logged.")
                client.log_model_artifacts(logged_model.model_id, str(local_path))
            saved = True
        finally:
            if not saved:  # failed or interrupted: not left PENDING
                with contextlib.suppress(*_tracking_errors()):
                    client.finalize_logged_model(logged_model.model_id, "FAILED")
        client.finalize_logged_model(logged_model.model_id, "READY")
        model_uri = f"models:/{logged_model.model_id}"
        logged: dict[str, Any] = {"model_uri": model_uri}
        if self.spec.registered_model_name:
            version = self._register(client, logged_model.model_id)
            logged.update(model_version=version,
                          registered_model_name=self.spec.registered_model_name)
            if self.spec.model_alias:
                client.set_registered_model_alias(self.spec.registered_model_name,
                                                  self.spec.model_alias, version)
                logged["model_alias"] = self.spec.model_alias
            client.set_tag(self.run_id, "orchestrator.model_version",
                           f"{self.spec.registered_model_name}/{version}")
        logger.info("MLflow: model logged to %s (runs:/%s/%s)%s", model_uri, self.run_id,
                    MODEL_NAME, f" (registered {self.spec.registered_model_name} "
                    f"v{logged['model_version']})" if logged.get("model_version") else "")
        return logged

    def _create_logged_model(self, client):
        """A PENDING LoggedModel named ``model`` in this run's experiment, linked to the run.

        The experiment is the run's, explicitly: ``runs:/<run_id>/model`` is
        resolved by searching the run's experiment for a model of that name
        whose source run is this one. Like ``log_model``, the model carries the
        run's params (already redacted) and is recorded as the run's output.
        """
        from mlflow.entities import LoggedModelOutput

        params = client.get_run(self.run_id).data.params
        logged_model = client.create_logged_model(
            experiment_id=self.experiment_id, name=MODEL_NAME, source_run_id=self.run_id,
            params={key: str(value) for key, value in params.items()})
        client.log_outputs(self.run_id, [LoggedModelOutput(logged_model.model_id, step=0)])
        return logged_model

    def _register(self, client, model_id: str) -> str:
        """Register ``models:/<model_id>`` as a new version; wait until it is READY."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import (
            ALREADY_EXISTS,
            RESOURCE_ALREADY_EXISTS,
            ErrorCode,
        )

        name = self.spec.registered_model_name
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            # Existing already (an earlier run, or a concurrent job): add a version to it.
            if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
                                      ErrorCode.Name(ALREADY_EXISTS)):
                raise
        version = client.create_model_version(
            name, source=f"models:/{model_id}", run_id=self.run_id, model_id=model_id,
            await_creation_for=max(1, math.ceil(self.spec.timeout_s)))
        return str(version.version)

    # -- ending

    def guard(self, *, handle_signals: bool = True):
        """``with tracker.guard():`` is :func:`ensure_run_ends` for this tracker."""
        return ensure_run_ends(self, handle_signals=handle_signals)

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED); later calls do nothing.

        A tracking failure here is logged, not raised, so it never hides the
        workflow's own outcome.
        """
        import mlflow

        if status not in RUN_STATUSES:
            raise ValueError(f"run status: expected one of {', '.join(RUN_STATUSES)}, "
                             f"got {status!r}.")
        with self._lock:
            if self.status is not None:
                return
            self.status = status
        try:
            self._client().set_terminated(self.run_id, status)
            logger.info("MLflow: run %s ended %s", self.run_id, status)
        except _tracking_errors() as exc:
            logger.warning("MLflow tracking: could not mark run %s as %s: %s", self.run_id,
                           status, exc)
        finally:
            _set_env(self._restore_env)
            # None unsets the global URI and $MLFLOW_TRACKING_URI that set_tracking_uri exported.
            mlflow.set_tracking_uri(self._previous_tracking_uri)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flat_numbers(values: Any, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    if isinstance(values, Mapping):
        for key, value in values.items():
            flat.update(_flat_numbers(value, f"{prefix}{key}" if not prefix
                                      else f"{prefix}/{key}"))
    elif _finite(values) is not None and prefix:
        flat[prefix] = _finite(values)
    return flat


def _delta_source(source_class, location: str, version: Any):
    version = int(version) if _finite(version) is not None else None
    if "/" in location or ":" in location:
        return source_class(path=location, delta_table_version=version)
    return source_class(delta_table_name=location, delta_table_version=version)


def _dataset_name(source) -> str:
    name = getattr(source, "delta_table_name", None) or getattr(source, "path", None) or "data"
    return str(name).rstrip("/").split("/")[-1] or str(name)


# ----------------------------------------------------------------------------- starting


def start_tracking(spec: MLflowSpec, *, resolved_config: Mapping[str, Any]) -> Tracker:
    """Check the tracking server (bounded by ``spec.timeout_s``) and start the run.

    The run gets the spec's experiment, run name and tags; the resolved config
    is logged as params (flattened) and as ``config/resolved_config.yaml``,
    secrets redacted in both, with the library versions.

    Parameters
    ----------
    spec : MLflowSpec
    resolved_config : mapping
        Every spec as the job ran it (after defaults and ``${VAR}``
        substitution).

    Returns
    -------
    Tracker
        The active run; end it through :func:`ensure_run_ends` (or
        :meth:`Tracker.end`).

    Raises
    ------
    TrackingUnavailableError
        The server is unreachable, hangs, or refuses the run; raised within
        about ``spec.timeout_s`` (each later call is bounded too).

    Examples
    --------
    >>> tracker = start_tracking(spec, resolved_config=config)  # doctest: +SKIP
    >>> tracker.run_id                                          # doctest: +SKIP
    '3f2a...'
    """
    tracking_uri = resolve_tracking_uri(spec)
    shown = redact_text(tracking_uri)
    started = time.monotonic()
    # Checked before importing mlflow, so an unreachable server is reported in ~timeout_s.
    check_tracking_reachable(tracking_uri, spec.timeout_s)
    import mlflow
    import yaml

    restore_env = _set_env(_bounded_http_env(spec.timeout_s))
    previous_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    errors = _tracking_errors()
    run_id = None
    try:
        mlflow.set_tracking_uri(tracking_uri)
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment_id = _experiment_id(client, spec.experiment_name)
        tags = {**redact(dict(spec.tags)), "orchestrator.version": _library_versions()[
            "lib.orchestrator"]}
        # The run name is shown everywhere (UI, search, emails): redacted like params and
        # tags. Experiment and registered model names are identifiers and are not altered.
        run = client.create_run(experiment_id, run_name=redact_text(spec.run_name),
                                tags=tags)
        run_id = run.info.run_id
        tracker = Tracker(spec, tracking_uri=tracking_uri, run_id=run_id,
                          experiment_id=experiment_id, restore_env=restore_env,
                          previous_tracking_uri=previous_uri)
        tracker.log_params({**flatten_params(resolved_config), **_library_versions()})
        client.log_text(run_id, yaml.safe_dump(_plain(redact(dict(resolved_config))),
                                               sort_keys=False),
                        "config/resolved_config.yaml")
    except errors as exc:
        if run_id is not None:
            with contextlib.suppress(*errors):
                mlflow.MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, "FAILED")
        _set_env(restore_env)
        mlflow.set_tracking_uri(previous_uri)
        raise TrackingUnavailableError(f"MLflow tracking: could not start a run at {shown}: "
                                       f"{redact_text(str(exc))}") from exc
    logger.info("MLflow: run %s started in experiment %s at %s (%.1f s)", run_id, experiment_id,
                shown, time.monotonic() - started)
    return tracker


def _experiment_id(client, name: str | None) -> str:
    from mlflow.exceptions import MlflowException

    if name is None:
        # What mlflow.start_run would use: $MLFLOW_EXPERIMENT_NAME/_ID, the notebook's
        # experiment on Databricks, else the Default experiment.
        from mlflow.tracking.fluent import _get_experiment_id

        return _get_experiment_id()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        # Created meanwhile by a concurrent job.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# ----------------------------------------------------------------------------- run status


@contextlib.contextmanager
def ensure_run_ends(tracker: Tracker | None, *, handle_signals: bool = True) -> Iterator[None]:
    """End the run however the block exits: FINISHED, FAILED or KILLED.

    Exceptions propagate unchanged. On SIGTERM or SIGINT (when this runs in
    the main thread and the signal's handler is Python's default) the block
    is interrupted (``SystemExit(143)`` for SIGTERM, ``KeyboardInterrupt``
    for SIGINT), the run is marked KILLED, and the previous handlers are
    restored on the way out. A ``None`` tracker (tracking off or unavailable)
    makes this a no-op.

    Examples
    --------
    >>> tracker = None
    >>> try:                                                   # doctest: +SKIP
    ...     tracker = start_tracking(specs.mlflow, resolved_config=config)
    ... except TrackingUnavailableError as exc:
    ...     record_warning(exc)
    >>> with ensure_run_ends(tracker):                         # doctest: +SKIP
    ...     ...  # steps 3-7
    """
    if tracker is None:
        yield
        return
    received: list[int] = []
    previous: dict[int, Any] = {}

    def on_signal(signum, frame):
        received.append(signum)
        logger.warning("MLflow: %s received; marking run %s KILLED",
                       signal.Signals(signum).name, tracker.run_id)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    if handle_signals and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(signum)
            # Leave ignored signals and other code's handlers alone.
            if current in (signal.SIG_DFL, signal.default_int_handler, None):
                previous[signum] = current
                signal.signal(signum, on_signal)
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if received:
            status = "KILLED"
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        tracker.end(status)


# ----------------------------------------------------------------------------- child runs


@dataclass
class ChildRun:
    """A nested run (e.g. one tuning trial); logging failures are logged, never raised."""

    run_id: str | None = None
    _context: RunContext | None = field(default=None, repr=False)
    _disabled: bool = field(default=False, repr=False)

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self._context.tracking_uri)

    def _guard(self, what: str, action) -> None:
        if self.run_id is None or self._disabled:
            return
        try:
            action(self._client())
        except _tracking_errors() as exc:
            self._disabled = True
            logger.warning("MLflow: child run %s: %s failed (%s); no more logging to it",
                           self.run_id, what, exc)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_param_key(str(k)), _param_value(redact(v, key=k)))
                 for k, v in params.items()]
        self._guard("log_params", lambda c: [
            c.log_batch(self.run_id, params=items[i:i + _PARAMS_PER_BATCH])
            for i in range(0, len(items), _PARAMS_PER_BATCH)])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(_param_key(k), _finite(v), stamp, step) for k, v in metrics.items()
                 if _finite(v) is not None]
        self._guard("log_metrics", lambda c: c.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(_param_key(str(k)), str(redact(v, key=k))) for k, v in tags.items()]
        self._guard("set_tags", lambda c: c.log_batch(self.run_id, tags=items))


@contextlib.contextmanager
def child_run(parent: Tracker | RunContext | None, name: str, *,
              params: Mapping[str, Any] | None = None) -> Iterator[ChildRun]:
    """A child run of ``parent`` (e.g. one tuning trial), usable from any thread.

    Parameters
    ----------
    parent : Tracker, RunContext or None
        The parent run; pass ``tracker.context`` to code that is pickled to
        other processes. None yields a child that logs nothing, so callers
        need no ``if tracking`` branches.
    name : str
        The child run's name, e.g. ``"trial-007"``.
    params : mapping, optional
        Params logged when the child starts.

    Yields
    ------
    ChildRun
        With ``log_params``, ``log_metrics``, ``set_tags``. It ends FINISHED,
        FAILED (the block raised) or KILLED (interrupted). Tracking failures
        are logged as warnings and never raised.

    Examples
    --------
    >>> with child_run(tracker, "trial-3", params={"model__C": 0.1}) as trial:  # doctest: +SKIP
    ...     trial.log_metrics({"loss": 0.21})
    """
    context = parent.context if isinstance(parent, Tracker) else parent
    if context is None:
        yield ChildRun()
        return
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    # In executor processes nothing has bounded MLflow's retries yet.
    for variable, value in _bounded_http_env(context.timeout_s).items():
        os.environ.setdefault(variable, value)
    child = ChildRun(_context=context)
    try:
        run = MlflowClient(tracking_uri=context.tracking_uri).create_run(
            context.experiment_id, run_name=redact_text(name),
            tags={MLFLOW_PARENT_RUN_ID: context.run_id})
        child.run_id = run.info.run_id
    except _tracking_errors() as exc:
        logger.warning("MLflow: child run %r of %s not created (%s); continuing without it",
                       name, context.run_id, exc)
    if params:
        child.log_params(params)
    status = "FAILED"
    try:
        yield child
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if child.run_id is not None:
            try:
                child._client().set_terminated(child.run_id, status)
            except _tracking_errors() as exc:
                logger.warning("MLflow: child run %s not marked %s: %s", child.run_id, status,
                               exc)
