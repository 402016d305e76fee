"""What the command line shows: our step lines, progress, warnings; everything else to a log file.

Only entry points call these (they install logging handlers). By default the
console shows the ``orchestrator`` loggers' INFO lines in a short format, with
progress lines (tuning trials) at most every few seconds, and every library's
warnings; the log file gets every line of every logger, and the JVM's output
(see ``orchestrator.io.session.get_spark(jvm_log_path=...)``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path

__all__ = ["ConsoleFilter", "attach_log_file", "default_log_path", "jars_cache_dir",
           "setup_console"]

_LONG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log at INFO for their own debugging; the log file still gets their warnings.
_CHATTY = ("py4j", "pyspark")


class ConsoleFilter(logging.Filter):
    """Keep what a user running a job needs: our INFO lines, anyone's warnings, sparse progress.

    A step's "started" line is dropped (its "finished in" line carries the
    duration); progress lines (tuning trials) pass at most once every
    ``progress_every_s`` seconds, and always when they report the last trial.

    Examples
    --------
    >>> f = ConsoleFilter(progress_every_s=5.0, clock=iter([0.0, 1.0, 6.0]).__next__)
    >>> def rec(msg, args=(), name="orchestrator.tuning.objective", level=logging.INFO):
    ...     return logging.LogRecord(name, level, "", 0, msg, args, None)
    >>> progress = "Tuning: %d/%d trials done (%d failed), best %s %s, %.1f s elapsed"
    >>> [f.filter(rec(progress, (n, 20, 0, "roc_auc", "0.8", 1.0))) for n in (1, 2, 3)]
    [True, False, True]
    >>> f.filter(rec("Step %d/8 %s: started", (1, "data_loading"), name="orchestrator.workflow"))
    False
    >>> f.filter(rec("chatter", name="mlflow.store"))
    False
    >>> f.filter(rec("trouble", name="mlflow.store", level=logging.WARNING))
    True
    """

    # Spark actions' lines (orchestrator.io.progress) come every 10 s; these keep them too.
    PROGRESS_PREFIXES = ("Tuning: %d/%d trials done", "Progress: %d/%d",
                         "Progress: %s still running")

    def __init__(self, *, progress_every_s: float = 5.0, clock=time.monotonic):
        super().__init__()
        self.progress_every_s = progress_every_s
        self.clock = clock
        self._last_progress: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if record.name != "orchestrator" and not record.name.startswith("orchestrator."):
            return False
        message = str(record.msg)
        if message.endswith(": started") and message.startswith("Step "):
            return False
        if message.startswith(self.PROGRESS_PREFIXES):
            done, total = (record.args[:2] if isinstance(record.args, tuple)
                           and len(record.args) >= 2 else (None, None))
            now = self.clock()
            last = self._last_progress
            if done != total and last is not None and now - last < self.progress_every_s:
                return False
            self._last_progress = now
        return True


class _ShortFormatter(logging.Formatter):
    """``12:03:04 message``; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, rest = text.partition(" ")
            return f"{stamp} {record.levelname.lower()}: {rest}"
        return text


def setup_console(level: str = "INFO", *, verbose: bool = False, stream=None) -> logging.Handler:
    """Install the console handler on the root logger (replacing earlier handlers).

    Parameters
    ----------
    level : str
        The lowest level logged anywhere (console and log file).
    verbose : bool
        Show every logger's lines in the long format (no filtering).
    stream : file, optional
        Default: ``sys.stderr``, so the summary on stdout stays clean to pipe.

    Returns
    -------
    logging.Handler
        The console handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    console = logging.StreamHandler(sys.stderr if stream is None else stream)
    if verbose:
        console.setFormatter(logging.Formatter(_LONG_FORMAT))
    else:
        console.setFormatter(_ShortFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        console.addFilter(ConsoleFilter())
    root.addHandler(console)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return console


def attach_log_file(path: str | Path) -> Path:
    """Also write every log line, unfiltered and timestamped, to ``path`` (appended)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LONG_FORMAT))
    logging.getLogger().addHandler(handler)
    return path


def default_log_path(directory: str | Path, command: str, *, now: datetime | None = None) -> Path:
    """``<directory>/<command>-<YYYYmmdd-HHMMSS>.log``, one file per run.

    Examples
    --------
    >>> default_log_path("out/logs", "run", now=datetime(2026, 1, 2, 3, 4, 5)).as_posix()
    'out/logs/run-20260102-030405.log'
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(directory) / f"{command}-{stamp}.log"


def jars_cache_dir(environ=None) -> Path:
    """Where resolved Delta jars are remembered: ``$XDG_CACHE_HOME/orchestrator`` or ~/.cache."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "orchestrator"
