"""Spark Connect settings (spark.remote, --remote, $SPARK_REMOTE) and the Delta edge on Connect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.config import parse_config
from orchestrator.entrypoints.process import workers_use_this_interpreter
from orchestrator.errors import MissingTableError, SpecError
from orchestrator.io.session import choose_remote, is_connect_session

BASE = {"features": [{"name": "x", "type": "numeric"}], "model": {"estimator": "logistic_regression"},
        "data": {"path": "/tmp/t", "label": "y"}}


def test_config_takes_a_remote_instead_of_a_master():
    config = parse_config({**BASE, "spark": {"remote": "sc://127.0.0.1:15002"}},
                          base_dir=Path("/tmp"))
    assert config.spark_remote == "sc://127.0.0.1:15002" and config.spark_master is None


@pytest.mark.parametrize("spark, message", [
    ({"remote": "local[2]", "master": "local[2]"}, "not both"),
    ({"remote": 15002}, "config.spark.remote: expected a Spark Connect URL"),
    ({"remote": " "}, "config.spark.remote: expected a Spark Connect URL"),
])
def test_bad_remote_settings_are_spec_errors(spark, message):
    with pytest.raises(SpecError, match=message):
        parse_config({**BASE, "spark": spark}, base_dir=Path("/tmp"))


def test_master_and_remote_on_the_command_line_is_an_argument_error(capsys):
    from orchestrator.entrypoints.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "conf/demo.yml", "--master", "local[2]", "--remote", "local[2]"])
    assert exit_info.value.code == 2
    assert "--master and --remote" in capsys.readouterr().err


def test_remote_comes_from_the_argument_then_spark_remote_unless_a_master_is_asked():
    env = {"SPARK_REMOTE": "sc://envhost:15002"}
    assert choose_remote("local[2]", None, env) == "local[2]"
    assert choose_remote(None, None, env) == "sc://envhost:15002"
    assert choose_remote(None, "local[2]", env) is None
    assert choose_remote(None, None, {}) is None


def test_a_local_connect_server_gets_this_interpreter_for_its_workers():
    env: dict[str, str] = {}
    workers_use_this_interpreter("sc://host:15002", env)
    assert env == {}, "a remote server's workers are the cluster's business"
    workers_use_this_interpreter("local[2]", env)
    assert env == {"PYSPARK_PYTHON": sys.executable}
    kept = {"PYSPARK_PYTHON": "/opt/python"}
    workers_use_this_interpreter("local[2]", kept)
    assert kept == {"PYSPARK_PYTHON": "/opt/python"}


def test_spark_errors_include_spark_connects_exceptions():
    pytest.importorskip("grpc")
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException

    from orchestrator.io.delta import spark_errors

    assert SparkConnectGrpcException in spark_errors()


@pytest.mark.spark
def test_delta_tables_are_described_and_versioned_on_either_kind_of_session(
        spark, spark_is_connect, tmp_path):
    from orchestrator.io.delta import (
        delta_table_for_path,
        is_delta_table,
        latest_version,
        open_delta_source,
    )
    from orchestrator.specs.data import DataSpec

    assert is_connect_session(spark) == spark_is_connect
    path = str(tmp_path / "t")
    spark.range(5).selectExpr("id", "id % 2 AS y").write.format("delta").save(path)
    spark.range(5, 8).selectExpr("id", "id % 2 AS y").write.format("delta").mode("append") \
        .save(path)
    assert is_delta_table(spark, path)
    assert not is_delta_table(spark, str(tmp_path))
    table = delta_table_for_path(spark, path)
    assert latest_version(table) == 1
    assert table.detail().first()["numFiles"] >= 2
    with pytest.raises(MissingTableError, match="not a Delta table|no Delta table"):
        open_delta_source(spark, DataSpec(path=f"file:{tmp_path}/nothing", label="y"))
