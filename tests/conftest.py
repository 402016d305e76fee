"""Shared fixtures: one local SparkSession with Delta for the whole test run."""

from __future__ import annotations

import os
import sys

import pytest

# Spark's Python workers must run the interpreter of this venv.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local[2] SparkSession with Delta for every Spark test (UI off, few partitions)."""
    from orchestrator.io.session import get_spark
    from orchestrator.cluster import worker_spark_conf

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = get_spark(
        "orchestrator-tests",
        master="local[2]",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.sql.warehouse.dir": str(warehouse),
            "spark.driver.extraJavaOptions": f"-Dderby.system.home={warehouse}",
            "spark.databricks.delta.snapshotPartitions": "2",
            # Python workers forked from a daemon that preloaded scikit-learn (tuning trials).
            **worker_spark_conf("local[2]"),
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
