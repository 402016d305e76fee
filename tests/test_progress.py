"""Progress lines while a long Spark action runs (orchestrator.io.progress)."""

from __future__ import annotations

import logging
import re
import time

import pytest

from orchestrator.entrypoints.console import ConsoleFilter
from orchestrator.io.progress import progress_message, spark_progress, task_counts


@pytest.mark.parametrize("counts, expected", [
    ((3, 8), "Progress: 3/8 tasks done (scoring churn), 21 s elapsed"),
    ((8, 8), "Progress: 8/8 tasks done (scoring churn), 21 s elapsed"),
    (None, "Progress: scoring churn still running, 21 s elapsed"),
])
def test_progress_message_gives_counts_when_known_else_the_time(counts, expected):
    fmt, args = progress_message("scoring churn", 20.6, counts)
    assert fmt % args == expected


def test_task_counts_add_up_stages_and_know_nothing_before_tasks_exist():
    assert task_counts([(3, 8), (0, 2), (1, 1)]) == (4, 11)
    assert task_counts([]) is None
    assert task_counts([(0, 0)]) is None


@pytest.mark.parametrize("counts", [(3, 8), None])
def test_the_console_shows_a_line_every_ten_seconds(counts):
    times = iter([0.0, 10.0, 20.0])
    console = ConsoleFilter(progress_every_s=5.0, clock=lambda: next(times))
    fmt, args = progress_message("point-in-time join", 10.0, counts)
    record = logging.LogRecord("orchestrator.io.progress", logging.INFO, __file__, 0, fmt,
                               args, None)
    assert [console.filter(record) for _ in range(3)] == [True, True, True]
    # and thins a flood, like any progress line
    flood = ConsoleFilter(progress_every_s=5.0, clock=iter([0.0, 1.0]).__next__)
    assert [flood.filter(record) for _ in range(2)] == [True, False]


def test_without_a_spark_context_the_lines_say_how_long_it_has_run(caplog):
    caplog.set_level(logging.INFO, logger="orchestrator.io.progress")
    with spark_progress(object(), "slow thing", interval_s=0.05):
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.io.progress"]
    assert lines and all(re.fullmatch(r"Progress: slow thing still running, \d+ s elapsed", line)
                         for line in lines), lines
    time.sleep(0.2)
    after = [r for r in caplog.records if r.name == "orchestrator.io.progress"]
    assert len(after) == len(lines), "lines after the block ended"


@pytest.mark.spark
def test_a_slow_spark_action_logs_its_progress(spark, caplog):
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    from orchestrator.io.session import is_connect_session

    @F.udf(LongType())
    def slow(value):
        import time as _time

        _time.sleep(2.5)
        return value

    caplog.set_level(logging.INFO, logger="orchestrator.io.progress")
    frame = spark.range(0, 2, 1, 2).select(slow("id").alias("id"))
    with spark_progress(spark, "slow action", interval_s=0.5):
        assert sorted(r.id for r in frame.collect()) == [0, 1]
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.io.progress"]
    assert lines, "no progress line during a 2.5 s action"
    if is_connect_session(spark):  # the server reports every few seconds, if at all by then
        assert all(line.startswith("Progress: ") for line in lines), lines
    else:
        counted = [line for line in lines if re.match(r"Progress: [0-2]/2 tasks done "
                                                      r"\(slow action\)", line)]
        assert counted, lines
        # The job group set for the block is gone; the caller's thread is as it was.
        assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None


@pytest.mark.spark
@pytest.mark.classic_only(reason="job groups are a SparkContext's")
def test_a_callers_job_group_is_kept_and_counted(spark, caplog):
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    @F.udf(LongType())
    def slow(value):
        import time as _time

        _time.sleep(2.0)
        return value

    context = spark.sparkContext
    caplog.set_level(logging.INFO, logger="orchestrator.io.progress")
    context.setJobGroup("callers-group", "a cancellable harness")
    try:
        with spark_progress(spark, "slow action", interval_s=0.5):
            assert context.getLocalProperty("spark.jobGroup.id") == "callers-group"
            spark.range(0, 2, 1, 2).select(slow("id")).collect()
        assert context.getLocalProperty("spark.jobGroup.id") == "callers-group"
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
        context.setLocalProperty("spark.job.description", None)
        context.setLocalProperty("spark.job.interruptOnCancel", None)
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.io.progress"]
    assert any(re.match(r"Progress: [0-2]/2 tasks done", line) for line in lines), lines
