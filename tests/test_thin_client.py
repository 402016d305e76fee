"""The thin client, like Databricks Connect: the workflow from a JVM-free Python environment.

A Spark Connect server runs as a separate process, started from the full pyspark
(``spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer``
with Delta's jars and settings) on loopback. A second venv holds
``pyspark-client`` (no pyspark, no py4j, no JVM) with the project's other
dependencies and the project; from it the ``orchestrator`` command writes the
demo Delta tables, trains a model on one of them with MLflow tracking, and
batch-scores the table with that model, all through ``--remote sc://...``.

The client venv is built with uv from its cache and reused while
requirements.txt, constraints.txt and setup.py are unchanged (a stamp file, as
dev.sh does for .venv). The server's Python workers run this venv's interpreter,
as a cluster's executors run the wheel installed on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.connect_server]

REPO = Path(__file__).resolve().parent.parent
PYSPARK_CLIENT = "pyspark-client==4.2.0"
CLIENT_VENV = Path(os.environ.get("ORCHESTRATOR_CLIENT_VENV", REPO / ".venv-client"))
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client_venv() -> Path:
    """The pyspark-client venv, rebuilt only when the requirements changed."""
    digest = hashlib.sha1(PYSPARK_CLIENT.encode())
    for name in ("requirements.txt", "constraints.txt", "setup.py"):
        digest.update((REPO / name).read_bytes())
    stamp = CLIENT_VENV / f".installed-{digest.hexdigest()[:12]}"
    python = CLIENT_VENV / "bin" / "python"
    if stamp.exists() and python.exists():
        return CLIENT_VENV
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.fail(f"uv not found next to {sys.executable}: install requirements-dev.txt")
    shutil.rmtree(CLIENT_VENV, ignore_errors=True)
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(CLIENT_VENV)],
                   check=True)
    # The project's install_requires leave pyspark and delta-spark out (the "spark" extra):
    # with pyspark-client beside them this is what a Connect-only runtime installs.
    subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(python),
                    "-c", str(REPO / "constraints.txt"), PYSPARK_CLIENT, "-e", str(REPO)],
                   check=True)
    stamp.touch()
    return CLIENT_VENV


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """A Spark Connect server (local[2], Delta) as its own process on a loopback port."""
    from orchestrator.io.session import DELTA_SQL_CONF, delta_package_coordinate

    work = tmp_path_factory.mktemp("connect-server")
    port = _free_port()
    conf = {
        **DELTA_SQL_CONF,
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.sql.warehouse.dir": str(work / "warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work}",
        "spark.databricks.delta.snapshotPartitions": "2",
    }
    command = [str(Path(sys.executable).with_name("spark-submit")), "--master", "local[2]",
               "--class", SERVER_CLASS, "--name", "orchestrator-thin-client-test",
               "--packages", delta_package_coordinate()]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command.append("spark-internal")
    # The executors' Python: this venv (scikit-learn, MLflow, the project), as on a cluster.
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    env.pop("SPARK_REMOTE", None)
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=work, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail("the Spark Connect server exited early:\n"
                            + (work / "server.log").read_text()[-3000:])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the Spark Connect server did not listen within 300 s:\n"
                                + (work / "server.log").read_text()[-3000:])
                time.sleep(1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def client_python() -> Path:
    return _client_venv() / "bin" / "python"


def _client_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME", "SPARK_REMOTE",
                        "PYTHONPATH", "VIRTUAL_ENV")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return env


def _run_client(python: Path, args: list[str], env: dict[str, str], cwd: Path,
                ) -> subprocess.CompletedProcess:
    """Run ``orchestrator ...`` in the client venv; check that no JVM is its child meanwhile."""
    process = subprocess.Popen([str(python), "-m", "orchestrator", *args], env=env, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: set[str] = set()
    while process.poll() is None:
        children |= _descendant_commands(process.pid)
        time.sleep(0.5)
    stdout, stderr = process.communicate()
    assert not [c for c in children if "java" in c], f"a JVM under the client: {children}"
    assert process.returncode == 0, (f"orchestrator {' '.join(args)} failed "
                                     f"({process.returncode}):\n{stdout}\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(args, 0, stdout, stderr)


def _descendant_commands(pid: int) -> set[str]:
    found: set[str] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                found.add(Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                          .decode(errors="replace"))
            except OSError:
                continue
            pending.append(int(child))
    return found


def test_the_client_venv_has_spark_connect_and_no_jvm_side(client_python, tmp_path):
    # A script file, not -c: pyspark.sql.connect takes a __main__ without __file__ for doctests.
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib.util, json, pyspark.sql.connect.session\n"
                     "from pyspark.util import is_remote_only\n"
                     "print(json.dumps({'remote_only': is_remote_only(),\n"
                     "  'py4j': importlib.util.find_spec('py4j') is not None,\n"
                     "  'delta': importlib.util.find_spec('delta') is not None,\n"
                     "  'jars': importlib.util.find_spec('pyspark.jars') is not None}))\n")
    out = subprocess.run([str(client_python), str(probe)], check=True, capture_output=True,
                         text=True, env={k: v for k, v in os.environ.items()
                                         if k != "PYTHONPATH"}).stdout
    assert json.loads(out) == {"remote_only": True, "py4j": False, "delta": False,
                               "jars": False}


def test_train_and_score_from_a_pyspark_client_only_interpreter(connect_server, client_python,
                                                                tmp_path):
    env = _client_env(tmp_path)
    demo = tmp_path / "demo"
    _run_client(client_python, ["demo-data", "--remote", connect_server, "--output", str(demo),
                                "--customers", "400"], env, tmp_path)
    config = tmp_path / "job.yml"
    config.write_text(f"""
name: thin-client
data: {{path: {demo / 'churn'}, label: churned}}
features:
  - {{columns: [age, tenure_months, monthly_charges], type: numeric}}
  - {{name: plan, type: categorical}}
model: {{estimator: random_forest, params: {{n_estimators: 20, max_depth: 4, random_state: 0}}}}
validation: {{strategy: cross_validation, params: {{cv_folds: 3}}}}
tuning:
  backend: local
  max_evals: 2
  search_space: {{max_depth: {{dist: choice, options: [3, 5]}}}}
calibration: {{method: sigmoid, cv: 3}}
mlflow: {{experiment_name: thin-client, tracking_uri: "{env['MLFLOW_TRACKING_URI']}"}}
output_dir: {tmp_path / 'out'}
""")
    trained = _run_client(client_python, ["run", str(config), "--remote", connect_server],
                          env, tmp_path)
    assert "cv score" in trained.stdout

    import mlflow

    client = mlflow.tracking.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("thin-client")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(runs) == 3, "one child run per tuning trial"
    run = parents[0]
    assert float(run.data.metrics["roc_auc"]) > 0.55

    predictions = tmp_path / "predictions"
    scored = _run_client(client_python, [
        "score", "--remote", connect_server, "--model-uri", f"runs:/{run.info.run_id}/model",
        "--input", str(demo / "churn"), "--output", str(predictions),
        "--keep-columns", "customer_id", "--tracking-uri", env["MLFLOW_TRACKING_URI"]],
        env, tmp_path)
    assert "wrote 400 predictions" in scored.stdout

    from deltalake import DeltaTable

    table = DeltaTable(str(predictions)).to_pandas()
    assert len(table) == 400 and table["customer_id"].is_unique
    assert set(table["prediction"].astype(int)) <= {0, 1}
    assert table["probabilities"].map(lambda p: abs(sum(dict(p).values()) - 1) < 1e-6).all()
