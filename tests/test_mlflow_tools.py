"""The logged model works with MLflow's own tools, not only with our loader (issue 17).

One workflow run in a named experiment, against a real ``mlflow server``, is
checked with what a user of MLflow would reach for: ``mlflow.pyfunc.load_model``
on ``runs:/``, ``models:/name/version`` and ``models:/name@alias``; the
``mlflow models predict`` CLI; and ``mlflow models serve`` answering a POST
/invocations whose body is the serving input example MLflow logged with the
model. The oracle is the pipeline the workflow returned, predicting the same
rows in this process. The run's name held a token: it is read back redacted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from _mlflow_server import MLFLOW_BIN, free_port, running_mlflow_server, stop_process_group
from orchestrator import run_ml_workflow
from orchestrator.redaction import REDACTED
from orchestrator.specs import Problems
from orchestrator.specs.mlflow import parse_mlflow_spec
from orchestrator.tracking import child_run, ensure_run_ends, start_tracking

EXPERIMENT = "named-exp"
MODEL_NAME = "tools_model"
ALIAS = "champion"
SECRET_TOKEN = "dapi" + "7e1d4c2a" * 4
RUN_NAME = f"nightly token {SECRET_TOKEN}"
FEATURES = [{"columns": [f"f{i}" for i in range(4)], "type": "numeric"},
            {"name": "segment", "type": "categorical"}]
CLI_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-tools-server")) as url:
        yield url


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """One small tracked run, shared by every check (training is not what is tested)."""
    raw = load_breast_cancer(as_frame=True)
    X = raw.data.iloc[:120, :4].copy()
    X.columns = [f"f{i}" for i in range(4)]
    X["segment"] = np.where(raw.data.iloc[:120, 7] > raw.data.iloc[:120, 7].median(), "a", "b")
    y = raw.target.iloc[:120]
    results = run_ml_workflow(
        FEATURES, {"estimator": "logistic_regression", "params": {"max_iter": 500}}, X=X, y=y,
        validation_strategy="none",
        mlflow_spec={"tracking_uri": server, "experiment_name": EXPERIMENT, "run_name": RUN_NAME,
                     "registered_model_name": MODEL_NAME, "model_alias": ALIAS,
                     "log_plots": False},
        output_dir=tmp_path_factory.mktemp("mlflow-tools-out"))
    assert results["mlflow_run_id"], results["warnings"]
    assert not [w for w in results["warnings"] if w["step"].startswith("mlflow")]
    return results, X


@contextlib.contextmanager
def _global_tracking_uri(uri: str):
    """``runs:/`` and ``models:/`` URIs resolve against the global tracking URI."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _cli_env(server: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = server
    # As an activated venv has it: `mlflow models serve` execs `uvicorn` found on PATH.
    env["PATH"] = os.pathsep.join([str(MLFLOW_BIN.parent), env.get("PATH", "")])
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


def _serving_input(server: str, run_id: str, dst: Path) -> str:
    import mlflow

    # Global URI, not tracking_uri=: MLflow 3.17 does not pass tracking_uri on to the
    # models:/<model_id> repository that a runs:/ URI of a LoggedModel resolves to.
    with _global_tracking_uri(server):
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run_id}/model/serving_input_example.json", dst_path=str(dst))
    return Path(path).read_text()


def _frame_of(serving_input: str) -> pd.DataFrame:
    split = json.loads(serving_input)["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])


# ----------------------------------------------------------------------------- pyfunc


@pytest.mark.mlflow_server
def test_the_logged_model_belongs_to_the_runs_experiment(server, trained):
    from mlflow import MlflowClient

    results, _ = trained
    client = MlflowClient(server)
    run = client.get_run(results["mlflow_run_id"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert run.info.experiment_id == experiment.experiment_id != "0"
    model_id = results["mlflow_model"]["model_uri"].removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    assert (logged.experiment_id, logged.source_run_id, logged.name) == (
        experiment.experiment_id, run.info.run_id, "model")
    assert str(logged.status) in ("READY", "LoggedModelStatus.READY")
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    version = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    assert (version.run_id, version.version) == (run.info.run_id,
                                                 results["mlflow_model"]["model_version"])


@pytest.mark.mlflow_server
@pytest.mark.parametrize("uri", ["runs:/{run_id}/model", f"models:/{MODEL_NAME}/{{version}}",
                                 f"models:/{MODEL_NAME}@{ALIAS}"])
def test_pyfunc_loads_every_documented_uri(server, trained, uri):
    import mlflow

    results, X = trained
    uri = uri.format(run_id=results["mlflow_run_id"],
                     version=results["mlflow_model"]["model_version"])
    with _global_tracking_uri(server):
        model = mlflow.pyfunc.load_model(uri)
    expected = results["pipeline"].predict(X)
    assert len(set(expected)) == 2  # both labels occur: a constant model would not pass
    np.testing.assert_array_equal(model.predict(X), expected)
    assert model.metadata.flavors["sklearn"]["serialization_format"] == "skops"


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.mlflow_server
def test_mlflow_models_predict_cli(server, trained, tmp_path):
    results, X = trained
    rows = X.head(40)
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps(
        {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}))
    output_path = tmp_path / "predictions.json"
    completed = subprocess.run(
        [str(MLFLOW_BIN), "models", "predict", "-m", f"runs:/{results['mlflow_run_id']}/model",
         "-i", str(input_path), "-t", "json", "-o", str(output_path), "--env-manager", "local"],
        check=False, env=_cli_env(server), cwd=tmp_path, capture_output=True, text=True,
        timeout=CLI_TIMEOUT_S)
    assert completed.returncode == 0, completed.stderr[-3000:]
    predictions = json.loads(output_path.read_text())["predictions"]
    np.testing.assert_array_equal(np.asarray(predictions), results["pipeline"].predict(rows))


# ----------------------------------------------------------------------------- serving


def _post(url: str, body: str) -> dict:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_until_pinged(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {process.returncode}:\n"
                                 f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"mlflow models serve did not answer /ping within {timeout_s} "
                                 f"s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.mark.mlflow_server
def test_mlflow_models_serve_answers_the_logged_serving_example(server, trained, tmp_path):
    results, _ = trained
    body = _serving_input(server, results["mlflow_run_id"], tmp_path)
    rows = _frame_of(body)
    assert len(rows) == 5 and "segment" in rows.columns
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(MLFLOW_BIN), "models", "serve", "-m", f"models:/{MODEL_NAME}@{ALIAS}",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env=_cli_env(server), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            _wait_until_pinged(url, process, log_path, CLI_TIMEOUT_S)
            answer = _post(url + "/invocations", body)
        finally:
            stop_process_group(process)
    np.testing.assert_array_equal(np.asarray(answer["predictions"]),
                                  results["pipeline"].predict(rows))


# ----------------------------------------------------------------------------- redaction


@pytest.mark.mlflow_server
def test_a_run_name_holding_a_token_is_stored_redacted(server, trained):
    from mlflow import MlflowClient

    results, _ = trained
    client = MlflowClient(server)
    run = client.get_run(results["mlflow_run_id"])
    assert run.info.run_name == f"nightly token {REDACTED}"
    assert run.data.tags["mlflow.runName"] == f"nightly token {REDACTED}"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([experiment.experiment_id],
                               filter_string=f"attributes.run_name LIKE '%{SECRET_TOKEN}%'")
    assert found == []


def test_run_and_child_run_names_are_redacted_in_a_local_store(tmp_path):
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    problems = Problems()
    spec = parse_mlflow_spec({"tracking_uri": store, "experiment_name": EXPERIMENT,
                              "run_name": RUN_NAME}, problems)
    assert spec is not None and not problems
    tracker = start_tracking(spec, resolved_config={})
    with ensure_run_ends(tracker), \
            child_run(tracker, f"trial-1 password={SECRET_TOKEN}") as trial:
        pass
    client = MlflowClient(store)
    assert client.get_run(tracker.run_id).info.run_name == f"nightly token {REDACTED}"
    assert client.get_run(trial.run_id).info.run_name == f"trial-1 password={REDACTED}"
    stored = (tmp_path / "mlflow.db").read_bytes()
    assert SECRET_TOKEN.encode() not in stored
