"""Startup: ``orchestrator run`` from the command's start to step 1, next to a bare SparkSession.

Both are fresh processes started from here, alternately, ``--rounds`` times:

* cli:  ``python -m orchestrator run job.yml`` (default console, cached Delta jars); the time
        until its log file records "Step 1/8 data_loading: started" (the process is then stopped).
* bare: ``python -c`` building a local SparkSession with the same Delta jars (``spark.jars``
        from the cache the CLI uses) and Delta's SQL settings; the time until it exists.

Prints each round and the ratio of the medians (goal: <= 1.3).

    PYSPARK_PYTHON=$PWD/.venv/bin/python .venv/bin/python benchmarks/bench_startup.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

_BARE = """\
import sys, time
from pyspark.sql import SparkSession
jars, master = sys.argv[1], sys.argv[2]
spark = (SparkSession.builder.master(master).appName("bare")
         .config("spark.jars", jars)
         .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
         .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
         .getOrCreate())
print("ready", time.time(), flush=True)
"""

_CONFIG = """\
data: {{path: {data}/churn, label: churned}}
features:
  - {{columns: [age, tenure_months, monthly_charges], type: numeric}}
  - {{columns: [plan, region], type: categorical}}
model: {{estimator: logistic_regression}}
validation: {{strategy: cross_validation, params: {{cv_folds: 2}}}}
output_dir: {out}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
            "PYSPARK_DRIVER_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}


def time_cli(config: Path, log_dir: Path, master: str) -> float:
    """Seconds from starting ``orchestrator run`` to its step 1 (read from its log file)."""
    before = set(log_dir.glob("run-*.log")) if log_dir.exists() else set()
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(config),
                             "--master", master, "--log-dir", str(log_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        while proc.poll() is None:
            for log in set(log_dir.glob("run-*.log")) - before:
                for line in log.read_text(errors="replace").splitlines():
                    if "Step 1/8 data_loading: started" in line:
                        stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                        return stamp.timestamp() - started
            time.sleep(0.05)
        raise RuntimeError(f"orchestrator run exited with {proc.returncode} before step 1")
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def time_bare(jars: str, master: str) -> float:
    """Seconds from starting a bare Python process to its local SparkSession with Delta."""
    started = time.time()
    out = subprocess.run([sys.executable, "-c", _BARE, jars, master], capture_output=True,
                         text=True, env=_env(), check=True, timeout=600).stdout
    ready = float(next(line for line in out.splitlines() if line.startswith("ready")).split()[1])
    return ready - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--customers", type=int, default=300)
    args = parser.parse_args()

    from orchestrator.entrypoints.console import jars_cache_dir
    from orchestrator.io.session import cached_delta_jars, delta_jars_cache_file

    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    # Writes the demo table and, on a first run, fills the Delta jar cache both sides use.
    subprocess.run([sys.executable, "-m", "orchestrator", "demo-data", "--output",
                    str(work / "data"), "--customers", str(args.customers), "--master",
                    args.master], check=True, env=_env(), stdout=subprocess.DEVNULL)
    jars = cached_delta_jars(delta_jars_cache_file(jars_cache_dir()))
    if not jars:
        raise SystemExit("no cached Delta jars after demo-data; cannot compare like for like")
    config = work / "job.yml"
    config.write_text(_CONFIG.format(data=work / "data", out=work / "out"))

    cli, bare = [], []
    for round_ in range(1, args.rounds + 1):
        bare.append(time_bare(",".join(jars), args.master))
        cli.append(time_cli(config, work / "logs", args.master))
        print(f"round {round_}: bare SparkSession {bare[-1]:6.2f} s   "
              f"orchestrator run to step 1 {cli[-1]:6.2f} s", flush=True)
    ratio = statistics.median(cli) / statistics.median(bare)
    print(f"median: bare {statistics.median(bare):.2f} s, cli {statistics.median(cli):.2f} s, "
          f"ratio cli/bare {ratio:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
