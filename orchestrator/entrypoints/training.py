"""Train from a job config: what ``orchestrator run``, the train job and the notebook share."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any


# Training only reads tables: a lookup of a missing metastore table must not leave an empty
# spark-warehouse/ in the working directory (a session we create; the config may override).
_LOCAL_WAREHOUSE = {"spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(),
                                                            "orchestrator-spark-warehouse")}


def run_config(config_path: str, *, spark: Any = None, master: str | None = None,
               output_dir: str | None = None, on_session: Callable[[Any], None] | None = None,
               session_options: Mapping[str, Any] | None = None, remote: str | None = None):
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
    session_options : mapping, optional
        Extra keyword arguments of ``get_spark`` for a new session (the CLI's
        ``jvm_log_path`` and ``jars_cache_dir``).
    remote : str, optional
        Spark Connect URL of a new session (``sc://host:port`` or ``local[N]``);
        overrides the config's ``spark.remote``. ``master`` and ``remote`` exclude
        each other; with neither, the config's, then ``$SPARK_REMOTE``.

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
    from orchestrator.config import load_config
    from orchestrator.workflow import run_ml_workflow

    config = load_config(config_path)
    specs = validate_job(config)  # every spec problem before Spark starts
    if specs.mlflow is not None:
        from orchestrator.entrypoints.process import bound_mlflow_requests

        bound_mlflow_requests(specs.mlflow.timeout_s)
    if spark is None and (config.needs_spark() or config.resolved.get("tuning")):
        spark = start_session(config, "orchestrator-train", master=master, remote=remote,
                              session_options=session_options, on_session=on_session)
    kwargs = dict(config.workflow_kwargs)
    if output_dir:
        kwargs["output_dir"] = os.path.expanduser(output_dir)
    return run_ml_workflow(**kwargs, spark=spark, resolved_config=dict(config.resolved))


def start_session(config, app_name: str, *, master: str | None = None,
                  remote: str | None = None, session_options: Mapping[str, Any] | None = None,
                  on_session: Callable[[Any], None] | None = None):
    """The session a job's config asks for: ``run`` and ``reproduce`` start theirs alike.

    ``master`` or ``remote`` override the config's ``spark.master``/``spark.remote``
    (with neither, the config's, then ``$SPARK_REMOTE``); see :func:`run_config`.
    """
    from orchestrator.entrypoints.process import workers_use_this_interpreter
    from orchestrator.io.session import choose_remote, get_spark

    if not master and not remote:
        master, remote = config.spark_master, config.spark_remote
    remote = choose_remote(remote, master, os.environ)
    workers_use_this_interpreter(remote)
    # A remote Connect server keeps its own static settings, such as the warehouse.
    conf = config.spark_conf if remote and remote.startswith("sc://") else {
        **_LOCAL_WAREHOUSE, **config.spark_conf}
    spark = get_spark(app_name, master=master, remote=remote, conf=conf,
                      **(session_options or {}))
    if on_session is not None:
        on_session(spark)
    return spark


def validate_job(config):
    """Validate a loaded config's specs, then the search space against the built pipeline.

    Reads no data and starts no Spark.

    Returns
    -------
    WorkflowSpecs

    Raises
    ------
    SpecError
        Every problem at once.
    """
    from orchestrator.config import validate_config
    from orchestrator.errors import SpecError
    from orchestrator.steps.pipeline import build_ml_pipeline, search_space_problems

    specs = validate_config(config)
    if specs.tuning is not None:
        problems = search_space_problems(build_ml_pipeline(specs.features, specs.model),
                                         specs.tuning)
        if problems:
            raise SpecError(problems)
    return specs
