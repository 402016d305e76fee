"""Running Python tasks on Spark's executors: the worker daemon and its settings.

Tuning trials (and, through the same machinery, other per-task work such as
cross-validation folds) run as one-task Spark jobs whose Python workers are
forked from :mod:`orchestrator.cluster.worker`, a daemon that has already
imported scikit-learn. Nothing here imports Spark at module level.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["WORKER_DAEMON_MODULE", "worker_spark_conf"]

#: The module Spark's ``spark.python.daemon.module`` names: it must be importable on executors.
WORKER_DAEMON_MODULE = "orchestrator.cluster.worker"


def worker_spark_conf(master: str | None, environ: Mapping[str, str] | None = None,
                      ) -> dict[str, str]:
    """Spark settings that make per-task Python work cheap, for a session about to be created.

    On a local master, Python workers are forked from :data:`WORKER_DAEMON_MODULE`
    (``spark.python.daemon.module``), a daemon that has already imported numpy,
    pandas and scikit-learn, and the package's parent directory is put on the
    workers' ``PYTHONPATH`` so the daemon module is importable whatever the
    working directory. On any other master this returns ``{}``: the daemon
    module must be installed on every executor (a wheel on the cluster) before
    a cluster session may name it.

    Parameters
    ----------
    master : str or None
        The master URL the session will use.
    environ : mapping, optional
        The environment to read ``PYTHONPATH`` from; default ``os.environ``.

    Returns
    -------
    dict of str to str

    Examples
    --------
    >>> sorted(worker_spark_conf("local[2]"))
    ['spark.executorEnv.PYTHONPATH', 'spark.python.daemon.module']
    >>> worker_spark_conf("spark://host:7077")
    {}
    """
    if not master or not master.startswith("local"):
        return {}
    environ = os.environ if environ is None else environ
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python_path = os.pathsep.join(p for p in (package_root, environ.get("PYTHONPATH")) if p)
    return {
        "spark.python.daemon.module": WORKER_DAEMON_MODULE,
        "spark.executorEnv.PYTHONPATH": python_path,
    }
