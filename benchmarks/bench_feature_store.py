"""Benchmark: a point-in-time training set of 1M label rows on local[2].

Writes two Delta tables in a temporary directory (not timed):

* ``features``: ``--keys`` customers x ``--snapshots`` monthly snapshots
  (customer_id, as_of_ts and five feature columns, one a string);
* ``labels``: ``--labels`` rows of (customer_id, event_ts, label) with random
  customers (some unknown to the feature table) and random event times
  around the snapshots;

then times :func:`orchestrator.io.feature_store.build_training_set` with one
point-in-time lookup (90 day lookback): opening both tables, the checks before
the join (row counts, duplicate (key, time) rows), the Spark union + window
join, and collecting the training set to pandas. The SparkSession has already
read a small Delta table before the clock starts, as a long-running driver has.

Usage::

    python benchmarks/bench_feature_store.py [--labels 1000000] [--keys 100000] [--snapshots 6]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time


def _spark(partitions: int):
    from orchestrator.io.session import get_spark

    return get_spark("bench-feature-store", master="local[2]",
                     conf={"spark.ui.enabled": "false", "spark.driver.memory": "6g",
                           "spark.driver.maxResultSize": "4g",
                           "spark.sql.shuffle.partitions": str(partitions),
                           "spark.databricks.delta.snapshotPartitions": "2"})


def _write_tables(spark, base: str, *, labels: int, keys: int, snapshots: int) -> dict[str, str]:
    """Generate the tables with Spark itself (no driver-side data)."""
    from pyspark.sql import functions as F

    start = F.lit("2024-01-01 00:00:00").cast("timestamp")
    features = (spark.range(keys * snapshots)
                .select((F.col("id") % keys).alias("k"), (F.col("id") / keys).cast("int").alias("m"))
                .select(F.format_string("C%07d", "k").alias("customer_id"),
                        (start + F.make_interval(months=F.col("m"))).alias("as_of_ts"),
                        F.rand(1).alias("f_double"), (F.rand(2) * 50).cast("int").alias("f_int"),
                        F.randn(3).alias("f_normal"), (F.rand(4) * 200).alias("f_charges"),
                        F.element_at(F.array(F.lit("basic"), F.lit("standard"), F.lit("premium")),
                                     (F.rand(5) * 3).cast("int") + 1).alias("plan")))
    # 5% of label customers are unknown; event times span the snapshots and a month either side.
    label_rows = (spark.range(labels)
                  .select(F.format_string("C%07d", (F.rand(6) * keys * 1.05).cast("long"))
                          .alias("customer_id"),
                          (start + F.make_interval(days=((F.rand(7) * (snapshots + 2) - 1) * 30)
                                                   .cast("int"))).alias("event_ts"),
                          (F.rand(8) < 0.2).cast("int").alias("label")))
    paths = {"features": f"{base}/features", "labels": f"{base}/labels"}
    features.write.format("delta").mode("overwrite").save(paths["features"])
    label_rows.write.format("delta").mode("overwrite").save(paths["labels"])
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--snapshots", type=int, default=6)
    parser.add_argument("--partitions", type=int, default=8,
                        help="spark.sql.shuffle.partitions")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from orchestrator.io.feature_store import build_training_set
    from orchestrator.specs import Problems
    from orchestrator.specs.feature_store import parse_feature_store_spec

    spark = _spark(args.partitions)
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="bench-fs-") as base:
        started = time.perf_counter()
        paths = _write_tables(spark, base, labels=args.labels, keys=args.keys,
                              snapshots=args.snapshots)
        print(f"wrote {args.labels:,} label rows and {args.keys * args.snapshots:,} feature rows "
              f"({args.keys:,} keys x {args.snapshots} snapshots) in "
              f"{time.perf_counter() - started:.1f} s")
        # Warm-up: the first Delta read of a JVM pays class loading.
        spark.read.format("delta").load(paths["features"]).limit(1).collect()
        problems = Problems()
        spec = parse_feature_store_spec({
            "labels": {"path": paths["labels"], "keys": ["customer_id"],
                       "timestamp": "event_ts", "label": "label"},
            "lookups": [{"path": paths["features"], "keys": ["customer_id"],
                         "timestamp_key": "as_of_ts", "lookback": "90d"}],
        }, problems)
        problems.raise_if_any()
        columns = ["f_double", "f_int", "f_normal", "f_charges", "plan"]
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            loaded = build_training_set(spark, spec, feature_columns=columns)
            times.append(time.perf_counter() - started)
            matched = loaded.lineage["tables"][1]["matched_rows"]
            print(f"build_training_set: {len(loaded.X):,} rows x {loaded.X.shape[1]} features, "
                  f"{matched:,} matched, in {times[-1]:.1f} s")
        print(f"best of {args.repeat}: {min(times):.1f} s (local[2], "
              f"{args.partitions} shuffle partitions)")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
