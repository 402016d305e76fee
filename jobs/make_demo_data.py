"""Write the demo Delta tables (churn, customer_features, churn_labels).

Usage::

    python jobs/make_demo_data.py --output data/demo
    spark-submit jobs/make_demo_data.py --output data/demo --customers 20000
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger("orchestrator.jobs.make_demo_data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the demo customer-churn Delta tables.")
    parser.add_argument("--output", default="data/demo",
                        help="directory receiving one sub-directory per table (default: data/demo)")
    parser.add_argument("--customers", type=int, default=5000,
                        help="number of customers (default: 5000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--master", default=None,
                        help="Spark master of a new session (default: the active session, "
                             "$SPARK_MASTER or local[*])")
    args = parser.parse_args(argv)
    if args.customers < 1:
        parser.error(f"--customers: expected a positive integer, got {args.customers}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python``, ``spark-submit``, console scripts and bundle wheel tasks."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from orchestrator.io.demo_data import write_demo_tables
    from orchestrator.io.session import get_spark

    spark = get_spark("orchestrator-demo-data", master=args.master)
    paths = write_demo_tables(spark, args.output, n_customers=args.customers, seed=args.seed)
    for name, path in paths.items():
        logger.info("%s -> %s", name, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
