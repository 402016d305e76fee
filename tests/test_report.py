"""The run report: logged by every tracked run, written for any run by the CLI, and rendered
by a real headless Chromium (Debian's package) with every image present."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from orchestrator import run_ml_workflow
from orchestrator.entrypoints.cli import main
from orchestrator.tracking.report import render_report

FEATURES = [{"columns": [f"f{i}" for i in range(6)], "type": "numeric"},
            {"name": "segment", "type": "categorical"}]
CHROMIUM = "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chromium() -> str:
    """Debian's Chromium, installed here when missing and we may (root, apt)."""
    if not os.path.exists(CHROMIUM) and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False,
                       capture_output=True, timeout=1200)
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is needed for the report test: apt-get install -y chromium")
    return CHROMIUM


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    raw = load_breast_cancer(as_frame=True)
    X = raw.data.iloc[:, :6].copy()
    X.columns = [f"f{i}" for i in range(6)]
    X["segment"] = np.where(raw.data.iloc[:, 7] > raw.data.iloc[:, 7].median(), "a", "b")
    root = tmp_path_factory.mktemp("report")
    store = f"sqlite:///{root / 'mlflow.db'}"
    results = run_ml_workflow(
        FEATURES, {"estimator": "logistic_regression", "params": {"max_iter": 500}},
        X=X, y=raw.target, validation_params={"cv_folds": 3},
        tuning_spec={"search_space": {"C": {"dist": "loguniform", "low": 0.01, "high": 10}},
                     "max_evals": 4, "backend": "local", "cv_folds": 2, "seed": 1},
        calibration_spec={"method": "sigmoid", "cv": 3},
        mlflow_spec={"tracking_uri": store, "experiment_name": "report-test",
                     "run_name": "report-lr"},
        output_dir=root / "out")
    return store, results, root


def test_every_tracked_run_logs_a_self_contained_report(tracked_run):
    from mlflow import MlflowClient

    store, results, root = tracked_run
    run_id = results.mlflow_run_id
    assert run_id and not [w for w in results.warnings if w.step.startswith("mlflow")]
    client = MlflowClient(tracking_uri=store)
    path = Path(client.download_artifacts(run_id, "report.html", str(root / "dl")))
    text = path.read_text()
    for section in ("Summary", "Data lineage", "Metrics", "Tuning", "Calibration",
                    "Plots", "Warnings", "Promotion"):
        assert f"<h2>{section}" in text
    # Per-fold spread: 3 folds of roc_auc, their min and max shown.
    folds = results.metrics["roc_auc"]["folds"]
    assert f"{min(folds):.4f}" in text and f"{max(folds):.4f}" in text
    assert "reliability" in text and "tuning history" in text
    assert "src='http" not in text and 'src="http' not in text  # nothing fetched


@pytest.mark.browser
def test_report_cli_writes_it_and_chromium_renders_every_image(tracked_run, tmp_path, capsys):
    store, results, _ = tracked_run
    output = tmp_path / "report.html"
    code = main(["report", results.mlflow_run_id, "-o", str(output), "--tracking-uri", store])
    assert code == 0, capsys.readouterr().err
    html = output.read_text()
    sources = re.findall(r"<img[^>]*src='([^']*)'", html)
    assert len(sources) >= 4  # ROC, PR, confusion matrix, reliability, tuning history
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_MAGIC)

    # The DOM as Chromium built it, after a script measured every image it decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", (
        "<script>document.body.setAttribute('data-images', JSON.stringify("
        "Array.from(document.images).map(i => [i.complete, i.naturalWidth])));</script>"
        "</body>")))
    dom = _browser(tmp_path, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    measured = re.search(r'data-images="([^"]*)"', dom.stdout)
    assert measured, dom.stdout[:2000]
    import json

    images = json.loads(measured.group(1).replace("&quot;", '"'))
    assert len(images) == len(sources)
    assert all(complete and width > 0 for complete, width in images), images  # none broken

    screenshot = tmp_path / "report.png"
    shot = _browser(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2400",
                    output.as_uri())
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(screenshot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, tables and plots, not blank
    if os.environ.get("REPORT_SCREENSHOT_DIR"):  # to look at it
        shutil.copy(screenshot, Path(os.environ["REPORT_SCREENSHOT_DIR"]) / "report.png")


def test_report_for_an_unknown_run_is_a_clear_error(tracked_run, tmp_path, capsys):
    store, _, _ = tracked_run
    code = main(["report", "0" * 32, "-o", str(tmp_path / "r.html"), "--tracking-uri", store])
    assert code == 1
    assert "run '" + "0" * 32 + "' not found" in capsys.readouterr().err


def test_render_escapes_and_leaves_out_what_is_not_a_png():
    html = render_report({"run": {"run_id": "r1", "run_name": "<b>x</b>"},
                          "images": {"plots/bad.png": b"GIF89a"},
                          "warnings": [{"step": "tuning", "reason": "<script>"}]})
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<script>" not in html and "not a PNG" in html and "<img" not in html
