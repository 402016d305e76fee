"""The train job through spark-submit, reading a real Delta table (a separate Spark JVM)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.io.session import delta_package_coordinate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.spark


@pytest.mark.classic_only("spark-submit starts a classic driver JVM of its own")
def test_spark_submit_train_job_on_a_delta_table(spark, tmp_path):
    from orchestrator.io.demo_data import write_demo_tables

    tables = write_demo_tables(spark, str(tmp_path / "demo"), n_customers=600, seed=3)
    config = {
        "data": {"path": "demo/churn", "label": "churned"},
        "features": [{"columns": ["age", "tenure_months", "monthly_charges"], "type": "numeric"},
                     {"columns": ["contract", "plan"], "type": "categorical"}],
        "model": {"estimator": "logistic_regression", "params": {"max_iter": 300}},
        "validation": {"strategy": "cross_validation", "params": {"cv_folds": 3}},
        "output_dir": "out",
    }
    config_path = tmp_path / "job.yml"
    config_path.write_text(yaml.safe_dump(config))
    spark_submit = Path(sys.executable).with_name("spark-submit")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    completed = subprocess.run(
        [str(spark_submit), "--master", "local[1]", "--packages", delta_package_coordinate(),
         "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2",
         str(REPO / "jobs" / "train.py"), "--config", str(config_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert "ML workflow summary" in out
    assert f"source:        {tables['churn']}" in out or str(tmp_path / "demo" / "churn") in out
    assert "delta version: 0" in out and "cv score:" in out
    # spark-submit's PythonRunner merges the Python driver's stderr into its own stdout.
    assert "Step 6/8 validation: finished" in out + completed.stderr


def test_spark_submit_reports_a_bad_config_without_a_traceback(tmp_path):
    config_path = tmp_path / "bad.yml"
    config_path.write_text(yaml.safe_dump({"features": [{"name": "a", "type": "numerik"}],
                                           "model": {"estimator": "random_forest"},
                                           "data": {"path": "nowhere", "label": "y"}}))
    completed = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--config",
                                str(config_path)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "did you mean 'numeric'" in completed.stderr
    assert "Traceback" not in completed.stderr
