"""What the cluster notebooks (``notebooks/``) call, so they hold no logic of their own.

On Databricks a notebook gets ``dbutils`` (widgets, task values) and ``display``
as globals. :func:`notebook_dbutils` returns that ``dbutils`` when it is there and
otherwise a small local stand-in, so the same notebook runs top to bottom on a
laptop or in a test: a widget's value is the environment variable
``ORCHESTRATOR_WIDGET_<NAME>`` when set, else its default; task values are kept
in memory and logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.results import WorkflowResult, as_workflow_result

logger = logging.getLogger(__name__)

__all__ = [
    "LocalDbutils",
    "notebook_dbutils",
    "set_task_value",
    "train_from_config",
    "training_task_values",
    "RunOverview",
    "run_overview",
    "show",
]

WIDGET_ENV_PREFIX = "ORCHESTRATOR_WIDGET_"


class _LocalWidgets:
    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self._values: dict[str, str] = {}

    def _define(self, name: str, default: str) -> None:
        self._values[name] = self._environ.get(WIDGET_ENV_PREFIX + name.upper(), str(default))

    def text(self, name: str, defaultValue: str = "", label: str | None = None) -> None:  # noqa: N803
        self._define(name, defaultValue)

    def dropdown(self, name: str, defaultValue: str, choices: Sequence[str],  # noqa: N803
                 label: str | None = None) -> None:
        self._define(name, defaultValue)
        if self._values[name] not in choices:
            raise ValueError(f"widget {name!r}: expected one of {', '.join(choices)}, got "
                             f"{self._values[name]!r}.")

    def get(self, name: str) -> str:
        if name not in self._values:
            raise ValueError(f"widget {name!r} is not defined; defined: "
                             f"{', '.join(self._values) or '(none)'}.")
        return self._values[name]

    def removeAll(self) -> None:  # noqa: N802 (Databricks' name)
        self._values.clear()


class _LocalTaskValues:
    def __init__(self):
        self.values: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value
        logger.info("task value %s = %r (not on Databricks: kept locally)", key, value)

    def get(self, taskKey: str, key: str, default: Any = None, debugValue: Any = None) -> Any:  # noqa: N803
        return self.values.get(key, debugValue if debugValue is not None else default)


@dataclass
class _LocalJobs:
    taskValues: _LocalTaskValues = field(default_factory=_LocalTaskValues)  # noqa: N815


class LocalDbutils:
    """The part of Databricks' ``dbutils`` the notebooks use: ``widgets`` and ``jobs.taskValues``.

    Parameters
    ----------
    environ : mapping, optional
        Where widget values come from (``ORCHESTRATOR_WIDGET_<NAME>``); default ``os.environ``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        self.widgets = _LocalWidgets(os.environ if environ is None else environ)
        self.jobs = _LocalJobs()


def notebook_dbutils(namespace: MutableMapping[str, Any] | None = None):
    """Databricks' ``dbutils`` when the notebook has one, else a :class:`LocalDbutils`.

    Parameters
    ----------
    namespace : mapping, optional
        The notebook's ``globals()``.

    Examples
    --------
    >>> dbutils = notebook_dbutils(globals())
    >>> dbutils.widgets.text("config", "conf/demo.yml")
    >>> dbutils.widgets.get("config") in ("conf/demo.yml", os.environ.get("ORCHESTRATOR_WIDGET_CONFIG"))
    True
    """
    if namespace is not None and namespace.get("dbutils") is not None:
        return namespace["dbutils"]
    real = _databricks_dbutils()
    return real if real is not None else LocalDbutils()


def _databricks_dbutils():
    from orchestrator.io.session import on_databricks

    if not on_databricks():
        return None
    try:
        from databricks.sdk.runtime import dbutils
    except ImportError:
        return None
    return dbutils


def set_task_value(key: str, value: Any, *, dbutils: Any = None) -> None:
    """Publish a job task value (``dbutils.jobs.taskValues.set``) for later tasks.

    On Databricks this is what ``{{tasks.<task>.values.<key>}}`` reads in a
    later task's parameters. ``dbutils`` is the notebook's (or a
    :class:`LocalDbutils`); without one, Databricks' own, else the value is
    only logged.
    """
    if value is None:
        return
    dbutils = dbutils if dbutils is not None else _databricks_dbutils()
    if dbutils is None:
        logger.info("task value %s = %r (not on Databricks: not published)", key, value)
        return
    dbutils.jobs.taskValues.set(key, value)


def training_task_values(results: WorkflowResult | Mapping[str, Any]) -> dict[str, Any]:
    """The task values a train task publishes: run id, model URI, registered name and version.

    Examples
    --------
    >>> training_task_values({"mlflow_run_id": "r1", "mlflow_model": {"model_version": "3",
    ...     "registered_model_name": "churn", "model_uri": "models:/m-1"}})
    {'run_id': 'r1', 'model_uri': 'models:/m-1', 'model_name': 'churn', 'model_version': '3'}
    """
    results = as_workflow_result(results)
    logged = results.mlflow_model or {}
    values = {"run_id": results.mlflow_run_id, "model_uri": logged.get("model_uri"),
              "model_name": logged.get("registered_model_name"),
              "model_version": logged.get("model_version")}
    return {key: value for key, value in values.items() if value is not None}


def train_from_config(config_path: str, *, spark=None, output_dir: str | None = None,
                      publish: bool = True, dbutils: Any = None):
    """Validate and run the workflow a job config describes; return its results.

    The notebook and the CLI (``orchestrator run``) do the same thing. When
    ``publish`` is true, :func:`training_task_values` are set as task values
    through ``dbutils`` (the notebook's; Databricks' own when None).

    Parameters
    ----------
    config_path : str
    spark : SparkSession, optional
        Default: the active one (a new local one when none is active).
    output_dir : str, optional
        Overrides the config's ``output_dir``.

    Returns
    -------
    dict
        The workflow results (see :func:`orchestrator.run_ml_workflow`).

    Raises
    ------
    SpecError
        The config is invalid (every problem at once).
    """
    from orchestrator.entrypoints.training import run_config

    results = run_config(config_path, spark=spark, output_dir=output_dir)
    if publish:
        for key, value in training_task_values(results).items():
            set_task_value(key, value, dbutils=dbutils)
    return results


@dataclass(frozen=True)
class RunOverview:
    """A finished MLflow run, ready to display.

    Attributes
    ----------
    run_id, status, experiment_id : str
    params, metrics, tags : pandas.DataFrame
        One row per key (``key``, ``value``), sorted by key.
    artifacts : list of str
        Artifact paths (recursive).
    model_uri : str or None
        ``models:/<model_id>`` of the model the run logged, if any.
    registered_versions : list of str
        ``name/version`` of the registry versions made from this run.
    """

    run_id: str
    status: str
    experiment_id: str
    params: Any
    metrics: Any
    tags: Any
    artifacts: list[str]
    model_uri: str | None
    registered_versions: list[str]


def run_overview(run_id: str | None, *, experiment_name: str | None = None,
                 tracking_uri: str | None = None) -> RunOverview:
    """Collect a finished run's params, metrics, tags, artifacts and model.

    Parameters
    ----------
    run_id : str or None
        None: the latest FINISHED run of ``experiment_name``.
    experiment_name : str, optional
        Used only when ``run_id`` is None.
    tracking_uri : str, optional
        Default: MLflow's current tracking URI.

    Returns
    -------
    RunOverview

    Raises
    ------
    OrchestratorError
        No such run (or experiment, or finished run in it) in the store.
    """
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from orchestrator.errors import OrchestratorError

    from orchestrator.tracking.uri import client_for

    client = client_for(tracking_uri) if tracking_uri else MlflowClient()
    if run_id is None:
        run_id = _latest_finished_run(client, experiment_name, tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise OrchestratorError(f"MLflow run {run_id!r} not found at "
                                f"{tracking_uri or 'the current tracking URI'}: "
                                f"{exc.message.splitlines()[0]}") from exc

    def frame(mapping: Mapping[str, Any]):
        rows = sorted(mapping.items())
        return pd.DataFrame(rows, columns=["key", "value"])

    artifacts: list[str] = []
    pending = [None]
    while pending:
        for info in client.list_artifacts(run_id, pending.pop()):
            (pending.append(info.path) if info.is_dir else artifacts.append(info.path))
    # MLflow 3 records the models a run logged as its outputs (LoggedModel ids).
    outputs = getattr(run, "outputs", None)
    model_ids = [m.model_id for m in (getattr(outputs, "model_outputs", None) or [])]
    if not model_ids:
        model_ids = [m.model_id for m in client.search_logged_models(
            experiment_ids=[run.info.experiment_id]) if m.source_run_id == run_id]
    try:
        versions = [f"{v.name}/{v.version}" for v in client.search_model_versions(
            f"run_id = '{run_id}'")]
    except MlflowException:
        versions = []
    return RunOverview(run_id=run_id, status=run.info.status,
                       experiment_id=run.info.experiment_id, params=frame(run.data.params),
                       metrics=frame(run.data.metrics), tags=frame(run.data.tags),
                       artifacts=sorted(artifacts),
                       model_uri=f"models:/{model_ids[0]}" if model_ids else None,
                       registered_versions=versions)


def _latest_finished_run(client, experiment_name: str | None, tracking_uri: str | None) -> str:
    from orchestrator.errors import OrchestratorError

    where = tracking_uri or "the current tracking URI"
    experiment = client.get_experiment_by_name(experiment_name) if experiment_name else None
    if experiment is None:
        raise OrchestratorError(f"no run id given and no experiment {experiment_name!r} at "
                                f"{where}; give a run id or an existing experiment name.")
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise OrchestratorError(f"experiment {experiment_name!r} at {where} has no finished run.")
    return runs[0].info.run_id


def show(obj: Any, namespace: Mapping[str, Any] | None = None) -> None:
    """Databricks' ``display(obj)`` when there is one, else print it (notebook use only)."""
    display = namespace.get("display") if namespace is not None else None
    if display is not None:
        display(obj)
        return
    if hasattr(obj, "show") and hasattr(obj, "schema"):  # a Spark DataFrame
        obj.show(20, truncate=False)
        return
    print(obj)  # noqa: T201 - the notebook's output cell
