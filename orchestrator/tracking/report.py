"""A run's report: one self-contained HTML file people can open, built from what the run logged.

:func:`collect_report` reads a run back from MLflow (metrics with their
per-fold values, ``summary.txt``, ``lineage.json``, ``tuning_summary.json``,
``calibration_summary.json``, ``warnings.json``, the promotion decision and
every ``plots/*.png``) through a client bound to the run's tracking URI;
:func:`render_report` turns that plain content into HTML with every image
embedded as a base64 ``data:`` URI, so the file needs nothing else (no
network, no sibling files). The workflow logs it as ``report.html``;
``orchestrator report RUN_ID -o report.html`` writes it for any run.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.tracking.run_reader import FOLD_SUFFIX, read_run

logger = logging.getLogger(__name__)

__all__ = ["REPORT_ARTIFACT", "collect_report", "render_report", "write_report"]

REPORT_ARTIFACT = "report.html"
_JSON_ARTIFACTS = ("lineage.json", "tuning_summary.json", "calibration_summary.json",
                   "warnings.json", "promotion/comparison.json")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def collect_report(client, run_id: str) -> dict[str, Any]:
    """Read what a run logged into plain content for :func:`render_report`.

    Parameters
    ----------
    client : mlflow.MlflowClient
        Bound to the run's tracking URI.
    run_id : str

    Returns
    -------
    dict
        ``run`` (id, name, status, experiment, start), ``params``, ``tags``,
        ``summary_text``, ``lineage``, ``metrics`` (rows with ``value``,
        ``std`` and ``folds``), ``tuning``, ``calibration``, ``warnings``,
        ``promotion`` and ``images`` (name -> PNG bytes).

    Raises
    ------
    TrackingError
        The run does not exist or the tracking store cannot be read.

    Examples
    --------
    >>> content = collect_report(MlflowClient(tracking_uri=uri), run_id)  # doctest: +SKIP
    >>> Path("report.html").write_text(render_report(content))           # doctest: +SKIP
    """
    logged = read_run(client, run_id, folders=(None, "plots", "promotion"), wanted=_wanted)
    run, files = logged.run, logged.artifacts
    content = {
        "run": {"run_id": run_id, "run_name": run.info.run_name,
                "status": run.info.status, "experiment_id": run.info.experiment_id,
                "start": _when(run.info.start_time)},
        "params": dict(run.data.params),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "summary_text": _read_text(files.get("summary.txt")),
        "metrics": _metric_rows(run.data.metrics, logged.folds),
        "images": {name: data for name, data in sorted(files.items())
                   if name.startswith("plots/") and name.endswith(".png")},
    }
    for name in _JSON_ARTIFACTS:
        content[name.split("/")[0].removesuffix(".json")] = _read_json(name, files.get(name))
    content["tuning"] = content.pop("tuning_summary")
    content["calibration"] = content.pop("calibration_summary")
    content["promotion"] = content["promotion"] or _promotion_from_tags(run.data.tags)
    return content


def _wanted(path: str) -> bool:
    return (path == "summary.txt" or path in _JSON_ARTIFACTS
            or (path.startswith("plots/") and path.endswith(".png")))


def _read_text(data: bytes | None) -> str | None:
    return data.decode() if data is not None else None


def _read_json(name: str, data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        logger.warning("report: %s is not valid JSON; left out", name)
        return None


def _when(millis: int | None) -> str | None:
    if not millis:
        return None
    return datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _metric_rows(metrics: Mapping[str, float],
                 folds: Mapping[str, Mapping[int, float]]) -> list[dict[str, Any]]:
    """Validation metrics with their per-fold values (logged as ``<name>_fold`` steps)."""
    rows = []
    for name in sorted(metrics):
        if "/" in name or name.endswith(("_std", FOLD_SUFFIX)):
            continue  # timings, tuning and calibration have their own sections
        rows.append({"name": name, "value": metrics[name], "std": metrics.get(f"{name}_std"),
                     "folds": list(folds.get(f"{name}{FOLD_SUFFIX}", {}).values())})
    return rows


def _promotion_from_tags(tags: Mapping[str, str]) -> dict | None:
    found = {k.removeprefix("orchestrator.promotion."): v for k, v in tags.items()
             if k.startswith("orchestrator.promotion.")}
    return found or None


# ----------------------------------------------------------------------------- rendering


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f9;
color:#1d2330}
header{background:#1f3b63;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px}
header .meta{opacity:.85;font-size:13px}
main{padding:16px 32px;max-width:1200px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);
margin:14px 0;padding:12px 20px}
h2{font-size:17px;margin:6px 0 10px;color:#1f3b63}
table{border-collapse:collapse;font-size:13px}
td,th{padding:4px 10px;border-bottom:1px solid #e3e7ee;text-align:left;vertical-align:top}
th{background:#eef2f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f8fa;padding:10px;overflow:auto;white-space:pre-wrap;font-size:12px;border-radius:6px}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:600;color:#fff}
.pass{background:#1e8e3e}.reject{background:#c5221f}.none{background:#80868b}
.warn{color:#b06000}
figure{display:inline-block;margin:8px;vertical-align:top}
figure img{max-width:540px;border:1px solid #e3e7ee;border-radius:4px}
figcaption{font-size:12px;color:#5f6368;text-align:center}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return _e(value)


def _kv_table(values: Mapping[str, Any] | None, *, skip: Sequence[str] = ()) -> str:
    if not values:
        return "<p>off</p>"
    rows = []
    for key, value in values.items():
        if key in skip:
            continue
        shown = (_e(json.dumps(value, default=str)) if isinstance(value, (Mapping, list))
                 else _fmt(value))
        rows.append(f"<tr><th>{_e(key)}</th><td>{shown}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _fold_strip(folds: Sequence[float], low: float, high: float) -> str:
    """A small inline SVG: one dot per fold on the metric's [min, max] range."""
    if not folds:
        return ""
    span = (high - low) or 1.0
    dots = "".join(f'<circle cx="{6 + 148 * (f - low) / span:.1f}" cy="8" r="3.5" '
                   f'fill="#1f3b63" fill-opacity="0.7"/>' for f in folds)
    return (f'<svg width="160" height="16" role="img" aria-label="fold spread">'
            f'<line x1="6" y1="8" x2="154" y2="8" stroke="#c9d1de"/>{dots}</svg>')


def _metrics_section(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>no validation metrics</p>"
    body = []
    for row in rows:
        folds = [f for f in row.get("folds") or [] if isinstance(f, (int, float))]
        low, high = (min(folds), max(folds)) if folds else (None, None)
        body.append(
            f"<tr><td>{_e(row['name'])}</td><td class='num'>{_fmt(row.get('value'))}</td>"
            f"<td class='num'>{_fmt(row.get('std')) if row.get('std') is not None else ''}</td>"
            f"<td class='num'>{_fmt(low) if folds else ''}</td>"
            f"<td class='num'>{_fmt(high) if folds else ''}</td>"
            f"<td class='num'>{len(folds) or ''}</td>"
            f"<td>{_fold_strip(folds, low, high) if folds else ''}</td></tr>")
    return ("<table><tr><th>metric</th><th>value</th><th>std</th><th>fold min</th>"
            "<th>fold max</th><th>folds</th><th>spread</th></tr>" + "".join(body) + "</table>")


def _tuning_section(tuning: Mapping[str, Any] | None, images: Mapping[str, bytes]) -> str:
    if not tuning:
        return "<p>off</p>"
    head = _kv_table(tuning, skip=("trials", "history")) + "".join(
        _figure(name, data) for name, data in images.items() if "tuning" in name)
    trials = tuning.get("trials") or []
    if not trials:
        return head
    rows = "".join(
        f"<tr><td class='num'>{_e(t.get('number', i))}</td><td>{_e(t.get('status', ''))}</td>"
        f"<td class='num'>{_fmt(t.get('score'))}</td>"
        f"<td class='num'>{_fmt(t.get('duration_s'))}</td>"
        f"<td>{_e(json.dumps(t.get('params') or {}, default=str))}</td></tr>"
        for i, t in enumerate(trials) if isinstance(t, Mapping))
    return (head + "<h3>Trials</h3><table><tr><th>#</th><th>status</th><th>score</th>"
            "<th>seconds</th><th>params</th></tr>" + rows + "</table>")


def _calibration_section(calibration: Mapping[str, Any] | None,
                         images: Mapping[str, bytes]) -> str:
    if not calibration:
        return "<p>off</p>"
    before = calibration.get("metrics_before") or calibration.get("before") or {}
    after = calibration.get("metrics_after") or calibration.get("after") or {}
    parts = [_kv_table(calibration, skip=("metrics_before", "metrics_after", "before", "after"))]
    names = [n for n in dict.fromkeys([*before, *after])
             if isinstance(before.get(n, after.get(n)), (int, float))]
    if names:
        rows = "".join(f"<tr><td>{_e(n)}</td><td class='num'>{_fmt(before.get(n, ''))}</td>"
                       f"<td class='num'>{_fmt(after.get(n, ''))}</td></tr>" for n in names)
        parts.append("<h3>Before / after</h3><table><tr><th>metric</th><th>before</th>"
                     f"<th>after</th></tr>{rows}</table>")
    for name, data in images.items():
        if "reliability" in name:
            parts.append(_figure(name, data))
    return "".join(parts)


def _promotion_section(promotion: Mapping[str, Any] | None) -> str:
    if not promotion:
        return "<p>no promotion gate</p>"
    decision = str(promotion.get("decision", "")).lower()
    badge = {"promoted": "pass", "rejected": "reject"}.get(decision, "none")
    parts = [f"<p><span class='badge {badge}'>{_e(decision or 'unknown')}</span> "
             f"{_e(promotion.get('reason', ''))}</p>"]
    table = promotion.get("comparison")
    if isinstance(table, list) and table:
        rows = "".join(
            f"<tr><td>{_e(r.get('metric'))}</td><td class='num'>{_fmt(r.get('candidate'))}</td>"
            f"<td class='num'>{_fmt(r.get('champion')) if r.get('champion') is not None else '-'}"
            f"</td><td>{_e(r.get('rule') or '')}</td><td>{_e(r.get('outcome') or '')}</td></tr>"
            for r in table if isinstance(r, Mapping))
        parts.append("<table><tr><th>metric</th><th>candidate</th><th>champion</th><th>rule</th>"
                     f"<th>outcome</th></tr>{rows}</table>")
    parts.append(_kv_table(promotion, skip=("comparison", "reason", "decision")))
    return "".join(parts)


def _figure(name: str, data: bytes) -> str:
    if not data.startswith(_PNG_MAGIC):
        return f"<p class='warn'>{_e(name)}: not a PNG, left out</p>"
    encoded = base64.b64encode(data).decode("ascii")
    caption = Path(name).stem.replace("_", " ")
    return (f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{encoded}'/>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_report(content: Mapping[str, Any]) -> str:
    """The HTML text of a report; every image inline, nothing fetched when opened.

    Parameters
    ----------
    content : mapping
        What :func:`collect_report` returns (every key optional).

    Returns
    -------
    str
        One self-contained HTML document.
    """
    run = content.get("run") or {}
    images = content.get("images") or {}
    warnings = content.get("warnings") or []
    promotion = content.get("promotion")
    lineage = content.get("lineage")
    sections = [
        ("Promotion", _promotion_section(promotion)),
        ("Summary", f"<pre>{_e(content.get('summary_text') or 'no summary logged')}</pre>"),
        ("Data lineage", _kv_table(lineage) if lineage else "<p>no lineage logged</p>"),
        ("Metrics", _metrics_section(content.get("metrics") or [])),
        ("Tuning", _tuning_section(content.get("tuning"), images)),
        ("Calibration", _calibration_section(content.get("calibration"), images)),
        ("Plots", "".join(_figure(name, data) for name, data in images.items()
                          if "reliability" not in name and "tuning" not in name)
         or "<p>no plots logged</p>"),
        (f"Warnings ({len(warnings)})",
         "<ul>" + "".join(f"<li class='warn'>[{_e(w.get('step'))}] {_e(w.get('reason'))}</li>"
                          if isinstance(w, Mapping) else f"<li class='warn'>{_e(w)}</li>"
                          for w in warnings) + "</ul>" if warnings else "<p>none</p>"),
    ]
    title = f"Run {run.get('run_name') or run.get('run_id') or ''}".strip()
    meta = " &middot; ".join(_e(f"{k}: {run[k]}") for k in
                             ("run_id", "status", "experiment_id", "start") if run.get(k))
    body = "".join(f"<section id='{_e(name.split(' ')[0].lower())}'><h2>{_e(name)}</h2>{html_}"
                   "</section>" for name, html_ in sections)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><div class='meta'>{meta}</div></header>"
            f"<main>{body}</main></body></html>")


def write_report(client, run_id: str, output: str | Path) -> Path:
    """Collect, render and write the report of ``run_id`` to ``output``; return the path."""
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(collect_report(client, run_id)), encoding="utf-8")
    return path
