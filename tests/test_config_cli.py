"""Job configs and the CLI, without Spark: env vars, relative paths, validate, --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.entrypoints.cli import main
from orchestrator.config import load_config, parse_config, resolve_path, validate_config
from orchestrator.errors import SpecError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, config: dict, name: str = "job.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


GOOD = {
    "features": [{"name": "age", "type": "numeric"}],
    "model": {"estimator": "logistic_regression"},
    "data": {"path": "tables/churn", "label": "churned"},
    "validation": {"strategy": "train_test", "params": {"test_size": 0.3}},
    "output_dir": "out",
}


def test_paths_are_relative_to_the_config_file(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.workflow_kwargs["data_spec"]["path"] == str(tmp_path / "tables" / "churn")
    assert config.workflow_kwargs["output_dir"] == str(tmp_path / "out")
    assert config.workflow_kwargs["validation_strategy"] == "train_test"
    assert config.workflow_kwargs["validation_params"] == {"test_size": 0.3}
    assert config.needs_spark()


@pytest.mark.parametrize("value", ["/abs/path", "s3://bucket/t", "dbfs:/mnt/t", "file:/x"])
def test_absolute_paths_and_uris_are_kept(value, tmp_path):
    assert resolve_path(value, tmp_path) == value


def test_env_vars_are_resolved_with_defaults(tmp_path):
    raw = {**GOOD, "data": {"path": "${DATA_ROOT}/churn", "label": "${LABEL:-churned}"}}
    config = parse_config(raw, base_dir=tmp_path, environ={"DATA_ROOT": "/data"})
    assert config.workflow_kwargs["data_spec"] == {"path": "/data/churn", "label": "churned"}


def test_missing_env_var_and_unknown_section_are_reported_together(tmp_path):
    raw = {**GOOD, "modle": {}, "data": {"path": "${NOT_SET_ANYWHERE}", "label": "y"}}
    with pytest.raises(SpecError) as info:
        parse_config(raw, base_dir=tmp_path, environ={})
    text = str(info.value)
    assert "environment variable NOT_SET_ANYWHERE is not set" in text
    assert "unknown key 'modle' (did you mean 'model'?)" in text


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_config(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("features: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_config(bad)


def test_validate_config_checks_every_spec(tmp_path):
    config = load_config(_write(tmp_path, {**GOOD, "model": {"estimator": "rf"}}))
    with pytest.raises(SpecError, match="unknown estimator 'rf'"):
        validate_config(config)


def test_cli_validate_good_and_bad(tmp_path, capsys):
    assert main(["validate", str(_write(tmp_path, GOOD))]) == 0
    assert ": valid." in capsys.readouterr().out
    bad = _write(tmp_path, {**GOOD, "features": [{"name": "age", "type": "numerik"}]}, "bad.yml")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'numeric'" in err and "Traceback" not in err


def test_cli_help_lists_commands_and_examples():
    out = subprocess.run([sys.executable, "-m", "orchestrator", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for fragment in ("validate", "run", "demo-data", "examples:", "exit codes"):
        assert fragment in out


def test_repo_configs_are_valid():
    configs = sorted((REPO / "conf").glob("*.yml"))
    assert configs, "conf/ holds the demo configs"
    for path in configs:
        validate_config(load_config(path, environ={}))


def test_whole_env_values_keep_their_yaml_type_and_spark_section_is_checked(tmp_path):
    raw = {**GOOD, "data": {"path": "t", "label": "y", "max_rows": "${MAX_ROWS:-100}"}}
    config = parse_config(raw, base_dir=tmp_path, environ={})
    assert config.workflow_kwargs["data_spec"]["max_rows"] == 100
    mixed = parse_config({**GOOD, "data": {"path": "${ROOT:-x}/t", "label": "y"}},
                         base_dir=tmp_path, environ={})
    assert mixed.workflow_kwargs["data_spec"]["path"].endswith("x/t")
    with pytest.raises(SpecError, match=r"config.spark.conf: expected a mapping") as info:
        parse_config({**GOOD, "spark": {"conf": ["a"], "master": 3}}, base_dir=tmp_path)
    assert "config.spark.master" in str(info.value)
