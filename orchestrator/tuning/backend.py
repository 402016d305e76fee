"""Which backend runs the trials, decided from plain facts (testable without Spark)."""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.errors import TuningError
from orchestrator.io.session import active_session

logger = logging.getLogger(__name__)


def spark_unusable_reason(spark) -> tuple[Any, str | None]:
    """Return ``(session, None)`` if ``spark`` (or the active session) has a usable SparkContext.

    Otherwise ``(None, reason)``: no pyspark, no active session, Spark Connect or
    serverless (no SparkContext), or a stopped context.
    """
    spark, reason = active_session(spark)
    if spark is None:
        return None, reason
    try:
        from pyspark.sql.utils import is_remote

        if is_remote():
            return None, "the session is Spark Connect, which has no SparkContext"
        context = spark.sparkContext
    except (NotImplementedError, AttributeError) as exc:
        return None, f"the session has no SparkContext ({exc})"
    if getattr(context, "_jsc", None) is None:
        return None, "the SparkContext is stopped"
    return spark, None


def choose_backend(requested: str, *, spark_reason: str | None, hyperopt_installed: bool,
                   optuna_installed: bool, connect_session: bool = False) -> tuple[str, str]:
    """Decide the backend from plain facts; return ``(backend, why)``.

    Parameters
    ----------
    requested : {"auto", "spark", "local", "optuna"}
    spark_reason : str or None
        Why no SparkContext is usable, or None when one is.
    hyperopt_installed, optuna_installed : bool
    connect_session : bool
        The session is Spark Connect: trials can run on executors through the
        Connect task runner (backend ``connect``: hyperopt suggesting on the driver).

    Returns
    -------
    tuple of (str, str)
        The backend (``spark``, ``connect``, ``local`` or ``optuna``) and why. With
        a session, ``optuna`` runs its trials on executors through the Connect task runner.

    Raises
    ------
    TuningError
        When the requested backend cannot run here.

    Examples
    --------
    >>> choose_backend("auto", spark_reason="no active SparkSession", hyperopt_installed=True,
    ...                optuna_installed=False)[0]
    'local'
    """
    def unavailable(why: str) -> TuningError:
        return TuningError(f"tuning backend {requested!r} is unavailable: {why}.")

    if requested == "spark":
        if not hyperopt_installed:
            raise unavailable("hyperopt is not installed (Databricks ML runtimes after 16.4 "
                              "no longer ship it; use backend optuna)")
        if spark_reason and connect_session:
            return "connect", ("requested spark on a Spark Connect session: hyperopt on the "
                               "driver, trials through the Connect task runner")
        if spark_reason:
            raise unavailable(f"SparkTrials needs a SparkContext and {spark_reason}")
        return "spark", "requested"
    if requested == "local":
        if not hyperopt_installed:
            raise unavailable("hyperopt is not installed; use backend optuna")
        return "local", "requested"
    if requested == "optuna":
        if not optuna_installed:
            raise unavailable("optuna is not installed (pip install optuna)")
        return "optuna", "requested"
    if hyperopt_installed and not spark_reason:
        return "spark", "auto: a SparkContext is usable"
    if connect_session and hyperopt_installed:
        return "connect", ("auto: the session is Spark Connect, so hyperopt suggests on the "
                           "driver and trials run on executors through the Connect task runner")
    if connect_session and optuna_installed:
        return "optuna", "auto: the session is Spark Connect and hyperopt is not installed"
    if hyperopt_installed:
        return "local", f"auto: {spark_reason}, so trials run on the driver"
    if optuna_installed:
        return "optuna", "auto: hyperopt is not installed"
    raise TuningError("no tuning backend is available: install hyperopt or optuna.")

