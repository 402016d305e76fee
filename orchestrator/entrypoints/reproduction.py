"""Re-run a tracked run as it ran: what ``orchestrator reproduce`` does.

The deciding parts (which versions, which tolerance, which metrics agree) are
plain functions in :mod:`orchestrator.tracking.reproduce`; this module reads the
run, starts the session, checks the pinned versions and runs the workflow.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["reproduce_run"]


def reproduce_run(run_id: str, *, tracking_uri: str | None = None,
                  tolerance: float | None = None, output_dir: str | None = None,
                  spark: Any = None, master: str | None = None, remote: str | None = None,
                  session_options: Mapping[str, Any] | None = None,
                  on_session: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Re-run ``run_id`` pinned to the Delta versions it read and compare its metrics.

    Parameters
    ----------
    run_id : str
        The run to reproduce.
    tracking_uri : str, optional
        Its store (default: ``$MLFLOW_TRACKING_URI``, else the local sqlite store);
        the reproduction is logged there too, tagged ``orchestrator.reproduction_of``.
    tolerance : float, optional
        Relative tolerance of the metric comparison; default
        :func:`~orchestrator.tracking.reproduce.default_tolerance` (0 when the
        run is deterministic given its seeds).
    output_dir : str, optional
        Overrides the logged config's ``output_dir``.
    spark : SparkSession, optional
        Use this session (else the active one, or a new one as ``run`` would).
    master, remote, session_options, on_session
        As for :func:`~orchestrator.entrypoints.training.run_config`: a new
        session is started as ``orchestrator run`` would start it (the CLI's log
        file and cached Delta jars come in ``session_options``).

    Returns
    -------
    dict
        ``run_id``, ``new_run_id``, ``tolerance``, ``tolerance_reason``,
        ``pins``, ``rows`` (per metric: ``logged``, ``new``, ``agree``),
        ``agree`` (all rows agree) and ``text`` (what the CLI prints).

    Raises
    ------
    SpecError
        The logged config holds redacted secrets (named), so it cannot be re-run.
    PinnedVersionUnavailableError
        A pinned Delta version was vacuumed (names the table and version).
    ReproductionError
        The run logged no config or lineage, or the reproduction was not tracked.

    Examples
    --------
    >>> outcome = reproduce_run("3f2a...", tracking_uri="sqlite:///mlruns/mlflow.db")  # doctest: +SKIP
    >>> outcome["agree"]                                                              # doctest: +SKIP
    True
    """
    import yaml

    from orchestrator.config import load_config
    from orchestrator.entrypoints.training import run_config, start_session, validate_job
    from orchestrator.errors import ReproductionError, SpecError
    from orchestrator.specs.model import estimator_param_names
    from orchestrator.tracking import default_tracking_uri
    from orchestrator.tracking.reproduce import (
        check_versions_readable,
        compare_metrics,
        data_pins,
        default_tolerance,
        format_reproduction,
        pinned_config,
        read_logged_run,
        redacted_keys,
    )
    from orchestrator.tracking.uri import client_for

    uri = tracking_uri or default_tracking_uri()
    client = client_for(uri)
    logged = read_logged_run(client, run_id)
    config = logged["config"]
    if not isinstance(config, Mapping):
        raise ReproductionError(f"run {run_id} logged no config/resolved_config.yaml (was it "
                                "started by orchestrator?); there is nothing to re-run.")
    # The tracking URI is replaced by the store the run is read from, so its secret is moot.
    secrets = [key for key in redacted_keys(config) if key != "mlflow.tracking_uri"]
    if secrets:
        raise SpecError([f"{key}: was redacted when run {run_id} logged its config, so a "
                         "reproduction cannot know it; re-run the job's own config with "
                         "orchestrator run instead." for key in secrets])
    pins = data_pins(config, logged["lineage"])
    pinned = pinned_config(config, pins, run_id=run_id, tracking_uri=uri)
    with tempfile.TemporaryDirectory(prefix="orchestrator-reproduce-") as tmp:
        path = Path(tmp) / "reproduction.yml"
        path.write_text(yaml.safe_dump(pinned, sort_keys=False))
        job = load_config(path, environ={})
        specs = validate_job(job)
        if tolerance is None:
            tolerance, reason = default_tolerance(
                config, estimator_param_names(specs.model.estimator_class()))
        else:
            reason = "given"
        if pins and spark is None:
            spark = start_session(job, "orchestrator-reproduce", master=master, remote=remote,
                                  session_options=session_options, on_session=on_session)
        if pins:
            check_versions_readable(spark, pins)
        logger.info("reproducing run %s pinned to %s", run_id,
                    ", ".join(f"{p['location']}@{p['version']}" for p in pins) or "no tables")
        # Without pins (X given in code, no tables) the job may still tune on Spark: run_config
        # starts that session the same way.
        results = run_config(str(path), spark=spark, master=master, remote=remote,
                             output_dir=output_dir and os.path.expanduser(output_dir),
                             session_options=session_options, on_session=on_session)
    new_run_id = results.mlflow_run_id
    if not new_run_id:
        raise ReproductionError(f"the reproduction of run {run_id} was not tracked, so its "
                                f"metrics cannot be compared: {results.warnings}")
    rows = compare_metrics(logged["metrics"], read_logged_run(client, new_run_id)["metrics"],
                           tolerance=tolerance)
    return {"run_id": run_id, "new_run_id": new_run_id, "tolerance": tolerance,
            "tolerance_reason": reason, "pins": pins, "rows": rows,
            "agree": all(row["agree"] for row in rows),
            "text": format_reproduction(run_id, new_run_id, rows, tolerance=tolerance,
                                        reason=reason, pins=pins)}
