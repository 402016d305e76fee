"""Process-wide settings that only entry points may make: signal handling, MLflow's HTTP bounds.

Library code never installs signal handlers or writes ``os.environ``; the
command line, the train and score jobs and the notebook helpers call these.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping

logger = logging.getLogger(__name__)

__all__ = ["bound_mlflow_requests", "mute_spark_console_errors", "termination_signals_raise",
           "workers_use_this_interpreter"]


@contextlib.contextmanager
def termination_signals_raise() -> Iterator[list[int]]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` (SIGINT stays ``KeyboardInterrupt``).

    So a job stopped by its scheduler unwinds like an interrupted one: the
    MLflow run ends KILLED, Spark jobs of the tuning step are cancelled and no
    Delta commit is left half-made. Only in the main thread, and only when
    SIGTERM still has its default handler; the previous handler is restored.
    """
    # The signals received, for the caller: a SystemExit raised inside a py4j call can
    # surface as a Py4JError (the connection is left mid-answer), yet the job was stopped.
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield received
        return
    # A SIGTERM that lands in a finalizer is retried on a SIGALRM, if nobody else uses it.
    previous_alarm = signal.getsignal(signal.SIGALRM)
    can_defer = previous_alarm in (signal.SIG_DFL, None)

    raised: list[SystemExit] = []

    def stop(frame):
        if can_defer and in_finalizer(frame):
            signal.setitimer(signal.ITIMER_REAL, FINALIZER_RETRY_S, STOP_RECHECK_S)
            return
        raised[:] = [SystemExit(128 + received[0])]
        if can_defer:  # check now and then that the stop is still on its way out
            signal.setitimer(signal.ITIMER_REAL, STOP_RECHECK_S, STOP_RECHECK_S)
        raise raised[0]

    def on_sigterm(signum, frame):
        if not received:
            received.append(signum)
            logger.warning("SIGTERM received; stopping")
        stop(frame)

    def on_alarm(signum, frame):
        if not received or (raised and unwinding(raised[0])):
            return
        if raised:
            logger.warning("SIGTERM: the stop was swallowed by a library; stopping again")
        stop(frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    if can_defer:
        signal.signal(signal.SIGALRM, on_alarm)
    try:
        yield received
    finally:
        if can_defer:  # no retry may fire while the handlers are put back
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous_alarm is None
                          else previous_alarm)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


#: How soon a SIGTERM that arrived inside a finalizer is acted on again.
FINALIZER_RETRY_S = 0.05
#: How often a raised stop is checked to be still unwinding (a library may swallow it).
STOP_RECHECK_S = 2.0


def unwinding(stop: BaseException) -> bool:
    """True while ``stop`` (or an error it turned into) is being handled on this thread.

    Examples
    --------
    >>> stop = SystemExit(143)
    >>> unwinding(stop)
    False
    >>> try:
    ...     raise stop
    ... except SystemExit:
    ...     unwinding(stop)
    True
    """
    import sys

    error, seen = sys.exc_info()[1], set()
    while error is not None and id(error) not in seen:
        if error is stop:
            return True
        seen.add(id(error))
        error = error.__context__ or error.__cause__
    return False


def in_finalizer(frame) -> bool:
    """True when ``frame`` runs inside a finalizer (``__del__``, a weakref callback of py4j).

    Python prints and drops an exception raised in a finalizer ("Exception
    ignored in ..."), so the ``SystemExit`` of a SIGTERM that happened to land
    there (py4j finalizes a Java object reference on every garbage collection)
    would be lost and the job would run on.

    Examples
    --------
    >>> import sys
    >>> in_finalizer(sys._getframe())
    False
    """
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__":
            return True
        module = frame.f_globals.get("__name__", "")
        if module.startswith("py4j") and code.co_name in (
                "<lambda>", "_garbage_collect_object", "_garbage_collect_connection"):
            return True
        if module == "weakref" and code.co_name == "__call__":  # weakref.finalize
            return True
        frame = frame.f_back
    return False


def bound_mlflow_requests(timeout_s: float, environ: Mapping[str, str] | None = None) -> None:
    """Bound every MLflow HTTP request of this process (MLflow's defaults retry for minutes).

    Settings the user exported are kept (``setdefault``).
    """
    from orchestrator.tracking.uri import bounded_http_env

    target = os.environ if environ is None else environ
    for name, value in bounded_http_env(timeout_s).items():
        target.setdefault(name, value)


def mute_spark_console_errors() -> None:
    """Keep PySpark's query-context loggers off the console.

    When a DataFrame operation fails (a filter naming a missing column), PySpark
    logs the error as one JSON line with the Java stack trace to stderr, through
    loggers of its own that do not propagate; the job then reports the same error
    as one clear message. Raising their level keeps only ours.
    """
    from pyspark.logger import PySparkLogger

    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL + 1)


def workers_use_this_interpreter(remote: str | None,
                                 environ: dict[str, str] | None = None) -> None:
    """A local Spark Connect server's Python workers run this interpreter, unless PYSPARK_PYTHON says.

    pyspark starts the server of ``remote="local[N]"`` in a JVM of this process,
    and that JVM starts Python workers with ``$PYSPARK_PYTHON`` (else ``python3``
    from PATH, which may lack scikit-learn). A classic session sets its own
    (``io.session``); a remote server's workers are the cluster's business.
    """
    if not remote or not remote.startswith("local"):
        return
    import sys

    target = os.environ if environ is None else environ
    target.setdefault("PYSPARK_PYTHON", sys.executable)
