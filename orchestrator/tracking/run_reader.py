"""Reading a finished run back from MLflow: its record, the artifacts asked for, per-fold metrics.

The run report (:mod:`orchestrator.tracking.report`) and reproduction
(:mod:`orchestrator.tracking.reproduce`) both read runs this one way, through
a client bound to the run's tracking URI; what they make of the content is
their own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import TrackingError
from orchestrator.tracking.uri import tracking_errors

__all__ = ["FOLD_SUFFIX", "LoggedRun", "read_run"]

#: Per-fold values of a validation metric are logged as ``<name>_fold``, one step per fold.
FOLD_SUFFIX = "_fold"


@dataclass(frozen=True)
class LoggedRun:
    """What :func:`read_run` read.

    Attributes
    ----------
    run : mlflow.entities.Run
        The run record: ``info``, ``data.params``, ``data.tags``, ``data.metrics``
        (the latest value of each).
    artifacts : mapping of str to bytes
        The content of every artifact asked for that the run has, by artifact path.
    folds : mapping of str to dict of int to float
        For every ``<name>_fold`` metric (keyed by that full name), its value at
        each step, i.e. fold, in step order. A fold whose value was not finite was
        not logged, so steps can skip.
    """

    run: Any
    artifacts: Mapping[str, bytes]
    folds: Mapping[str, dict[int, float]]


def read_run(client, run_id: str, *, folders: Sequence[str | None] = (None,),
             wanted: Callable[[str], bool] = lambda path: False) -> LoggedRun:
    """Read a run, the artifacts ``wanted`` accepts in ``folders``, and its per-fold metrics.

    Parameters
    ----------
    client : mlflow.MlflowClient
        Bound to the run's tracking URI.
    run_id : str
    folders : sequence of str or None
        Artifact folders to list (None: the run's root); not recursive.
    wanted : callable
        Takes an artifact path (``plots/roc.png``); True downloads it.

    Returns
    -------
    LoggedRun

    Raises
    ------
    TrackingError
        The run does not exist or the tracking store cannot be read.

    Examples
    --------
    >>> logged = read_run(MlflowClient(tracking_uri=uri), run_id,   # doctest: +SKIP
    ...                   wanted=lambda path: path == "lineage.json")
    >>> json.loads(logged.artifacts["lineage.json"])["delta_version"]  # doctest: +SKIP
    3
    """
    errors = tracking_errors()
    try:
        run = client.get_run(run_id)
    except errors as exc:
        raise TrackingError(f"run {run_id!r} not found or not readable: {exc}") from exc
    try:
        artifacts = {}
        with tempfile.TemporaryDirectory(prefix="orchestrator-run-") as tmp:
            for folder in folders:
                for item in client.list_artifacts(run_id, folder):
                    if not item.is_dir and wanted(item.path):
                        local = client.download_artifacts(run_id, item.path, tmp)
                        artifacts[item.path] = Path(local).read_bytes()
        folds = {}
        for name in run.data.metrics:
            if name.endswith(FOLD_SUFFIX):
                history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
                folds[name] = {m.step: m.value for m in history}
    except errors as exc:
        raise TrackingError(f"reading what run {run_id} logged failed: {exc}") from exc
    return LoggedRun(run=run, artifacts=artifacts, folds=folds)
