"""Reproducing and comparing tracked runs, from what each run logged.

A tracked run logs its resolved config (``config/resolved_config.yaml``,
secrets redacted), the Delta versions it read (``lineage.json``), its library
versions (``lib.*`` params) and its metrics. :func:`read_logged_run` reads
those back into plain dicts; everything else here decides on plain values:

* :func:`pinned_config`: the config to re-run, every table pinned to the
  version the run read, tagged as a reproduction, registering and promoting
  nothing;
* :func:`redacted_keys`: settings a reproduction cannot know (redacted secrets);
* :func:`default_tolerance`: 0 (exact) when the run is deterministic given its
  seeds, else :data:`RELATIVE_TOLERANCE`;
* :func:`compare_metrics`: logged value, new value, agreement;
* :func:`diff_runs`: specs, data versions, library versions and metrics of two runs.

:func:`check_versions_readable` is the one Spark call: it lists the files of
each pinned version and says which table and version VACUUM removed, before
any training starts. Re-running the job is the entry point's part
(``orchestrator reproduce``), since the workflow sits above this layer.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from orchestrator.errors import PinnedVersionUnavailableError, ReproductionError, TrackingError
from orchestrator.redaction import REDACTED
from orchestrator.tracking.run_reader import read_run

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_ARTIFACT",
    "RELATIVE_TOLERANCE",
    "REPRODUCTION_TAG",
    "check_versions_readable",
    "compare_metrics",
    "data_pins",
    "default_tolerance",
    "diff_runs",
    "format_comparison",
    "format_reproduction",
    "pinned_config",
    "read_logged_run",
    "redacted_keys",
]

REPRODUCTION_TAG = "orchestrator.reproduction_of"
CONFIG_ARTIFACT = "config/resolved_config.yaml"
_LINEAGE_ARTIFACT = "lineage.json"
#: The default relative tolerance of a run that is not deterministic given its seeds
#: (threads or parallel tuning trials add floating point in a varying order).
RELATIVE_TOLERANCE = 1e-9
# Metrics that measure the machine or the moment, not the model: never compared.
_UNCOMPARED_PREFIXES = ("timing/", "promotion/")
_UNCOMPARED_SUFFIXES = ("wall_time_s",)


# ----------------------------------------------------------------------------- reading a run


def read_logged_run(client, run_id: str) -> dict[str, Any]:
    """What a run logged, as plain values.

    Parameters
    ----------
    client : mlflow.MlflowClient
        Bound to the run's tracking URI.
    run_id : str

    Returns
    -------
    dict
        ``run_id``, ``config`` (the resolved config, or None when not logged),
        ``lineage`` (or None), ``params``, ``tags`` and ``metrics`` (name ->
        latest value; ``<name>_fold`` metrics as ``<name>_fold[i]`` per fold).

    Raises
    ------
    TrackingError
        The run does not exist or the store cannot be read.

    Examples
    --------
    >>> logged = read_logged_run(MlflowClient(tracking_uri=uri), run_id)  # doctest: +SKIP
    >>> logged["lineage"]["delta_version"]                                # doctest: +SKIP
    3
    """
    import yaml

    logged = read_run(client, run_id, folders=(None, "config"),
                      wanted=lambda path: path in (CONFIG_ARTIFACT, _LINEAGE_ARTIFACT))
    run, files = logged.run, logged.artifacts
    try:
        config = (yaml.safe_load(files[CONFIG_ARTIFACT].decode()) if CONFIG_ARTIFACT in files
                  else None)
        lineage = (json.loads(files[_LINEAGE_ARTIFACT]) if _LINEAGE_ARTIFACT in files
                   else None)
    except (ValueError, yaml.YAMLError) as exc:
        raise TrackingError(f"run {run_id}: a logged config or lineage file is unreadable: "
                            f"{exc}") from exc
    metrics: dict[str, float] = {}
    for name, value in run.data.metrics.items():
        if name in logged.folds:
            metrics.update({f"{name}[{step}]": v for step, v in logged.folds[name].items()})
        else:
            metrics[name] = value
    return {"run_id": run_id, "config": config, "lineage": lineage,
            "params": dict(run.data.params), "tags": dict(run.data.tags), "metrics": metrics}


# ----------------------------------------------------------------------------- reproducing


def redacted_keys(config: Any, *, prefix: str = "") -> list[str]:
    """Dotted keys of ``config`` whose value was redacted when logged.

    Examples
    --------
    >>> redacted_keys({"mlflow": {"tags": {"token": "***REDACTED***"}}, "model": {}})
    ['mlflow.tags.token']
    """
    found: list[str] = []
    if isinstance(config, Mapping):
        for key, value in config.items():
            found += redacted_keys(value, prefix=f"{prefix}{key}.")
    elif isinstance(config, list):
        for index, value in enumerate(config):
            found += redacted_keys(value, prefix=f"{prefix.rstrip('.')}[{index}].")
    elif isinstance(config, str) and REDACTED in config:
        found.append(prefix.rstrip("."))
    return found


def data_pins(config: Mapping[str, Any], lineage: Mapping[str, Any] | None) -> list[dict]:
    """The tables a run read and their versions: ``where``, ``location``, ``version``.

    ``where`` is the config key to pin (``data``, ``feature_store.labels``,
    ``feature_store.lookups[i]``).

    Raises
    ------
    ReproductionError
        The config reads tables but the run logged no versions for them.

    Examples
    --------
    >>> data_pins({"data": {"path": "/t"}}, {"location": "/t", "delta_version": 3})
    [{'where': 'data', 'location': '/t', 'version': 3}]
    """
    if not config.get("data") and not config.get("feature_store"):
        return []
    if not isinstance(lineage, Mapping):
        raise ReproductionError("the run logged no lineage.json, so the Delta versions it read "
                                "are unknown; it cannot be reproduced pinned to them.")
    if config.get("data"):
        return [{"where": "data", "location": lineage.get("location"),
                 "version": _version(lineage.get("delta_version"), "data")}]
    tables = lineage.get("tables") or []
    lookups = (config.get("feature_store") or {}).get("lookups") or []
    labels = [t for t in tables if t.get("role") == "labels"]
    looked_up = [t for t in tables if t.get("role") == "lookup"]
    if len(labels) != 1 or len(looked_up) != len(lookups):
        raise ReproductionError(f"the run's lineage.json names {len(labels)} label table(s) and "
                                f"{len(looked_up)} lookup(s) but its config has 1 and "
                                f"{len(lookups)}; it cannot be pinned.")
    pins = [{"where": "feature_store.labels", "location": labels[0].get("location"),
             "version": _version(labels[0].get("delta_version"), "feature_store.labels")}]
    for index, table in enumerate(looked_up):
        where = f"feature_store.lookups[{index}]"
        pins.append({"where": where, "location": table.get("location"),
                     "version": _version(table.get("delta_version"), where)})
    return pins


def _version(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ReproductionError(f"the run's lineage.json has no Delta version for {where} "
                                f"(got {value!r}); it cannot be pinned.") from None


def pinned_config(config: Mapping[str, Any], pins: Sequence[Mapping[str, Any]], *,
                  run_id: str, tracking_uri: str) -> dict[str, Any]:
    """The config that re-runs ``run_id`` exactly: a new, modified copy.

    Every table is read at its pinned ``version`` (a ``timestamp`` is dropped);
    the run goes to ``tracking_uri`` tagged ``orchestrator.reproduction_of``;
    nothing is registered and no alias moves (``registered_model_name``,
    ``model_alias`` and ``promotion`` are removed), so a reproduction never
    changes what is served. Seeds are in the config already.

    Examples
    --------
    >>> pinned = pinned_config({"data": {"path": "/t", "timestamp": "2024-01-01"}},
    ...                        [{"where": "data", "location": "/t", "version": 3}],
    ...                        run_id="abc", tracking_uri="sqlite:///m.db")
    >>> pinned["data"], pinned["mlflow"]["tags"]
    ({'path': '/t', 'version': 3}, {'orchestrator.reproduction_of': 'abc'})
    """
    pinned = copy.deepcopy(dict(config))
    for pin in pins:
        section = _section(pinned, pin["where"])
        if pin["where"] == "data":  # labels.timestamp is a column, not time travel
            section.pop("timestamp", None)
        section["version"] = int(pin["version"])
    mlflow = dict(pinned.get("mlflow") or {})
    for key in ("registered_model_name", "model_alias"):
        mlflow.pop(key, None)
    mlflow["tracking_uri"] = tracking_uri
    mlflow["tags"] = {**(mlflow.get("tags") or {}), REPRODUCTION_TAG: run_id}
    if mlflow.get("run_name"):
        mlflow["run_name"] = f"{mlflow['run_name']}-reproduction"
    pinned["mlflow"] = mlflow
    pinned.pop("promotion", None)
    return pinned


def _section(config: dict, where: str) -> dict:
    if where == "data":
        return config["data"]
    store = config["feature_store"]
    if where == "feature_store.labels":
        return store["labels"]
    return store["lookups"][int(where.rsplit("[", 1)[1].rstrip("]"))]


def default_tolerance(config: Mapping[str, Any], estimator_params: Iterable[str]
                      ) -> tuple[float, str]:
    """The tolerance a reproduction is held to, and why.

    0 (exact) when the run is deterministic given its config: the estimator
    either takes no ``random_state`` or has one set, runs on one thread
    (``n_jobs`` unset or 1), and tuning, if any, is seeded with one trial at a
    time. Otherwise :data:`RELATIVE_TOLERANCE`, relative to the logged value.

    Parameters
    ----------
    config : mapping
        The run's resolved config.
    estimator_params : iterable of str
        The parameter names of the estimator class.

    Examples
    --------
    >>> default_tolerance({"model": {"params": {"random_state": 0}}}, ["C", "random_state"])
    (0.0, 'deterministic: random_state is set')
    >>> default_tolerance({"model": {"params": {}}}, ["n_estimators", "random_state"])[0]
    1e-09
    """
    model = config.get("model") or {}
    params = model.get("params") or {}
    names = set(estimator_params)
    reasons = []
    if "random_state" in names and params.get("random_state") is None:
        reasons.append("the estimator takes a random_state and none is set")
    if params.get("n_jobs") not in (None, 1):
        reasons.append(f"n_jobs={params['n_jobs']} sums in thread order")
    tuning = config.get("tuning")
    if isinstance(tuning, Mapping):
        if tuning.get("seed") is None:
            reasons.append("tuning has no seed")
        elif tuning.get("parallelism") != 1 and tuning.get("backend") != "local":
            reasons.append("tuning trials run in parallel and finish in any order")
    if reasons:
        return RELATIVE_TOLERANCE, "not deterministic: " + "; ".join(reasons)
    return 0.0, ("deterministic: random_state is set" if "random_state" in names
                 else "deterministic: the estimator takes no random_state")


def comparable_metric(name: str) -> bool:
    """Whether a logged metric describes the model (not timings or the alias holder)."""
    return not name.startswith(_UNCOMPARED_PREFIXES) and not name.endswith(_UNCOMPARED_SUFFIXES)


def compare_metrics(logged: Mapping[str, float], new: Mapping[str, float], *,
                    tolerance: float) -> list[dict[str, Any]]:
    """Metric by metric: the logged value, the new value and whether they agree.

    Two values agree when ``|new - logged| <= tolerance * max(1, |logged|)``
    (so 0 means bit-for-bit); a metric only one side has disagrees.

    Examples
    --------
    >>> compare_metrics({"roc_auc": 0.9}, {"roc_auc": 0.9}, tolerance=0.0)
    [{'metric': 'roc_auc', 'logged': 0.9, 'new': 0.9, 'difference': 0.0, 'agree': True}]
    """
    rows = []
    for name in sorted(set(logged) | set(new)):
        if not comparable_metric(name):
            continue
        old, now = logged.get(name), new.get(name)
        agree = difference = None
        if old is None or now is None:
            agree = False
        elif math.isnan(old) or math.isnan(now):
            agree, difference = math.isnan(old) and math.isnan(now), None
        else:
            difference = now - old
            agree = abs(difference) <= tolerance * max(1.0, abs(old))
        rows.append({"metric": name, "logged": old, "new": now, "difference": difference,
                     "agree": bool(agree)})
    return rows


def format_reproduction(run_id: str, new_run_id: str | None, rows: Sequence[Mapping],
                        *, tolerance: float, reason: str,
                        pins: Sequence[Mapping[str, Any]]) -> str:
    """The text ``orchestrator reproduce`` prints."""
    lines = [f"reproduction of run {run_id}: new run {new_run_id}",
             f"tolerance: {tolerance:g} ({reason})"]
    lines += [f"pinned: {pin['where']} {pin['location']} @ version {pin['version']}"
              for pin in pins]
    width = max([len("metric"), *(len(r["metric"]) for r in rows)])
    lines.append(f"{'metric':<{width}}  {'logged':>20}  {'new':>20}  agree")
    for row in rows:
        lines.append(f"{row['metric']:<{width}}  {_number(row['logged']):>20}  "
                     f"{_number(row['new']):>20}  {'yes' if row['agree'] else 'NO'}")
    failed = [r["metric"] for r in rows if not r["agree"]]
    lines.append(f"{len(rows) - len(failed)} of {len(rows)} metric(s) agree"
                 + (f"; disagree: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "-" if value is None else repr(float(value))


def check_versions_readable(spark, pins: Sequence[Mapping[str, Any]]) -> None:
    """Fail before training when a pinned version's data files are gone (VACUUM).

    The Delta log keeps naming a vacuumed version's files after VACUUM deleted
    them, so a read fails only halfway through the job; listing the snapshot's
    files and checking that each exists fails here, naming the table and version.

    Raises
    ------
    PinnedVersionUnavailableError
        A version's log or files cannot be read.
    """
    from orchestrator.io.delta import open_delta_source, read_version, spark_error_message, \
        spark_errors
    from orchestrator.specs.data import DataSpec

    errors = spark_errors()
    for pin in pins:
        location, version = str(pin["location"]), int(pin["version"])
        by_path = "/" in location or ":" in location
        spec = DataSpec(path=location if by_path else None,
                        table=None if by_path else location, version=version)
        what = f"{pin['where']} ({location}) version {version}"
        try:
            source = open_delta_source(spark, spec, where=pin["where"])
            files = read_version(spark, source, version).inputFiles()
        except errors as exc:
            raise PinnedVersionUnavailableError(
                f"{what} can no longer be read: {spark_error_message(exc)}. The run cannot be "
                "reproduced from this table.", location=location, version=version) from exc
        missing = [f for f in files if _file_exists(spark, f) is False]
        if missing:
            raise PinnedVersionUnavailableError(
                f"{what} can no longer be read: {len(missing)} of its {len(files)} data "
                f"file(s) are gone (removed by VACUUM?), e.g. {missing[0]}. The run cannot be "
                "reproduced from this table; restore the files or the table, or re-run "
                "unpinned with orchestrator run.", location=location, version=version)


def _file_exists(spark, uri: str) -> bool | None:
    """Whether a data file exists; None when this process cannot tell (Spark Connect)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return os.path.exists(unquote(parsed.path))
    try:
        jvm, hadoop_conf = spark._jvm, spark._jsc.hadoopConfiguration()
        path = jvm.org.apache.hadoop.fs.Path(uri)
        return bool(path.getFileSystem(hadoop_conf).exists(path))
    except Exception:  # noqa: BLE001 - no JVM here (Connect): the read itself will tell
        return None


# ----------------------------------------------------------------------------- comparing


def diff_runs(run_a: Mapping[str, Any], run_b: Mapping[str, Any]) -> dict[str, Any]:
    """The differences between two logged runs (as :func:`read_logged_run` returns them).

    Returns
    -------
    dict
        ``runs`` ([a, b]) and four lists of ``{"key", "a", "b"}`` (a side that
        lacks the key holds None): ``specs`` (the resolved configs, flattened),
        ``data`` (the tables and Delta versions read), ``libraries`` (``lib.*``
        params) and ``metrics`` (with ``difference`` when both are numbers).

    Examples
    --------
    >>> a = {"run_id": "a", "config": {"model": {"params": {"C": 1}}}, "lineage": None,
    ...      "params": {"lib.sklearn": "1.9"}, "metrics": {"roc_auc": 0.8}}
    >>> b = {**a, "run_id": "b", "metrics": {"roc_auc": 0.9}}
    >>> [row["key"] for row in diff_runs(a, b)["metrics"]]
    ['roc_auc']
    """
    def libraries(run):
        return {k: v for k, v in (run.get("params") or {}).items() if k.startswith("lib.")}

    metrics = _differences(_comparable(run_a.get("metrics")), _comparable(run_b.get("metrics")))
    for row in metrics:
        if isinstance(row["a"], (int, float)) and isinstance(row["b"], (int, float)):
            row["difference"] = row["b"] - row["a"]
    return {
        "runs": [run_a.get("run_id"), run_b.get("run_id")],
        "specs": _differences(_flatten(run_a.get("config") or {}),
                              _flatten(run_b.get("config") or {})),
        "data": _differences(_data_versions(run_a.get("lineage")),
                             _data_versions(run_b.get("lineage"))),
        "libraries": _differences(libraries(run_a), libraries(run_b)),
        "metrics": metrics,
    }


def _comparable(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metrics or {}).items() if not k.startswith("timing/")}


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "a": a.get(key), "b": b.get(key)} for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and any(isinstance(v, (Mapping, list)) for v in value):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix.rstrip('.')}[{index}]."))
        return out
    return {prefix.rstrip("."): value}


def _data_versions(lineage: Mapping[str, Any] | None) -> dict[str, Any]:
    """``<role> <location>`` -> Delta version, plus the row count and filter read."""
    if not isinstance(lineage, Mapping):
        return {}
    out: dict[str, Any] = {}
    tables = lineage.get("tables") or [{"role": "data", "location": lineage.get("location"),
                                        "delta_version": lineage.get("delta_version"),
                                        "row_count": lineage.get("row_count")}]
    for table in tables:
        name = f"{table.get('role')} {table.get('location')}"
        out[f"{name} delta_version"] = table.get("delta_version")
        out[f"{name} row_count"] = table.get("row_count")
    for key in ("filter", "timestamp", "sampled"):
        if lineage.get(key) is not None:
            out[key] = lineage[key]
    return out


def format_comparison(diff: Mapping[str, Any]) -> str:
    """The text ``orchestrator compare`` prints."""
    run_a, run_b = diff["runs"]
    lines = [f"compare run A {run_a} with run B {run_b}"]
    titles = {"specs": "Specs (resolved config)", "data": "Data versions",
              "libraries": "Library versions", "metrics": "Metrics"}
    for section, title in titles.items():
        rows = diff.get(section) or []
        lines += ["", f"{title}: {len(rows) or 'no'} difference(s)"]
        for row in rows:
            change = f"  {row['key']}: {_shown(row['a'])} -> {_shown(row['b'])}"
            if row.get("difference") is not None:
                change += f" ({row['difference']:+.6g})"
            lines.append(change)
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
