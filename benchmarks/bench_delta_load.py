"""Benchmark: loading a 1M-row Delta table into pandas on the driver.

Compares, in one run and each in a fresh process (so memory peaks do not mix):

* ``load_training_data`` (orchestrator.io.training_data),
* pyarrow reading the same Parquet files directly (``pq.read_table(...).to_pandas()``),
* Spark's plain ``spark.read.format("delta").load(...).toPandas()``.

Time is the wall time of the load call alone. The SparkSession is started
before the clock starts and, except in the ``:cold`` row, has already read a
small other Delta table, as a long-running driver has: the first Delta
operation of a JVM also pays class loading and JIT warm-up. The benchmark
table's own snapshot is never cached before the clock starts. Memory is the growth of the Python process's peak
resident set during the load (``VmHWM``, reset just before the load); the
JVM's own memory is not counted. The goal of the issue: at most 2x pyarrow's
time and at most 2x the frame's own size in memory.

Usage::

    python benchmarks/bench_delta_load.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

N_DOUBLES = 20
VARIANTS = ("pyarrow", "load_training_data", "spark_toPandas", "load_training_data:cold")


def _rss_field(name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS.
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


def _spark():
    from orchestrator.io.session import get_spark

    spark = get_spark("bench-delta-load", master="local[2]",
                      conf={"spark.ui.enabled": "false", "spark.driver.memory": "6g",
                            "spark.driver.maxResultSize": "4g",
                            # Delta rebuilds a snapshot's state in 50 tasks by default;
                            # on two local cores a few partitions are much faster.
                            "spark.databricks.delta.snapshotPartitions": "2"})
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def write_table(path: str, rows: int) -> None:
    """Write the benchmark table: id, 20 doubles, a category, a flag and a label."""
    from pyspark.sql import functions as F

    spark = _spark()
    cols = [F.col("id")]
    cols += [F.rand(seed=i).alias(f"f{i:02d}") for i in range(N_DOUBLES)]
    cols += [F.element_at(F.array(*[F.lit(c) for c in "abcde"]),
                          (F.col("id") % 5 + 1).cast("int")).alias("segment"),
             (F.col("id") % 3 == 0).alias("flag"),
             (F.rand(seed=99) < 0.3).cast("int").alias("label")]
    (spark.range(rows, numPartitions=8).select(*cols)
     .write.format("delta").mode("overwrite").save(path))
    spark.range(10).write.format("delta").mode("overwrite").save(_warmup_path(path))
    files = spark.read.format("delta").load(path).inputFiles()
    with open(os.path.join(os.path.dirname(path), "files.json"), "w", encoding="utf-8") as fh:
        json.dump([f.removeprefix("file:") for f in files], fh)
    spark.stop()


def _warmup_path(path: str) -> str:
    return os.path.join(os.path.dirname(path), "warmup_table")


def run_variant(variant: str, path: str) -> dict:
    """Load the table one way in this process; return time and memory figures."""
    import pandas as pd  # noqa: F401  (imported before the clock, like in a real driver)
    import pyarrow.parquet as pq

    columns = [f"f{i:02d}" for i in range(N_DOUBLES)] + ["segment", "flag"]
    spark = None
    variant, _, mode = variant.partition(":")
    if variant != "pyarrow":
        from delta.tables import DeltaTable

        spark = _spark()
        spark.range(1).collect()
        if mode != "cold":
            warm = DeltaTable.forPath(spark, _warmup_path(path))
            warm.detail().collect()
            warm.history(1).collect()
            spark.read.format("delta").load(_warmup_path(path)).toPandas()
    with open(os.path.join(os.path.dirname(path), "files.json"), encoding="utf-8") as fh:
        files = json.load(fh)
    _reset_peak()
    before = _rss_field("VmRSS")
    started = time.perf_counter()
    if variant == "pyarrow":
        frame = pq.read_table(files, columns=[*columns, "label"]).to_pandas()
    elif variant == "load_training_data":
        from orchestrator.io.training_data import load_training_data
        from orchestrator.specs.data import DataSpec

        loaded = load_training_data(spark, DataSpec(path=path, label="label"),
                                    feature_columns=columns)
        seconds = time.perf_counter() - started
        peak = _rss_field("VmHWM")
        frame_bytes = int(loaded.X.memory_usage(deep=True).sum()
                          + loaded.y.memory_usage(deep=True))
        return {"variant": variant + (":" + mode if mode else ""), "seconds": seconds, "peak_growth": peak - before,
                "frame_bytes": frame_bytes, "rows": len(loaded.X),
                "read_path": loaded.lineage["read_path"]}
    else:
        frame = spark.read.format("delta").load(path).select(*columns, "label").toPandas()
    seconds = time.perf_counter() - started
    peak = _rss_field("VmHWM")
    return {"variant": variant, "seconds": seconds, "peak_growth": peak - before,
            "frame_bytes": int(frame.memory_usage(deep=True).sum()), "rows": len(frame)}


def _child(args: list[str]) -> dict | None:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_repo_root(), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"benchmark step {args} failed")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mib(n: float) -> str:
    return f"{n / 1024**2:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="fresh processes per variant; the median time is reported")
    parser.add_argument("--workdir", default=None, help="keep the table here (default: temp dir)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--write", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.write:
        write_table(args.write, args.rows)
        return 0
    if args.child:
        print(json.dumps(run_variant(*args.child)))
        return 0

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = os.path.join(tmp, "bench_table")
        started = time.perf_counter()
        _child(["--write", path, "--rows", str(args.rows)])
        print(f"wrote {args.rows:,} rows x {N_DOUBLES + 4} columns as Delta to {path} "
              f"in {time.perf_counter() - started:.1f}s")
        results = {}
        for variant in VARIANTS:
            runs = [_child(["--child", variant, path]) for _ in range(args.repeat)]
            results[variant] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "all_seconds": [round(r["seconds"], 3) for r in runs],
                "peak_growth": statistics.median(r["peak_growth"] for r in runs),
                "frame_bytes": runs[0]["frame_bytes"],
                "rows": runs[0]["rows"],
                "read_path": runs[0].get("read_path", ""),
            }
    base = results["pyarrow"]
    print(f"\n{'variant':<36} {'rows':>9} {'seconds':>8} {'x pyarrow':>9} "
          f"{'peak MiB':>9} {'x pyarrow':>9} {'frame MiB':>9} {'peak/frame':>10}  runs (s)")
    for variant, r in results.items():
        label = variant + (f" ({r['read_path']})" if r["read_path"] else "")
        print(f"{label:<36} {r['rows']:>9,} {r['seconds']:8.3f} "
              f"{r['seconds'] / base['seconds']:9.2f} {_mib(r['peak_growth']):>9} "
              f"{r['peak_growth'] / base['peak_growth']:9.2f} {_mib(r['frame_bytes']):>9} "
              f"{r['peak_growth'] / r['frame_bytes']:10.2f}  {r['all_seconds']}")
    print("\npeak = growth of the Python process's peak RSS during the load (JVM not counted); "
          "goal: load_training_data <= 2x pyarrow's time and peak <= 2x the frame.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
