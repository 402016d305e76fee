"""The train and scoring jobs through spark-submit on a real Spark standalone cluster.

A master and a worker are started from the installed pyspark (``spark-class``),
bound to 127.0.0.1, and stopped afterwards even when a test fails. The project
is shipped the way a user ships it to a cluster: a wheel built with
``pip wheel --no-deps .`` and passed with ``--py-files`` (the driver imports it
from there) and ``spark.executorEnv.PYTHONPATH`` (executors import it from the
copy Spark fetched into their working directory). Driver and executors run a
Python that can import every dependency but NOT the repository's editable
install, so nothing works unless the wheel arrived.

Where the tuning trials ran is read from Spark's own event log (each trial is
one job whose description is ``hyperopt trial N``) and cross-checked against
the executor directories the worker daemon created.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestrator.io.session import delta_package_coordinate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cluster

HOST = "127.0.0.1"
MAX_EVALS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _master_state(ui_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ui_port}/json/", timeout=2) as response:
            return json.load(response)
    except OSError:
        return None


@pytest.fixture(scope="module")
def shipping_python(tmp_path_factory) -> Path:
    """A Python with every dependency importable but not this repository's editable install.

    A fresh venv whose one .pth line adds the project venv's site-packages as a
    plain path: the dependencies import, but .pth files inside that directory
    (the editable install's finder) are not processed.
    """
    root = tmp_path_factory.mktemp("shipping_venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True, check=True).stdout
    Path(site.strip(), "project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    probe = subprocess.run([str(python), "-c", "import sklearn, mlflow, pyspark, delta\n"
                            "import importlib.util as u; print(u.find_spec('orchestrator'))"],
                           capture_output=True, text=True, timeout=120, cwd=root)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "None", "orchestrator must come only from the shipped wheel"
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
                    str(REPO)], check=True, timeout=300, capture_output=True)
    (built,) = out.glob("orchestrator-*.whl")
    return built


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, shipping_python):
    """A standalone master and one worker (2 cores, 2 GiB) on loopback; stopped afterwards."""
    root = tmp_path_factory.mktemp("standalone")
    spark_class = str(_spark_home() / "bin" / "spark-class")
    port, ui_port = _free_port(), _free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": HOST, "SPARK_LOCAL_HOSTNAME": "localhost",
           "SPARK_HOME": str(_spark_home()), "SPARK_LOG_DIR": str(root / "logs"),
           "SPARK_WORKER_DIR": str(root / "work"), "PYSPARK_PYTHON": str(shipping_python)}
    master_log = open(root / "master.log", "w")  # noqa: SIM115 - closed in the finally below
    worker_log = open(root / "worker.log", "w")  # noqa: SIM115
    processes = []
    try:
        processes.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST,
             "--port", str(port), "--webui-port", str(ui_port)],
            env=env, stdout=master_log, stderr=subprocess.STDOUT, start_new_session=True))
        processes.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://{HOST}:{port}",
             "--host", HOST, "--port", str(_free_port()), "--webui-port", str(_free_port()),
             "--cores", "2", "--memory", "2g", "--work-dir", str(root / "work")],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:
            state = _master_state(ui_port)
            if state and any(w.get("state") == "ALIVE" for w in state.get("workers", [])):
                break
            if any(p.poll() is not None for p in processes):
                break
            time.sleep(1)
        else:
            state = None
        assert state and state["workers"], (
            "the worker did not register with the master:\n"
            + (root / "master.log").read_text()[-2000:] + (root / "worker.log").read_text()[-2000:])
        yield {"url": f"spark://{HOST}:{port}", "ui_port": ui_port, "root": root,
               "work": root / "work", "env": env, "worker": state["workers"][0]}
    finally:
        for process in reversed(processes):
            _stop(process)
        master_log.close()
        worker_log.close()


def _spark_submit(cluster, wheel: Path, python: Path, script: str, args: list[str], *,
                  cwd: Path, event_dir: Path, extra_env: dict | None = None):
    env = {**cluster["env"], "PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python),
           **(extra_env or {})}
    env.pop("PYTHONPATH", None)
    command = [
        str(_spark_home() / "bin" / "spark-submit"), "--master", cluster["url"],
        "--packages", delta_package_coordinate(),
        "--py-files", str(wheel),
        # Executors import the wheel from the copy Spark fetched into their working directory;
        # that also lets the tuning daemon (a separate `python -m`) preload the package.
        "--conf", f"spark.executorEnv.PYTHONPATH={wheel.name}",
        "--conf", "spark.python.daemon.module=orchestrator.cluster.worker",
        "--conf", f"spark.driver.host={HOST}", "--conf", f"spark.driver.bindAddress={HOST}",
        "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2",
        "--conf", "spark.executor.memory=1g", "--conf", "spark.executor.cores=1",
        "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={event_dir}",
        "--conf", "spark.eventLog.rolling.enabled=false", "--conf", "spark.eventLog.compress=false",
        str(REPO / "jobs" / script), *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def _trial_tasks(event_dir: Path) -> list[dict]:
    """(trial, executor id, host) of every task of the hyperopt trial jobs, from the event log."""
    logs = [p for p in event_dir.iterdir() if p.is_file()]
    assert len(logs) == 1, logs
    trial_stages, tasks = {}, []
    for line in logs[0].read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerJobStart":
            description = (event.get("Properties") or {}).get("spark.job.description", "")
            if description.startswith("hyperopt trial"):
                for stage in event["Stage IDs"]:
                    trial_stages[stage] = description
        elif event["Event"] == "SparkListenerTaskEnd" and event["Stage ID"] in trial_stages:
            info = event["Task Info"]
            tasks.append({"trial": trial_stages[event["Stage ID"]],
                          "executor": info["Executor ID"], "host": info["Host"],
                          "ok": event["Task End Reason"]["Reason"] == "Success"})
    return tasks


def test_train_then_score_on_a_standalone_cluster(cluster, wheel, shipping_python, tmp_path):
    import pandas as pd
    from deltalake import DeltaTable, write_deltalake

    from orchestrator.io.demo_data import generate_churn_frame

    started = time.monotonic()
    columns = ["customer_id", "age", "tenure_months", "monthly_charges", "contract", "plan",
               "churned"]
    frame = generate_churn_frame(400, seed=21)[columns]
    write_deltalake(str(tmp_path / "churn"), frame)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "data": {"path": "churn", "label": "churned"},
        "features": [{"columns": ["age", "tenure_months", "monthly_charges"], "type": "numeric"},
                     {"columns": ["contract", "plan"], "type": "categorical"}],
        "model": {"estimator": "random_forest",
                  "params": {"n_estimators": 20, "random_state": 0, "n_jobs": 1}},
        "tuning": {"backend": "spark", "max_evals": MAX_EVALS, "parallelism": 2, "cv_folds": 2,
                   "search_space": {"max_depth": {"dist": "randint", "low": 2, "high": 8}}},
        "validation": {"strategy": "train_test", "params": {"test_size": 0.25}},
        "mlflow": {"tracking_uri": store, "experiment_name": "cluster",
                   "registered_model_name": "churn_cluster", "model_alias": "champion",
                   "log_plots": False},
        "output_dir": "out",
    }
    (tmp_path / "job.yml").write_text(yaml.safe_dump(config))
    train_events = tmp_path / "events_train"
    train_events.mkdir()

    trained = _spark_submit(cluster, wheel, shipping_python, "train.py",
                            ["--config", str(tmp_path / "job.yml")], cwd=tmp_path,
                            event_dir=train_events)
    train_s = time.monotonic() - started
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "ML workflow summary" in trained.stdout
    assert "WARNING" not in trained.stdout.split("ML workflow summary", 1)[1], trained.stdout

    tasks = _trial_tasks(train_events)
    assert len({t["trial"] for t in tasks}) == MAX_EVALS and all(t["ok"] for t in tasks)
    executors = {t["executor"] for t in tasks}
    assert "driver" not in executors and {t["host"] for t in tasks} == {HOST}
    # The worker daemon launched exactly those executors for this application.
    (app_dir,) = [d for d in cluster["work"].iterdir() if d.name.startswith("app-")]
    assert executors <= {d.name for d in app_dir.iterdir() if (d / "stderr").exists()}
    print(f"trials ran on executors {sorted(executors)} of {app_dir.name}; train job {train_s:.0f} s")

    score_events = tmp_path / "events_score"
    score_events.mkdir()
    scored = _spark_submit(cluster, wheel, shipping_python, "score.py",
                           ["--model-uri", "models:/churn_cluster@champion", "--input",
                            str(tmp_path / "churn"), "--output", str(tmp_path / "predictions"),
                            "--keep-columns", "customer_id"],
                           cwd=tmp_path, event_dir=score_events,
                           extra_env={"MLFLOW_TRACKING_URI": store})
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    assert "wrote 400 predictions" in scored.stdout
    predictions = DeltaTable(str(tmp_path / "predictions")).to_pandas()
    assert sorted(predictions["customer_id"]) == sorted(frame["customer_id"])
    assert set(predictions["model_version"]) == {"1"}
    assert set(predictions["prediction"]) <= {0, 1}
    totals = predictions["probabilities"].map(lambda pairs: sum(v for _, v in pairs))
    assert totals.between(1 - 1e-9, 1 + 1e-9).all()
    assert isinstance(predictions["scored_at"].iloc[0], pd.Timestamp)
    print(f"cluster train + score: {time.monotonic() - started:.0f} s")
