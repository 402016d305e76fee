"""Step 7's run: start it, log to it through a client bound to its URI, always end it.

* :func:`start_tracking` checks, within ``spec.timeout_s``, that the tracking
  server answers, then starts the run and logs the resolved config (secrets
  redacted), the library versions and the tags. An unreachable or hanging
  server raises :class:`TrackingUnavailableError` quickly; the workflow then
  trains without tracking.
* :func:`ensure_run_ends` wraps the workflow's steps so that the run ends
  FINISHED on success, FAILED when a step raises and KILLED when interrupted,
  never left RUNNING.
* :meth:`Tracker.log_results` logs what the run produced: metrics (per-fold
  values as steps), model parameters, data lineage, plots, artifacts, and the
  model itself (:mod:`orchestrator.tracking.model_logging`).

Every call goes through ``MlflowClient(tracking_uri=...)``: no global tracking
URI, environment variable or signal handler is set here, so two workflows in
two threads of one process track to their own stores.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ModelLoggingError, TrackingError, TrackingUnavailableError
from orchestrator.redaction import redact, redact_text
from orchestrator.results import WorkflowResult, as_workflow_result
from orchestrator.specs.mlflow import MLflowSpec
from orchestrator.tracking.lineage import log_lineage
from orchestrator.tracking.model_logging import find_pipeline, log_model
from orchestrator.tracking.params import (
    finite_number,
    flat_numbers,
    flatten_params,
    library_versions,
    param_key,
    param_value,
    yaml_safe,
)
from orchestrator.tracking.uri import (
    check_tracking_reachable,
    client_for,
    resolve_tracking_uri,
    tracking_errors,
)

logger = logging.getLogger(__name__)

__all__ = ["ChildRun", "RunContext", "Tracker", "child_run", "ensure_run_ends", "start_tracking"]

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_PARENT_RUN_TAG = "mlflow.parentRunId"


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

    def __init__(self, spec: MLflowSpec, *, tracking_uri: str, run_id: str, experiment_id: str):
        self.spec = spec
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.status: str | None = None
        #: Why :meth:`end` could not end the run (with the command that ends it), or None.
        self.end_error: str | None = None
        self._lock = threading.Lock()

    @property
    def context(self) -> RunContext:
        return RunContext(self.tracking_uri, self.experiment_id, self.run_id,
                          self.spec.timeout_s)

    def client(self):
        """An ``MlflowClient`` bound to this run's tracking URI (no global state is read)."""
        return client_for(self.tracking_uri)

    # -- logging helpers (all through the client, with this run's id: safe from any thread)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (keys sanitized, values redacted and truncated), in batches of 100."""
        from mlflow.entities import Param

        items = [Param(param_key(str(k)), param_value(redact(v, key=k)))
                 for k, v in params.items()]
        client = self.client()
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=items[start:start + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log finite numeric metrics; others are skipped with a debug message."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = []
        for name, value in metrics.items():
            number = finite_number(value)
            if number is None:
                logger.debug("metric %s=%r is not a finite number; not logged", name, value)
                continue
            items.append(Metric(param_key(name), number, stamp, step))
        self._log_metric_entities(items)

    def _log_metric_entities(self, items) -> None:
        client = self.client()
        for start in range(0, len(items), _METRICS_PER_BATCH):
            client.log_batch(self.run_id, metrics=items[start:start + _METRICS_PER_BATCH])

    # -- step 7

    def log_results(self, results: WorkflowResult | Mapping[str, Any], *, X_sample, output_dir,
                    y_sample=None) -> dict[str, Any]:
        """Log what the workflow produced to this run (step 7).

        Parameters
        ----------
        results : WorkflowResult or mapping of its fields
            The workflow results: ``pipeline``, ``metrics`` (name ->
            ``{"mean", "std", "folds"}`` or ``{"value"}``), ``tuning_summary``
            (None or with ``best_score``), ``calibration_summary`` (None or
            with ``metrics_before``/``metrics_after``), ``timings`` (step ->
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
        results = as_workflow_result(results)
        errors = tracking_errors()
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
        optional = [("data lineage", lambda: log_lineage(self, results, X_sample))]
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
        if self.spec.log_model and results.pipeline is not None:
            try:
                outcome.update(log_model(self, results, X_sample))
            except ModelLoggingError:
                raise
            except errors as exc:
                raise ModelLoggingError(f"MLflow tracking: logging the model to run "
                                        f"{self.run_id} failed: {exc}") from exc
        return outcome

    def _log_model_params(self, results: WorkflowResult) -> None:
        outer = results.pipeline
        pipeline = find_pipeline(outer)
        estimator = pipeline.named_steps.get("model") if pipeline is not None else None
        if estimator is None:
            estimator = outer
        if estimator is None or not hasattr(estimator, "get_params"):
            return
        params = {f"final_model.{k}": v for k, v in estimator.get_params(deep=False).items()
                  if not hasattr(v, "get_params")}
        params["final_model.class"] = f"{type(estimator).__module__}.{type(estimator).__name__}"
        if outer is not estimator and outer is not pipeline:
            params["final_model.wrapper"] = f"{type(outer).__module__}.{type(outer).__name__}"
        # "<step>_result." keeps what a step decided apart from the spec's own "<step>." params
        # (e.g. calibration.ensemble: auto in the spec, calibration_result.ensemble: True).
        # ``get`` because "ensemble" is a key a step adds (the summary's ``extra``).
        for prefix, summary, keys in (
                ("tuning_result", results.tuning_summary,
                 ("backend", "algo", "metric", "stop_reason", "status")),
                ("calibration_result", results.calibration_summary,
                 ("method", "decision", "cv", "ensemble", "status"))):
            if summary is not None:
                params.update({f"{prefix}.{key}": summary.get(key) for key in keys
                               if summary.get(key) is not None})
        tuning = results.tuning_summary
        if tuning is not None and isinstance(tuning.best_params, Mapping):
            params.update({f"tuning_result.best_params.{k}": v
                           for k, v in tuning.best_params.items()})
        params.update(validation_params(results.validation_details))
        weights = (results.data or {}).get("sample_weight")
        if weights:  # which rows' weights every fit and score used
            params["training.sample_weight"] = weights
        self.log_params(params)

    def _log_result_metrics(self, results: WorkflowResult) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = []

        def add(name, value, step=0):
            number = finite_number(value)
            if number is not None:
                items.append(Metric(param_key(name), number, stamp, step))

        for name, values in (results.metrics or {}).items():
            if not isinstance(values, Mapping):
                add(name, values)
                continue
            add(name, values.get("mean", values.get("value")))
            add(f"{name}_std", values.get("std"))
            for step, fold_value in enumerate(values.get("folds") or []):
                add(f"{name}_fold", fold_value, step)
        if results.cv_score is not None and results.primary_metric is None:
            add("cv_score", results.cv_score)
        tuning = results.tuning_summary
        if tuning is not None:
            for key in ("best_score", "trials_run", "trials_ok", "trials_failed",
                        "wall_time_s"):
                add(f"tuning/{key}", getattr(tuning, key))
            for index, trial in enumerate(tuning.trials or []):
                score = trial.get("score") if isinstance(trial, Mapping) else trial
                number = trial.get("number", index) if isinstance(trial, Mapping) else index
                add("tuning/trial_score", score, int(number) if finite_number(number) is not None
                    else index)
        calibration = results.calibration_summary
        if calibration is not None:
            for when, values in (("before", calibration.metrics_before),
                                 ("after", calibration.metrics_after)):
                for name, value in flat_numbers(values or {}).items():
                    add(f"calibration/{when}/{name}", value)
        details = results.validation_details or {}
        for fold in details.get("nested") or [] if isinstance(details, Mapping) else []:
            add("nested/outer_score", fold.get("outer_score"), int(fold.get("fold", 0)))
            add("nested/inner_score", fold.get("inner_score"), int(fold.get("fold", 0)))
        threshold = results.threshold_summary
        if isinstance(threshold, Mapping):
            add("decision_threshold", threshold.get("threshold"))
            add("decision_threshold/cv_score", threshold.get("cv_score"))
        for step_name, seconds in (results.timings or {}).items():
            add(f"timing/{step_name}_s", seconds)
        self._log_metric_entities(items)
        tags = {"orchestrator.task": results.task,
                "orchestrator.primary_metric": results.primary_metric}
        client = self.client()
        for key, value in tags.items():
            if value is not None:
                client.set_tag(self.run_id, key, str(value))

    def _log_result_artifacts(self, results: WorkflowResult) -> None:
        client = self.client()
        if results.validation_details:
            client.log_dict(self.run_id, yaml_safe(redact(dict(results.validation_details))),
                            "validation_details.json")
        for name, summary in (("tuning_summary", results.tuning_summary),
                              ("calibration_summary", results.calibration_summary)):
            if summary is not None:
                client.log_dict(self.run_id, yaml_safe(redact(summary.to_dict())), f"{name}.json")
        if isinstance(results.threshold_summary, Mapping):
            client.log_dict(self.run_id, yaml_safe(dict(results.threshold_summary)),
                            "threshold_summary.json")
        explanations = results.explanations
        if isinstance(explanations, Mapping) and explanations.get("permutation_importance"):
            import pandas as pd

            client.log_table(self.run_id, pd.DataFrame(explanations["permutation_importance"]),
                             "permutation_importance.json")
        if results.summary_text:
            client.log_text(self.run_id, redact_text(str(results.summary_text)), "summary.txt")
        for name, path in (results.artifacts or {}).items():
            if path and Path(path).is_file():
                client.log_artifact(self.run_id, str(path), artifact_path="plots")
            else:
                logger.debug("artifact %s=%r is not a file; not logged", name, path)

    def _log_plots(self, results: WorkflowResult, X_sample, y_sample, output_dir: Path):
        from orchestrator.tracking import plots

        paths = plots.draw_plots(results, X_sample=X_sample, y_sample=y_sample,
                                 output_dir=output_dir / "mlflow_plots")
        client = self.client()
        for path in paths:
            client.log_artifact(self.run_id, str(path), artifact_path="plots")

    def log_report(self, results: WorkflowResult | Mapping[str, Any]) -> None:
        """Log the run's warnings and its self-contained HTML report (``report.html``).

        Called last (after the model and the promotion gate), so the report
        shows everything the run logged; built from the run itself, like
        ``orchestrator report RUN_ID``.
        """
        from orchestrator.tracking.report import REPORT_ARTIFACT, collect_report, render_report

        results = as_workflow_result(results)
        client = self.client()
        warnings = [{"step": w.step, "reason": redact_text(str(w.reason))}
                    for w in results.warnings]
        client.log_dict(self.run_id, warnings, "warnings.json")
        if results.summary_text:  # the final text, with the promotion decision
            client.log_text(self.run_id, redact_text(str(results.summary_text)), "summary.txt")
        client.log_text(self.run_id, render_report(collect_report(client, self.run_id)),
                        REPORT_ARTIFACT)

    # -- ending

    def log_trials(self, trials, *, metric: str) -> str | None:
        """Log tuning trials (``tuning_summary["trials"]``) as child runs of this run.

        Returns None, or a warning when the backend refused them (never raises).
        """
        statuses = {"ok": "FINISHED", "fail": "FAILED", "cancelled": "KILLED"}
        try:
            for trial in trials:
                with child_run(self, f"tuning_trial_{trial['number']:03d}",
                               params=trial.get("params") or {},
                               tags={"tuning.status": trial["status"],
                                     **({"tuning.error": str(trial["error"])[:5000]}
                                        if trial.get("error") else {})},
                               start_ms=trial.get("start_ms"),
                               end_ms=trial.get("end_ms")) as child:
                    child.log_metrics({metric: trial.get("score"),
                                       "trial_duration_s": trial.get("duration_s")})
                    child.status = statuses.get(trial["status"], "FAILED")
        except tracking_errors() as exc:
            logger.warning("MLflow: tuning trials not logged to run %s: %s", self.run_id, exc)
            return f"tuning trials not logged to MLflow: {exc}"
        return None

    def guard(self):
        """``with tracker.guard():`` is :func:`ensure_run_ends` for this tracker."""
        return ensure_run_ends(self)

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED); later calls do nothing.

        A tracking failure here is logged, not raised, so it never hides the
        workflow's own outcome.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"run status: expected one of {', '.join(RUN_STATUSES)}, "
                             f"got {status!r}.")
        with self._lock:
            if self.status is not None:
                return
            self.status = status
        try:
            self.client().set_terminated(self.run_id, status)
            logger.info("MLflow: run %s ended %s", self.run_id, status)
        except tracking_errors() as exc:
            # The server is gone: the run would stay RUNNING. Say exactly how to end it.
            self.end_error = (
                f"could not mark run {self.run_id} as {status} ({redact_text(str(exc))[:200]}); "
                f"it shows RUNNING until ended: once the server is back, run "
                f"{end_run_command(redact_text(self.tracking_uri), self.run_id, status)}")
            logger.warning("MLflow tracking: %s", self.end_error)


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
    # Names are identifiers (redacting one would file the run elsewhere): one that holds
    # something credential-like is refused before anything is sent.
    for key in ("experiment_name", "registered_model_name", "model_alias"):
        name = getattr(spec, key)
        if name and redact_text(name) != name:
            raise TrackingError(f"mlflow_spec.{key} looks like it contains a credential "
                                f"({redact_text(name)!r}); MLflow shows names to everyone "
                                "who can read the experiment, so nothing was sent. Rename it.")
    started = time.monotonic()
    # Checked before importing mlflow, so an unreachable server is reported in ~timeout_s.
    check_tracking_reachable(tracking_uri, spec.timeout_s)
    import yaml

    errors = tracking_errors()
    run_id = None
    client = client_for(tracking_uri)
    try:
        experiment_id = _experiment_id(client, spec.experiment_name)
        tags = {**redact(dict(spec.tags)), "orchestrator.version": library_versions()[
            "lib.orchestrator"]}
        # The run name is shown everywhere (UI, search, emails): redacted like params and
        # tags. Experiment and registered model names are identifiers and are not altered.
        run = client.create_run(experiment_id, run_name=redact_text(spec.run_name),
                                tags=tags)
        run_id = run.info.run_id
        tracker = Tracker(spec, tracking_uri=tracking_uri, run_id=run_id,
                          experiment_id=experiment_id)
        tracker.log_params({**flatten_params(resolved_config), **library_versions()})
        client.log_text(run_id, yaml.safe_dump(yaml_safe(redact(dict(resolved_config))),
                                               sort_keys=False),
                        "config/resolved_config.yaml")
    except errors as exc:
        if run_id is not None:
            with contextlib.suppress(*errors):
                client.set_terminated(run_id, "FAILED")
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


def end_run_command(tracking_uri: str, run_id: str, status: str = "FAILED") -> str:
    """The shell command that ends a run left RUNNING (e.g. by a server that went away).

    Examples
    --------
    >>> print(end_run_command("http://127.0.0.1:5000", "abc"))
    python -c "import mlflow; mlflow.MlflowClient('http://127.0.0.1:5000').set_terminated('abc', 'FAILED')"
    """
    return (f'python -c "import mlflow; mlflow.MlflowClient({tracking_uri!r})'
            f'.set_terminated({run_id!r}, {status!r})"')


@contextlib.contextmanager
def ensure_run_ends(tracker: Tracker | None) -> Iterator[None]:
    """End the run however the block exits: FINISHED, FAILED or KILLED.

    Exceptions propagate unchanged. ``KeyboardInterrupt`` and ``SystemExit``
    (what the entry points' SIGINT and SIGTERM handlers raise, see
    :func:`orchestrator.entrypoints.process.termination_signals_raise`) end the
    run KILLED. Library code installs no signal handlers. A ``None`` tracker
    (tracking off or unavailable) makes this a no-op.

    Examples
    --------
    >>> with ensure_run_ends(tracker):                         # doctest: +SKIP
    ...     ...  # steps 3-7
    """
    if tracker is None:
        yield
        return
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        tracker.end(status)


# ----------------------------------------------------------------------------- child runs


@dataclass
class ChildRun:
    """A nested run (e.g. one tuning trial); logging failures are logged, never raised."""

    run_id: str | None = None
    #: The status to end with when the block exits normally (default FINISHED).
    status: str | None = None
    _context: RunContext | None = field(default=None, repr=False)
    _disabled: bool = field(default=False, repr=False)

    def _client(self):
        return client_for(self._context.tracking_uri)

    def _guard(self, what: str, action) -> None:
        if self.run_id is None or self._disabled:
            return
        try:
            action(self._client())
        except tracking_errors() as exc:
            self._disabled = True
            logger.warning("MLflow: child run %s: %s failed (%s); no more logging to it",
                           self.run_id, what, exc)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(param_key(str(k)), param_value(redact(v, key=k)))
                 for k, v in params.items()]
        self._guard("log_params", lambda c: [
            c.log_batch(self.run_id, params=items[i:i + _PARAMS_PER_BATCH])
            for i in range(0, len(items), _PARAMS_PER_BATCH)])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(param_key(k), finite_number(v), stamp, step) for k, v in metrics.items()
                 if finite_number(v) is not None]
        self._guard("log_metrics", lambda c: c.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(param_key(str(k)), str(redact(v, key=k))) for k, v in tags.items()]
        self._guard("set_tags", lambda c: c.log_batch(self.run_id, tags=items))


@contextlib.contextmanager
def child_run(parent: Tracker | RunContext | None, name: str, *,
              params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
              start_ms: int | None = None, end_ms: int | None = None) -> Iterator[ChildRun]:
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
    tags : mapping, optional
        Tags set when the child starts (redacted).
    start_ms, end_ms : int, optional
        Start and end times (epoch ms) of work that already happened (a trial
        logged after the search); default now.

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
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    child = ChildRun(_context=context)
    try:
        run = client_for(context.tracking_uri).create_run(
            context.experiment_id, run_name=redact_text(name), start_time=start_ms,
            tags={**{str(k): str(v) for k, v in redact(dict(tags or {})).items()},
                  MLFLOW_PARENT_RUN_ID: context.run_id})
        child.run_id = run.info.run_id
    except tracking_errors() as exc:
        logger.warning("MLflow: child run %r of %s not created (%s); continuing without it",
                       name, context.run_id, exc)
    if params:
        child.log_params(params)
    status = "FAILED"
    try:
        yield child
        status = child.status or "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if child.run_id is not None:
            try:
                child._client().set_terminated(child.run_id, status, end_time=end_ms)
            except tracking_errors() as exc:
                logger.warning("MLflow: child run %s not marked %s: %s", child.run_id, status,
                               exc)


def validation_params(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """MLflow params of the validation: split settings, where the folds ran, and each
    nested outer fold's chosen params (``validation_result.nested.fold<i>.<param>``).

    Examples
    --------
    >>> validation_params({"split": {"kind": "time_series", "gap": 2}, "ran": "cluster",
    ...                    "nested": [{"fold": 0, "best_params": {"C": 1.0}}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'validation_result.split.kind': 'time_series', 'validation_result.split.gap': 2,
     'validation_result.ran': 'cluster', 'validation_result.nested.fold0.C': 1.0}
    """
    if not isinstance(details, Mapping):
        return {}
    params = {f"validation_result.split.{k}": v for k, v in (details.get("split") or {}).items()}
    for key in ("ran", "parallelism"):
        if details.get(key) is not None:
            params[f"validation_result.{key}"] = details[key]
    for fold in details.get("nested") or []:
        for name, value in (fold.get("best_params") or {}).items():
            params[f"validation_result.nested.fold{fold.get('fold')}.{name}"] = value
    return params
