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

Issue 15's cluster fault runs on a master and worker of its own: the worker
and its executor are SIGKILLed while the scoring job's write tasks run (a
test-only model that takes a second per prediction call and leaves marker
files says when), and a new worker lets the job finish.
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


class _Standalone:
    """A standalone master and its workers on loopback, started from the installed pyspark.

    Each daemon is its own process group, so a test can SIGKILL a worker together with the
    executors it started (their Python workers, in a group of their own, exit when the
    executor dies); :meth:`stop` stops every daemon still running.
    """

    def __init__(self, root: Path, python: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port, self.ui_port = _free_port(), _free_port()
        self.url = f"spark://{HOST}:{self.port}"
        self.env = {**os.environ, "SPARK_LOCAL_IP": HOST, "SPARK_LOCAL_HOSTNAME": "localhost",
                    "SPARK_HOME": str(_spark_home()), "SPARK_LOG_DIR": str(root / "logs"),
                    "SPARK_WORKER_DIR": str(root / "work"), "PYSPARK_PYTHON": str(python)}
        self.processes: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.killed: list[subprocess.Popen] = []
        self._logs = []

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        process = subprocess.Popen([str(_spark_home() / "bin" / "spark-class"), *args],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def start_master(self) -> None:
        self._start("master", ["org.apache.spark.deploy.master.Master", "--host", HOST,
                               "--port", str(self.port), "--webui-port", str(self.ui_port)])

    def start_worker(self) -> subprocess.Popen:
        """One more worker (2 cores, 2 GiB); the first logs to worker.log and works in work/."""
        suffix = f"-{len(self.workers) + 1}" if self.workers else ""
        worker = self._start(f"worker{suffix}", [
            "org.apache.spark.deploy.worker.Worker", self.url, "--host", HOST,
            "--port", str(_free_port()), "--webui-port", str(_free_port()), "--cores", "2",
            "--memory", "2g", "--work-dir", str(self.root / f"work{suffix}")])
        self.workers.append(worker)
        return worker

    def wait_for_alive_workers(self, count: int, *, timeout: float = 120) -> dict:
        """The master's state once exactly ``count`` workers are ALIVE."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _master_state(self.ui_port)
            alive = [w for w in (state or {}).get("workers", []) if w.get("state") == "ALIVE"]
            if state and len(alive) == count:
                return state
            if any(p.poll() is not None for p in self.processes if p not in self.killed):
                break
            time.sleep(0.5)
        logs = "".join(p.read_text()[-2000:] for p in sorted(self.root.glob("*.log")))
        raise AssertionError(f"expected {count} ALIVE worker(s) at the master:\n{logs}")

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """SIGKILL a worker and the executors it started, as when its machine dies."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        self.killed.append(worker)

    def stop(self) -> None:
        for process in reversed(self.processes):
            _stop(process)
        for log in self._logs:
            log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, shipping_python):
    """A standalone master and one worker (2 cores, 2 GiB) on loopback; stopped afterwards."""
    standalone = _Standalone(tmp_path_factory.mktemp("standalone"), shipping_python)
    try:
        standalone.start_master()
        standalone.start_worker()
        state = standalone.wait_for_alive_workers(1)
        yield {"url": standalone.url, "ui_port": standalone.ui_port, "root": standalone.root,
               "work": standalone.root / "work", "env": standalone.env,
               "worker": state["workers"][0]}
    finally:
        standalone.stop()


def _submit_command(cluster, wheel: Path, python: Path, script: str, args: list[str], *,
                    event_dir: Path, extra_env: dict | None = None,
                    conf: dict | None = None) -> tuple[list[str], dict]:
    """The spark-submit command line of a job (``conf`` adds Spark settings), and its
    environment."""
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
        *[part for key, value in (conf or {}).items() for part in ("--conf", f"{key}={value}")],
        str(REPO / "jobs" / script), *args,
    ]
    return command, env


def _spark_submit(cluster, wheel: Path, python: Path, script: str, args: list[str], *,
                  cwd: Path, event_dir: Path, extra_env: dict | None = None,
                  conf: dict | None = None):
    command, env = _submit_command(cluster, wheel, python, script, args, event_dir=event_dir,
                                   extra_env=extra_env, conf=conf)
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


# ---------------------------------------------------------------- a worker killed mid-scoring


def _live_group_members(pgid: int) -> dict[int, str]:
    """pid -> command line of every live (not zombie) process in a process group."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # the process ended while being read
        if int(group) == pgid and state != "Z":
            members[int(stat.parent.name)] = command
    return members


def _half_written_files(table: Path, referenced: set[str]) -> set[str]:
    """Parquet files in a Delta table's directory that none of ``referenced`` (URIs) names
    and that have no footer yet (a Parquet file ends with the magic ``PAR1``)."""
    names = {p.name for p in table.glob("*.parquet")} - {Path(uri).name for uri in referenced}
    half = set()
    for name in names:
        with open(table / name, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - 4, 0))
            if size < 12 or handle.read(4) != b"PAR1":
                half.add(name)
    return half


def _is_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _task_end_reasons(event_dir: Path) -> list[str]:
    """The end reason of every task in the one application's event log."""
    (log,) = [p for p in event_dir.iterdir() if p.is_file()]
    return [event["Task End Reason"]["Reason"] for event in map(json.loads,
                                                                log.read_text().splitlines())
            if event["Event"] == "SparkListenerTaskEnd"]


# One task per input file (a file's open cost fills a partition), two Arrow batches per task
# (a task writes the first batch's rows while the model predicts the second); Delta's log
# replayed in 2 tasks instead of 50 and one 2-core executor instead of two JVMs (minutes saved
# on a busy 2-core machine).
SCORING_ROWS_PER_FILE = 500
SCORING_CONF = {"spark.sql.files.openCostInBytes": str(128 * 1024 * 1024),
                "spark.sql.execution.arrow.maxRecordsPerBatch": str(SCORING_ROWS_PER_FILE // 2),
                "spark.databricks.delta.snapshotPartitions": "2", "spark.executor.cores": "2"}


def _earlier_predictions():
    """Rows of an earlier scoring run, in the prediction table's schema (written with delta-rs)."""
    import datetime

    import pyarrow as pa

    rows = 3

    def text(value: str):
        return pa.array([value] * rows, pa.string())

    return pa.table({
        "customer_id": pa.array([-3, -2, -1], pa.int64()),
        "prediction": pa.array([0, 1, 0], pa.int64()),
        "probabilities": pa.array([[("0", 0.5), ("1", 0.5)]] * rows,
                                  pa.map_(pa.string(), pa.float64())),
        "model_uri": text("models:/slow_scoring/1"), "model_name": text("slow_scoring"),
        "model_version": text("1"), "model_run_id": text("earlier"),
        "input_table": text("/data/earlier"),
        "input_version": pa.array([0] * rows, pa.int64()),
        "scored_at": pa.array([datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)] * rows,
                              pa.timestamp("us", tz="UTC")),
    })


def test_a_worker_killed_mid_scoring_leaves_the_table_unchanged_or_complete(
        wheel, shipping_python, tmp_path):
    """Issue 15: the worker JVM and its executors SIGKILLed while the scoring job's write tasks
    run. While no worker is left the prediction table is unchanged; a new worker joins, Spark
    reruns the lost tasks, and the table is then complete (or, had the job failed, unchanged);
    a rerun of the job leaves exactly one copy of every row (read with delta-rs)."""
    import mlflow
    import numpy as np
    import pandas as pd
    import skops.io
    from deltalake import DeltaTable, write_deltalake
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    import _fault_estimators

    started = time.monotonic()
    # 4 appends, 4 files, 4 write tasks (SCORING_CONF): two waves on the worker's 2 cores.
    rng = np.random.default_rng(15)
    inputs, parts = tmp_path / "customers", []
    size = SCORING_ROWS_PER_FILE
    for part in range(4):
        frame = pd.DataFrame(rng.normal(size=(size, 4)), columns=[f"f{i}" for i in range(4)])
        frame.insert(0, "customer_id", np.arange(part * size, (part + 1) * size, dtype="int64"))
        write_deltalake(str(inputs), frame, mode="append")
        parts.append(frame)
    customers = pd.concat(parts, ignore_index=True)
    input_version = DeltaTable(str(inputs)).version()

    # Every prediction call takes a second and leaves markers: the kill lands mid-task.
    X = customers.drop(columns="customer_id")
    model = _fault_estimators.SlowScoringClassifier().fit(X, (X["f0"] + X["f1"] > 0).astype(int))
    signature = infer_signature(X, model.predict(X))
    markers = tmp_path / "markers"
    markers.mkdir()
    model.set_params(delay_s=1.0, marker_dir=str(markers))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)  # the conftest fixtures restore MLflow's URIs afterwards
    mlflow.set_registry_uri(store)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model, name="model", serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            signature=signature, pyfunc_predict_fn="predict",
            registered_model_name="slow_scoring", code_paths=[_fault_estimators.__file__])

    output = tmp_path / "predictions"
    write_deltalake(str(output), _earlier_predictions())
    version_before = DeltaTable(str(output)).version()
    files_before = set(DeltaTable(str(output)).file_uris())
    job_args = ["--model-uri", "models:/slow_scoring/1", "--input", str(inputs),
                "--output", str(output), "--keep-columns", "customer_id"]
    standalone = _Standalone(tmp_path / "standalone", shipping_python)
    try:
        standalone.start_master()
        first_worker = standalone.start_worker()
        standalone.wait_for_alive_workers(1)
        cluster = {"url": standalone.url, "env": standalone.env}
        events = tmp_path / "events"
        events.mkdir()
        command, env = _submit_command(cluster, wheel, shipping_python, "score.py", job_args,
                                       event_dir=events, extra_env={"MLFLOW_TRACKING_URI": store},
                                       conf=SCORING_CONF)
        job_log = tmp_path / "job.log"
        with open(job_log, "w") as log:
            job = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Mid-write: a task's part file has been open without a footer for a while (each of
            # its two batches waits seconds for the model), so the kill lands in that task.
            deadline, seen = time.monotonic() + 300, set()
            while True:
                begun = _half_written_files(output, files_before)
                if begun & seen:
                    break
                seen = begun
                assert job.poll() is None and time.monotonic() < deadline, \
                    job_log.read_text()[-4000:]
                time.sleep(0.2)
            killed_at = time.monotonic() - started
            group = _live_group_members(first_worker.pid)
            assert any("CoarseGrainedExecutorBackend" in c for c in group.values()), group
            standalone.kill_worker(first_worker)
            # Nothing of the dead worker runs on: its group (worker, executor) nor the Python
            # workers that were predicting (their own group; they exit when the executor dies).
            python_workers = {int(p.stem.split("-")[0]) for p in markers.glob("*.started")}
            deadline = time.monotonic() + 60
            while _live_group_members(first_worker.pid) or any(
                    _is_alive(pid) for pid in python_workers):
                assert time.monotonic() < deadline, _live_group_members(first_worker.pid)
                time.sleep(0.2)
            standalone.wait_for_alive_workers(0)
            # No worker left: the job cannot finish, and nothing of it is in the table.
            assert job.poll() is None, job_log.read_text()[-4000:]
            assert DeltaTable(str(output)).version() == version_before
            assert set(DeltaTable(str(output)).file_uris()) == files_before
            standalone.start_worker()
            code = job.wait(timeout=300)
        finally:
            _stop(job)
        printed = job_log.read_text()
        after = DeltaTable(str(output))
        # The part file the killed task began stays half-written, and no commit refers to it.
        half_written = _half_written_files(output, set(after.file_uris())) & begun
        assert half_written, (begun, after.file_uris())
        if code == 0:  # Spark reran the lost tasks on the new worker's executors
            assert f"wrote {len(customers)} predictions" in printed, printed[-4000:]
            assert after.version() == version_before + 1
            assert "ExecutorLostFailure" in _task_end_reasons(events)
        else:  # our one clear error, and the table as it was
            assert "nothing was written" in printed and "Traceback" not in printed, printed[-4000:]
            assert after.version() == version_before
            assert set(after.file_uris()) == files_before
        first_s = time.monotonic() - started

        rerun_events = tmp_path / "events_rerun"
        rerun_events.mkdir()
        rerun = _spark_submit(cluster, wheel, shipping_python, "score.py", job_args,
                              cwd=tmp_path, event_dir=rerun_events,
                              extra_env={"MLFLOW_TRACKING_URI": store}, conf=SCORING_CONF)
    finally:
        standalone.stop()
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    if code == 0:
        assert "was already scored" in rerun.stdout, rerun.stdout
    table = DeltaTable(str(output)).to_pandas()
    assert table["customer_id"].is_unique and len(table) == 3 + len(customers)
    earlier = table[table["input_table"] == "/data/earlier"]
    assert sorted(earlier["customer_id"]) == [-3, -2, -1]
    scored = table[table["input_table"] != "/data/earlier"].sort_values("customer_id")
    assert list(scored["customer_id"]) == list(customers["customer_id"])
    assert set(scored["input_version"]) == {input_version}
    # The model's own predictions (its plain LogisticRegression part, without the delay).
    expected = LogisticRegression.predict(model, X)
    assert np.array_equal(scored["prediction"].to_numpy(), expected)
    print(f"worker killed at {killed_at:.0f} s, leaving {len(half_written)} half-written "
          f"file(s); killed job ended with {code} at {first_s:.0f} s; with the rerun "
          f"{time.monotonic() - started:.0f} s")
