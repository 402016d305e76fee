"""Train from a job config: what ``orchestrator run``, the train job and the notebook share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_config(config_path: str, *, spark: Any = None, master: str | None = None,
               output_dir: str | None = None, on_session: Callable[[Any], None] | None = None):
    """Load and validate a config, get a session if the job needs one, run the workflow.

    Parameters
    ----------
    config_path : str
        The job's YAML config.
    spark : SparkSession, optional
        Use this session; otherwise the active one, or a new local one, when the
        job reads Delta tables or tunes (none otherwise).
    master : str, optional
        Master URL of a new session (overrides the config's ``spark.master``).
    output_dir : str, optional
        Overrides the config's ``output_dir``.
    on_session : callable, optional
        Called with the session this function obtained (e.g. to set its log level).

    Returns
    -------
    WorkflowResult

    Raises
    ------
    SpecError
        The config is invalid (every problem at once), before any session starts.

    Examples
    --------
    >>> results = run_config("conf/demo.yml")  # doctest: +SKIP
    """
    from orchestrator.config import load_config, validate_config
    from orchestrator.workflow import run_ml_workflow

    config = load_config(config_path)
    specs = validate_config(config)  # every spec problem before Spark starts
    if specs.mlflow is not None:
        from orchestrator.entrypoints.process import bound_mlflow_requests

        bound_mlflow_requests(specs.mlflow.timeout_s)
    if spark is None and (config.needs_spark() or config.resolved.get("tuning")):
        from orchestrator.io.session import get_spark

        spark = get_spark("orchestrator-train", master=master or config.spark_master,
                          conf=config.spark_conf)
        if on_session is not None:
            on_session(spark)
    kwargs = dict(config.workflow_kwargs)
    if output_dir:
        kwargs["output_dir"] = output_dir
    return run_ml_workflow(**kwargs, spark=spark, resolved_config=dict(config.resolved))
