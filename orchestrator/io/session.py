"""Getting a SparkSession: reuse the one that is there, or build a local one with Delta.

Only entry points (jobs, the CLI, notebooks) and test fixtures call
:func:`get_spark`; library functions take the session as a parameter.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
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


def get_spark(app_name: str = "orchestrator", *, master: str | None = None,
              conf: Mapping[str, str] | None = None, jvm_log_path: str | Path | None = None,
              jars_cache_dir: str | Path | None = None, remote: str | None = None):
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
    jvm_log_path : str or Path, optional
        A new local or cluster-client session's JVM writes its stdout, stderr
        (Ivy's resolution report) and log4j output to this file instead of the
        console. Default: the console, as Spark does.
    jars_cache_dir : str or Path, optional
        Where the Delta jars Ivy resolved are remembered (one file per pyspark
        and delta-spark version): a later session passes them as ``spark.jars``
        and skips the resolution. Default: resolve with ``spark.jars.packages``
        every time.
    remote : str, optional
        Spark Connect instead of classic Spark: ``sc://host:port`` (a running
        Connect server, which brings its own Delta settings) or ``local[N]``
        (pyspark starts a Connect server in this process, with Delta). Default
        ``$SPARK_REMOTE`` unless ``master`` is given. A local server's Python
        workers run ``$PYSPARK_PYTHON``, which the entry points set.

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
    remote_url = choose_remote(remote, master, os.environ)
    if remote_url:
        # Only a local server takes Delta's jars from here (a pyspark-client install has no
        # pyspark metadata to key the jar cache by).
        jars = (cached_delta_jars(delta_jars_cache_file(jars_cache_dir))
                if jars_cache_dir is not None and remote_url.startswith("local") else None)
        return _connect_session(app_name, remote_url, conf or {}, jars)
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
    cache_file = delta_jars_cache_file(jars_cache_dir) if jars_cache_dir is not None else None
    jars = cached_delta_jars(cache_file) if cache_file is not None else None
    settings.update(delta_settings(settings, jars))
    if jvm_log_path is not None:
        settings.update(jvm_log_settings(settings, jvm_log_path))
    for key, value in settings.items():
        builder = builder.config(key, value)
    logger.info("Starting a SparkSession on %s with Delta Lake (jars: %s)", master_url,
                "cached" if jars else "resolved by Ivy")
    if jvm_log_path is None:
        session = builder.getOrCreate()
    else:
        session = _start_with_jvm_output_to(builder, app_name, master_url, settings,
                                            Path(jvm_log_path))
    if cache_file is not None and not jars:
        remember_delta_jars(session, cache_file)
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


def delta_settings(settings: Mapping[str, str], jars: list[str] | None) -> dict[str, str]:
    """Delta's SQL settings, plus its jars: the cached files, else the Maven coordinate.

    Jars or packages the caller set are kept, the Delta ones appended.

    Examples
    --------
    >>> delta_settings({}, ["/c/delta.jar", "/c/storage.jar"])["spark.jars"]
    '/c/delta.jar,/c/storage.jar'
    >>> delta_settings({"spark.jars": "/my.jar"}, ["/c/delta.jar"])["spark.jars"]
    '/my.jar,/c/delta.jar'
    """
    out = dict(DELTA_SQL_CONF)
    key, value = (("spark.jars", ",".join(jars)) if jars
                  else ("spark.jars.packages", delta_package_coordinate()))
    out[key] = ",".join(v for v in (settings.get(key), value) if v)
    return out


def delta_jars_cache_file(cache_dir: str | Path) -> Path:
    """The file listing the Delta jars resolved for the installed pyspark and delta-spark.

    Keyed by both versions, so upgrading either resolves again.
    """
    from importlib.metadata import version

    return Path(cache_dir) / f"delta-jars-pyspark-{version('pyspark')}-" \
                             f"delta-spark-{version('delta-spark')}.txt"


def cached_delta_jars(cache_file: Path) -> list[str] | None:
    """The remembered jar paths, or None when the cache is missing or a jar is gone (stale).

    Examples
    --------
    >>> cached_delta_jars(Path("/nonexistent/delta-jars.txt")) is None
    True
    """
    try:
        jars = [line.strip() for line in cache_file.read_text().splitlines() if line.strip()]
    except OSError:
        return None
    if not jars or not all(os.path.isfile(jar) for jar in jars):
        logger.info("Delta jar cache %s is stale; resolving with Ivy", cache_file)
        return None
    return jars


def remember_delta_jars(session, cache_file: Path) -> None:
    """Write the jars Ivy resolved for this session (its ``spark.jars``) to the cache file."""
    from urllib.parse import unquote, urlparse

    try:
        listed = session.sparkContext.getConf().get("spark.jars", "") or ""
    except Exception:  # noqa: BLE001 - no SparkContext (Spark Connect): nothing to remember
        return
    jars = [unquote(urlparse(jar).path) if jar.startswith("file:") else jar
            for jar in listed.split(",") if jar.strip()]
    jars = [jar for jar in jars if os.path.isfile(jar)]
    if not any("delta-spark" in os.path.basename(jar) for jar in jars):
        return
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text("\n".join(jars) + "\n")
        partial.replace(cache_file)  # atomic: a concurrent reader sees the old file or the new
    except OSError as exc:
        logger.info("Could not remember the Delta jars in %s: %s", cache_file, exc)


_LOG4J2_TO_FILE = """\
# Written by orchestrator: Spark's log4j output goes to the job's log file.
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
"""


def jvm_log_settings(settings: Mapping[str, str], log_path: str | Path) -> dict[str, str]:
    """Point the driver's log4j at ``log_path`` through a log4j2 properties file beside it.

    The properties file is written next to the log; Java options the caller set are kept.
    """
    log_path = Path(log_path).resolve()
    properties = log_path.with_name(log_path.name + ".log4j2.properties")
    properties.parent.mkdir(parents=True, exist_ok=True)
    properties.write_text(_LOG4J2_TO_FILE.format(path=str(log_path).replace("\\", "/")))
    option = f"-Dlog4j.configurationFile=file:{properties}"
    existing = settings.get("spark.driver.extraJavaOptions")
    return {"spark.driver.extraJavaOptions": f"{existing} {option}" if existing else option}


def _start_with_jvm_output_to(builder, app_name: str, master_url: str,
                              settings: Mapping[str, str], log_path: Path):
    """Start the JVM with its stdout and stderr appended to ``log_path``, then the session.

    PySpark launches spark-submit as a child process inheriting this process's
    console; ``launch_gateway(popen_kwargs=...)`` (documented for capturing the
    JVM's output) sends it to the file instead. The context built on that
    gateway is the one ``builder.getOrCreate()`` then returns.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None:  # this process's JVM is running already
        return builder.getOrCreate()
    spark_conf = SparkConf().setAppName(app_name).setMaster(master_url)
    for key, value in settings.items():
        spark_conf.set(key, value)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # Popen duplicates the descriptor for the JVM
        gateway = launch_gateway(spark_conf, popen_kwargs={"stdout": log, "stderr": log})
    SparkContext(conf=spark_conf, gateway=gateway)
    return builder.getOrCreate()


def _connect_session(app_name: str, url: str, conf: Mapping[str, str],
                     jars: list[str] | None = None):
    """A Spark Connect session: a local in-process server with Delta, or a remote server's."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(url).appName(app_name)
    if not url.startswith("local"):
        # A remote server fixes its own static settings (Delta, warehouse): only the
        # caller's settings are sent, as session settings.
        for key, value in conf.items():
            builder = builder.config(key, value)
        logger.info("Connecting to the Spark Connect server at %s", url.split(";")[0])
        return builder.getOrCreate()
    from orchestrator.cluster import worker_spark_conf

    # pyspark starts the server in a JVM of this process with these settings (static
    # ones included); its clients reach it on loopback only.
    settings = {**LOCAL_CONF, **worker_spark_conf(url),
                "spark.connect.grpc.binding.address": "127.0.0.1", **conf}
    settings.update(delta_settings(settings, jars))
    for key, value in settings.items():
        builder = builder.config(key, value)
    if "PYSPARK_PYTHON" not in os.environ:
        logger.warning("PYSPARK_PYTHON is not set: the local Spark Connect server's Python "
                       "workers run python3 from PATH, which may lack this job's packages.")
    logger.info("Starting a local Spark Connect server (%s) with Delta Lake", url)
    import warnings

    with warnings.catch_warnings():
        # The server got every setting at its start; pyspark then tries the static ones
        # again on the client session and warns that it cannot.
        warnings.filterwarnings("ignore", message="Failed to set", category=UserWarning)
        return builder.getOrCreate()
