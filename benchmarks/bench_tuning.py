"""Benchmark of the Spark tuning backend (a measurement, not a test).

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_tuning.py

It prints, side by side, with the same trials and seed:

1. per-trial overhead (median of book-to-finish time minus the objective's own
   time) of hyperopt's stock ``SparkTrials`` in a stock local[2] session versus
   :class:`orchestrator.tuning.spark_trials.BroadcastSparkTrials` in a session with
   :func:`orchestrator.cluster.worker_spark_conf` (goal: <= 0.3 s);
2. wall time of ~1 s trials with parallelism 2 versus sequential hyperopt
   ``Trials`` on the driver (goal: <= 0.65x), for sleeping trials (pure
   orchestration) and for CPU-bound trials (a random forest; the 2 cores are
   shared, so this also measures the machine's load);
3. per-trial overhead with 10k and with 1M training rows (goal: no growth,
   since the rows are broadcast once per run).

The ``connect`` part repeats 1-3 on a Spark Connect session (``remote("local[2]")``,
its server in-process) through :mod:`orchestrator.tuning.connect_backend`: the
same TPE points and seed for 1 and 3, the same sleeping trials for 2, with the
ratio to the classic figures.

Each part runs in its own process (one SparkContext per process), and the
machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

N_TRIALS = 16
SEED = 11


def _session(stock: bool):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from orchestrator.cluster import worker_spark_conf

    builder = (SparkSession.builder.master("local[2]").appName("bench-tuning")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false"))
    if not stock:
        for key, value in worker_spark_conf("local[2]").items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _data(rows: int, features: int = 10):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(rows, features))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=1.0, size=rows) > 0).astype(int)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(features)]), pd.Series(y)


def _lr_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())])


def _space():
    from hyperopt import hp

    return {"model__C": hp.loguniform("C", -5, 3)}


def _overheads(trials) -> dict:
    rows = []
    for trial in trials._dynamic_trials:
        result = trial.get("result") or {}
        if result.get("status") != "ok" or not trial.get("book_time"):
            continue
        wall = (trial["refresh_time"] - trial["book_time"]).total_seconds()
        rows.append((wall, result["duration_s"]))
    overhead = [w - d for w, d in rows]
    return {"trials_ok": len(rows),
            "median_overhead_s": round(statistics.median(overhead), 3),
            "median_objective_s": round(statistics.median(d for _, d in rows), 3),
            "median_book_to_finish_s": round(statistics.median(w for w, _ in rows), 3)}


def _run(trials, fn, space, n_trials=N_TRIALS) -> float:
    import numpy as np
    from hyperopt import fmin, tpe

    started = time.perf_counter()
    fmin(fn, space, tpe.suggest, n_trials, trials=trials, rstate=np.random.default_rng(SEED),
         show_progressbar=False)
    return round(time.perf_counter() - started, 2)


class SleepObjective:
    """A trial that takes ``seconds`` without using a core (pure orchestration cost)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, params):
        started = time.perf_counter()
        time.sleep(self.seconds)
        return {"status": "ok", "loss": abs(params["model__C"] - 1.0), "params": params,
                "score": 0.0, "duration_s": time.perf_counter() - started}


def part_stock() -> dict:
    """Stock SparkTrials in a stock session; the data travels in each trial's closure."""
    from hyperopt.spark import SparkTrials
    from sklearn.model_selection import StratifiedKFold

    from orchestrator.tuning import TrialObjective

    spark = _session(stock=True)
    X, y = _data(2000)
    cv = StratifiedKFold(3, shuffle=True, random_state=SEED)
    fn = TrialObjective(_lr_pipeline(), scoring="roc_auc", cv=cv, data=(X, y))
    trials = SparkTrials(parallelism=2, spark_session=spark)
    wall = _run(trials, fn, _space())
    return {"stock_sparktrials": {"wall_s": wall, **_overheads(trials)}}


def part_ours() -> dict:
    from hyperopt import Trials
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline

    from orchestrator.tuning.spark_trials import BroadcastSparkTrials
    from orchestrator.tuning import TrialObjective

    spark = _session(stock=False)
    context = spark.sparkContext
    cv = StratifiedKFold(3, shuffle=True, random_state=SEED)
    report = {}

    # 1. overhead, same trials as the stock run
    X, y = _data(2000)
    broadcast = context.broadcast((X, y))
    fn = TrialObjective(_lr_pipeline(), scoring="roc_auc", cv=cv, broadcast=broadcast)
    trials = BroadcastSparkTrials(parallelism=2, spark_session=spark)
    wall = _run(trials, fn, _space())
    report["broadcast_sparktrials"] = {"wall_s": wall, **_overheads(trials)}
    broadcast.destroy()

    # 2a. ~1 s sleeping trials: parallelism 2 vs sequential Trials
    n = 12
    spark_trials = BroadcastSparkTrials(parallelism=2, spark_session=spark)
    spark_wall = _run(spark_trials, SleepObjective(1.0), _space(), n)
    local_trials = Trials()
    local_wall = _run(local_trials, SleepObjective(1.0), _space(), n)
    report["sleep_1s_trials"] = {"trials": n, "spark_p2_wall_s": spark_wall,
                                 "sequential_wall_s": local_wall,
                                 "ratio": round(spark_wall / local_wall, 3),
                                 "spark_overhead": _overheads(spark_trials)}

    # 2b. ~1 s CPU-bound trials (random forest) on the same 2 (shared) cores
    Xf, yf = _data(3000)
    forest = Pipeline([("model", RandomForestClassifier(n_estimators=60, random_state=0))])
    from hyperopt import hp

    forest_space = {"model__max_features": hp.uniform("max_features", 0.3, 0.9)}
    broadcast = context.broadcast((Xf, yf))
    spark_fn = TrialObjective(forest, scoring="roc_auc", cv=cv, broadcast=broadcast)
    spark_trials = BroadcastSparkTrials(parallelism=2, spark_session=spark)
    spark_wall = _run(spark_trials, spark_fn, forest_space, n)
    local_trials = Trials()
    local_wall = _run(local_trials, TrialObjective(forest, scoring="roc_auc", cv=cv,
                                                   data=(Xf, yf)), forest_space, n)
    broadcast.destroy()
    report["cpu_trials"] = {"trials": n, "spark_p2_wall_s": spark_wall,
                            "sequential_wall_s": local_wall,
                            "ratio": round(spark_wall / local_wall, 3),
                            "spark": _overheads(spark_trials), "sequential": _overheads(local_trials)}

    # 3. per-trial overhead on 10k vs 1M rows
    for rows in (10_000, 1_000_000):
        Xr, yr = _data(rows)
        started = time.perf_counter()
        broadcast = context.broadcast((Xr, yr))
        broadcast_s = time.perf_counter() - started
        fn = TrialObjective(_lr_pipeline(), scoring="roc_auc",
                            cv=StratifiedKFold(2, shuffle=True, random_state=SEED),
                            broadcast=broadcast)
        trials = BroadcastSparkTrials(parallelism=2, spark_session=spark)
        wall = _run(trials, fn, _space(), 6)
        report[f"rows_{rows}"] = {"broadcast_s": round(broadcast_s, 2), "wall_s": wall,
                                  **_overheads(trials)}
        broadcast.destroy()
    return report


def _connect_session():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The in-process Connect server's workers import the package from the driver's PYTHONPATH.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)
    from pyspark.sql import SparkSession

    from orchestrator.cluster import worker_spark_conf

    builder = SparkSession.builder.remote("local[2]").appName("bench-tuning-connect")
    for key, value in worker_spark_conf("local[2]").items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _connect_tune(spark, X, y, n_trials, folds=3):
    """The TPE search of part 1 (same space and seed) through the Connect backend."""
    import math
    import time as _time

    from sklearn.model_selection import StratifiedKFold

    from orchestrator.specs.tuning import Distribution, TuningSpec
    from orchestrator.tuning.connect_backend import run_on_cluster_runner
    from orchestrator.tuning.objective import TrialMonitor

    spec = TuningSpec(search_space={"C": Distribution("loguniform", low=math.exp(-5),
                                                      high=math.exp(3))},
                      max_evals=n_trials, parallelism=2, seed=SEED)
    pipeline = _lr_pipeline()
    monitor = TrialMonitor(rounds=None, max_evals=n_trials, metric="roc_auc", progress=None,
                           started=_time.perf_counter())
    started = _time.perf_counter()
    records, _, _ = run_on_cluster_runner(
        spark, pipeline, X, y, spec, "roc_auc",
        StratifiedKFold(folds, shuffle=True, random_state=SEED), monitor,
        library="hyperopt", slots=2)
    wall = round(_time.perf_counter() - started, 2)
    ok = [r for r in records if r["status"] == "ok"]
    overhead = [r["wall_s"] - r["duration_s"] for r in ok]
    return {"wall_s": wall, "trials_ok": len(ok),
            "median_overhead_s": round(statistics.median(overhead), 3),
            "median_objective_s": round(statistics.median(r["duration_s"] for r in ok), 3),
            "median_book_to_finish_s": round(statistics.median(r["wall_s"] for r in ok), 3)}


def _sleep_task(shared, seconds):
    time.sleep(seconds)
    return seconds


def part_connect() -> dict:
    from hyperopt import Trials

    from orchestrator.cluster.connect import ConnectTaskRunner

    spark = _connect_session()
    report = {}
    X, y = _data(2000)
    _connect_tune(spark, X, y, 2)  # warm the Python workers, as the classic session's daemon
    report["connect_overhead"] = _connect_tune(spark, X, y, N_TRIALS)

    n = 12
    with ConnectTaskRunner(spark, None, parallelism=2) as runner:
        runner.map(_sleep_task, [0.0, 0.0])
        started = time.perf_counter()
        results = runner.map(_sleep_task, [1.0] * n)
        connect_wall = round(time.perf_counter() - started, 2)
    local_wall = _run(Trials(), SleepObjective(1.0), _space(), n)
    report["connect_sleep_1s_trials"] = {
        "trials": n, "connect_p2_wall_s": connect_wall, "sequential_wall_s": local_wall,
        "ratio": round(connect_wall / local_wall, 3),
        "median_overhead_s": round(statistics.median(r.wall_s - r.duration_s
                                                     for r in results), 3)}
    for rows in (10_000, 1_000_000):
        Xr, yr = _data(rows)
        report[f"connect_rows_{rows}"] = _connect_tune(spark, Xr, yr, 6, folds=2)
    spark.stop()
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("stock", "ours", "connect"))
    args = parser.parse_args(argv)
    if args.part:
        result = {"stock": part_stock, "ours": part_ours, "connect": part_connect}[args.part]()
        print("RESULT " + json.dumps(result))
        return
    report = {"load_average_before": os.getloadavg()}
    for part in ("stock", "ours", "connect"):
        out = subprocess.run([sys.executable, __file__, "--part", part], capture_output=True,
                             text=True, check=True)
        line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
        report.update(json.loads(line[len("RESULT "):]))
    report["connect_vs_classic"] = {
        "overhead_ratio": _ratio(report["connect_overhead"]["median_overhead_s"],
                                 report["broadcast_sparktrials"]["median_overhead_s"]),
        "sleep_p2_ratio_connect": report["connect_sleep_1s_trials"]["ratio"],
        "sleep_p2_ratio_classic": report["sleep_1s_trials"]["ratio"],
        "overhead_1m_over_10k_connect": _ratio(
            report["connect_rows_1000000"]["median_overhead_s"],
            report["connect_rows_10000"]["median_overhead_s"]),
        "overhead_1m_over_10k_classic": _ratio(
            report["rows_1000000"]["median_overhead_s"],
            report["rows_10000"]["median_overhead_s"])}
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


if __name__ == "__main__":
    main()
