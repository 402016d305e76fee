"""The session factory's private PySpark internal, checked against the installed version."""

from __future__ import annotations

import os
import stat
import sys

import pytest

pytestmark = [pytest.mark.spark,
              pytest.mark.classic_only("SparkContext.pythonExec is a SparkContext internal")]


def test_workers_run_the_interpreter_the_session_names(spark, tmp_path):
    """``SparkContext.pythonExec`` decides the workers' interpreter (pyspark internal)."""
    import pyspark

    from orchestrator.io.session import use_driver_interpreter_for_workers

    context = spark.sparkContext
    assert hasattr(context, "pythonExec"), (
        f"pyspark {pyspark.__version__} has no SparkContext.pythonExec; "
        "orchestrator.io.session.use_driver_interpreter_for_workers needs another way")
    wrapper = tmp_path / "python-marked"
    wrapper.write_text(f"#!/bin/sh\nORCHESTRATOR_TEST_MARK=wrapped exec {sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    before = context.pythonExec
    try:
        context.pythonExec = str(wrapper)
        marks = context.parallelize([0], 1).map(
            lambda _: os.environ.get("ORCHESTRATOR_TEST_MARK")).collect()
        assert marks == ["wrapped"], (
            f"pyspark {pyspark.__version__} no longer reads SparkContext.pythonExec when "
            "shipping a function; use_driver_interpreter_for_workers must change")
        context.pythonExec = "python-that-does-not-exist"
        use_driver_interpreter_for_workers(spark, environ={})
        assert context.pythonExec == sys.executable
        context.pythonExec = "kept"
        use_driver_interpreter_for_workers(spark, environ={"PYSPARK_PYTHON": "/x/python"})
        assert context.pythonExec == "kept"
    finally:
        context.pythonExec = before
