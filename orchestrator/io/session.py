"""Getting a SparkSession: reuse the one that is there, or build a local one with Delta.

Only entry points (jobs, the CLI, notebooks) and test fixtures call
:func:`get_spark`; library functions take the session as a parameter.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
LOCAL_CONF = {
    # Few rows per job locally: 200 shuffle partitions would mostly schedule empty tasks.
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    # Delta rebuilds a table's snapshot with 50 tasks by default; locally that is mostly overhead.
    "spark.databricks.delta.snapshotPartitions": "4",
}


def active_session(spark: Any = None) -> tuple[Any, str]:
    """The given session, else the active one (classic or Spark Connect), and why there is none.

    Returns
    -------
    (SparkSession or None, str)
        The session and ``""``, or None and the reason ("pyspark is not
        installed", "no active SparkSession").

    Examples
    --------
    >>> active_session("a session")
    ('a session', '')
    """
    if spark is not None:
        return spark, ""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None, "pyspark is not installed"
    session = SparkSession.getActiveSession()
    return (session, "") if session is not None else (None, "no active SparkSession")


def on_databricks() -> bool:
    """True inside a Databricks runtime (cluster, job or notebook)."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def launched_by_spark_submit(environ: Mapping[str, str]) -> bool:
    """True in a driver started by spark-submit (its JVM is already running)."""
    return "PYSPARK_GATEWAY_PORT" in environ


def choose_master(requested: str | None, environ: Mapping[str, str]) -> str:
    """The master URL for a new session: the argument, then $SPARK_MASTER, then local[*]."""
    return requested or environ.get("SPARK_MASTER") or "local[*]"


def delta_package_coordinate() -> str:
    """The Maven coordinate of the Delta jar matching the installed delta-spark and pyspark.

    The same rule as delta-spark's ``configure_spark_with_delta_pip``; pass it to
    ``spark-submit --packages``, which starts the JVM before any Python runs.

    Examples
    --------
    >>> delta_package_coordinate()  # doctest: +SKIP
    'io.delta:delta-spark_4.2_2.13:4.4.0'
    """
    from importlib.metadata import version

    spark_minor = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"


def configure_delta(builder, *, extra_packages: list[str] | None = None):
    """Add Delta Lake to a session builder through delta-spark's own mechanism.

    ``configure_spark_with_delta_pip`` sets ``spark.jars.packages`` to the
    delta-spark artifact matching the installed pip package, which Spark's
    Ivy resolver fetches from Maven Central on first use and caches.
    """
    from delta import configure_spark_with_delta_pip

    for key, value in DELTA_SQL_CONF.items():
        builder = builder.config(key, value)
    return configure_spark_with_delta_pip(builder, extra_packages=extra_packages)


def get_spark(app_name: str = "orchestrator", *, master: str | None = None,
def choose_remote(requested: str | None, master: str | None,
                  environ: Mapping[str, str]) -> str | None:
    """The Spark Connect URL for a new session, or None for a classic one.

    The argument, then ``$SPARK_REMOTE`` (what pyspark itself reads) unless a
    master was asked for explicitly.

    Examples
    --------
    >>> choose_remote("sc://h:15002", None, {}), choose_remote(None, None, {"SPARK_REMOTE": "local"})
    ('sc://h:15002', 'local')
    >>> choose_remote(None, "local[2]", {"SPARK_REMOTE": "local"}) is None
    True
    """
    if requested:
        return requested
    if master:
        return None
    return environ.get("SPARK_REMOTE") or None


def is_connect_session(spark: Any) -> bool:
    """True for a Spark Connect session (no SparkContext, no JVM in this process).

    Examples
    --------
    >>> is_connect_session(None)
    False
    """
    return type(spark).__module__.startswith("pyspark.sql.connect")


              conf: Mapping[str, str] | None = None):
    """Return the active SparkSession, or build a local one with Delta configured.

    Parameters
    ----------
    app_name : str
        Application name of a new session.
    master : str, optional
        Master URL of a new session; default ``$SPARK_MASTER`` or ``local[*]``.
        Ignored when a session is already active (Databricks, spark-submit, notebooks).
    conf : mapping, optional
        Extra Spark settings for a new session.

    Returns
    -------
    pyspark.sql.SparkSession

    Examples
    --------
    >>> spark = get_spark(master="local[2]")  # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        logger.info("Using the active SparkSession (Spark %s)", active.version)
        return active
    if on_databricks():
        logger.info("Using the Databricks runtime's SparkSession")
        return SparkSession.builder.getOrCreate()
    if launched_by_spark_submit(os.environ):
        # spark-submit already started the JVM with its --master, --packages and --conf.
        builder = SparkSession.builder.appName(app_name)
        for key, value in {**DELTA_SQL_CONF, **(conf or {})}.items():
            builder = builder.config(key, value)
        if master:
            builder = builder.master(master)
        logger.info("Starting a SparkSession in the spark-submit driver")
        return builder.getOrCreate()
    master_url = choose_master(master, os.environ)
    builder = SparkSession.builder.appName(app_name).master(master_url)
    settings = dict(LOCAL_CONF) if master_url.startswith("local") else {}
    from orchestrator.cluster import worker_spark_conf

    # Python workers forked from a daemon that preloaded scikit-learn: cheap tuning trials.
    settings.update(worker_spark_conf(master_url))
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    logger.info("Starting a SparkSession on %s with Delta Lake", master_url)
    session = configure_delta(builder).getOrCreate()
    if master_url.startswith("local"):
        use_driver_interpreter_for_workers(session, os.environ)
    return session


def use_driver_interpreter_for_workers(session, environ: Mapping[str, str]) -> None:
    """Make a local session's Python workers run this interpreter unless PYSPARK_PYTHON says.

    PySpark takes the workers' interpreter from ``SparkContext.pythonExec``,
    read from ``$PYSPARK_PYTHON`` when the context starts, else ``python3`` on
    PATH, which may lack scikit-learn. Setting the context's attribute (it is
    read each time a Python function is shipped) scopes the choice to this
    session instead of changing the process environment. The attribute is not
    documented API: tests/test_session.py fails loudly, naming the pyspark
    version, if it stops being used.
    """
    if "PYSPARK_PYTHON" in environ:
        return
    context = session.sparkContext
    if not hasattr(context, "pythonExec"):
        raise RuntimeError(f"pyspark {session.version}: SparkContext.pythonExec is gone; "
                           "set PYSPARK_PYTHON to the driver's interpreter instead.")
    context.pythonExec = sys.executable
