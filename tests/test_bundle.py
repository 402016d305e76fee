"""The Databricks asset bundle: the official schema, plus what the schema cannot see.

The schema check runs ../shared/tools/validate_bundle.py against the bundle JSON
schema published by databricks/cli. The other tests read the bundle as the CLI
would (databricks.yml merged with its includes) and hold it against setup.py,
the CLI's own argument parsers and the files in the repository.
"""

from __future__ import annotations

import ast
import glob
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VALIDATOR = SHARED / "tools" / "validate_bundle.py"


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture(scope="module")
def bundle() -> dict:
    merged = yaml.safe_load((ROOT / "databricks.yml").read_text())
    for pattern in merged.get("include", []):
        files = sorted(glob.glob(str(ROOT / pattern)))
        assert files, f"include {pattern!r} matches no file"
        for path in files:
            _merge(merged, yaml.safe_load(Path(path).read_text()))
    return merged


def _setup_call() -> dict:
    """name and entry_points of setup.py's setup(...) call, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            keywords = {k.arg: k.value for k in node.keywords}
            return {"name": ast.literal_eval(keywords["name"]),
                    "entry_points": ast.literal_eval(keywords["entry_points"])}
    raise AssertionError("setup.py has no setup(...) call")


def _wheel_tasks(bundle: dict):
    for job_key, job in bundle["resources"]["jobs"].items():
        for task in job["tasks"]:
            if "python_wheel_task" in task:
                yield job_key, task


def _substitute(text: str, bundle: dict) -> str:
    """Resolve ${var.x} with the variables' defaults, as the bundle's dev target would."""
    variables = {name: str(spec.get("default")) for name, spec in bundle["variables"].items()}
    return re.sub(r"\$\{var\.([\w-]+)\}", lambda m: variables[m.group(1)], text)


@pytest.mark.skipif(not VALIDATOR.exists(),
                    reason=f"{SHARED} is absent: the official bundle schema and its validator "
                           "live there, beside the repository")
def test_bundle_is_valid_against_the_official_databricks_schema():
    done = subprocess.run([sys.executable, str(VALIDATOR), "databricks.yml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid (4 jobs, 2 targets)" in done.stdout


def test_targets_dev_is_the_default_development_target_and_prod_is_production(bundle):
    targets = bundle["targets"]
    assert targets["dev"] == {**targets["dev"], "mode": "development", "default": True}
    assert targets["prod"]["mode"] == "production"
    assert not targets["prod"].get("default")
    assert {"catalog", "schema", "experiment", "model_name"} <= set(bundle["variables"])


def test_every_wheel_task_names_the_setup_py_package_and_one_of_its_console_scripts(bundle):
    setup = _setup_call()
    scripts = dict(line.replace(" ", "").split("=") for line in
                   setup["entry_points"]["console_scripts"])
    used = set()
    for job_key, task in _wheel_tasks(bundle):
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == setup["name"], job_key
        assert wheel_task["entry_point"] in scripts, (job_key, wheel_task["entry_point"])
        module, function = scripts[wheel_task["entry_point"]].split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
        used.add(wheel_task["entry_point"])
        assert [lib["whl"] for lib in task["libraries"]] == ["../dist/*.whl"]
    assert used == {"orchestrator-train", "orchestrator-score"}


def test_the_wheel_artifact_builds_from_setup_py_into_the_folder_the_tasks_install_from(bundle):
    artifact = bundle["artifacts"]["orchestrator_wheel"]
    assert artifact["type"] == "whl"
    assert (ROOT / artifact["path"] / "setup.py").is_file()
    assert "--wheel-dir dist" in artifact["build"]
    # Task libraries are relative to the resources file that names them: each must point into
    # the folder the artifact's build writes to.
    import yaml

    build_dir = (ROOT / artifact["path"] / "dist").resolve()
    for resource in sorted((ROOT / "resources").glob("*.yml")):
        for job in (yaml.safe_load(resource.read_text()).get("resources", {})
                    .get("jobs", {}).values()):
            for task in job.get("tasks", []):
                for library in task.get("libraries", []):
                    wheel = (resource.parent / library["whl"]).resolve()
                    assert wheel.parent == build_dir, (resource.name, library["whl"])


def test_wheel_task_parameters_parse_with_the_entry_points_own_parsers(bundle, monkeypatch):
    from orchestrator.entrypoints import cli

    seen = {}
    monkeypatch.setattr(cli, "command_run", lambda config, **kw: seen.update(run=config, **kw)
                        or 0)
    monkeypatch.setattr(cli, "command_score", lambda args: seen.setdefault("score", args) and 0)
    for job_key, task in _wheel_tasks(bundle):
        params = [_substitute(p, bundle) for p in task["python_wheel_task"]["parameters"]]
        seen.clear()
        if task["python_wheel_task"]["entry_point"] == "orchestrator-train":
            assert cli.train_main(params) == 0
            assert seen["run"].endswith(("/conf/databricks.yml", "/conf/databricks_promote.yml"))
            assert seen["fail_on_reject"] is ("--fail-on-reject" in params)
        else:
            assert cli.score_main(params) == 0
            assert seen["score"].output.endswith(".churn_predictions"), job_key


def test_every_config_path_exists_in_the_repository_and_is_a_valid_job_config(bundle):
    from orchestrator.config import load_config, validate_config

    configs = set()
    for _, task in _wheel_tasks(bundle):
        params = task["python_wheel_task"]["parameters"]
        if "--config" in params:
            value = params[params.index("--config") + 1]
            assert value.startswith("${workspace.file_path}/"), value
            configs.add(value.removeprefix("${workspace.file_path}/"))
    assert configs == {"conf/databricks.yml", "conf/databricks_promote.yml"}
    for relative in configs:
        path = ROOT / relative
        assert path.is_file(), f"{relative} is referenced by the bundle but does not exist"
        specs = validate_config(load_config(path))
        assert specs.tuning is not None and specs.mlflow is not None


def test_job_clusters_use_an_ml_runtime_in_dedicated_access_mode(bundle):
    clusters = [cluster for job in bundle["resources"]["jobs"].values()
                for cluster in job["job_clusters"]]
    assert len(clusters) == 4
    for cluster in clusters:
        new = cluster["new_cluster"]
        assert new["data_security_mode"] in ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")
        assert "-ml-" in _substitute(new["spark_version"], bundle)
    referenced = {name for path in (ROOT / "resources").glob("*.yml")
                  for name in re.findall(r"\$\{var\.([\w-]+)\}", path.read_text())}
    assert referenced <= set(bundle["variables"])


def test_train_then_score_scores_the_version_the_train_task_publishes(bundle):
    from orchestrator.entrypoints.notebook_support import training_task_values

    tasks = {t["task_key"]: t for t in bundle["resources"]["jobs"]["train_then_score"]["tasks"]}
    score = tasks["score"]
    assert score["depends_on"] == [{"task_key": "train"}]
    model_uri = score["python_wheel_task"]["parameters"][1]
    refs = re.findall(r"\{\{tasks\.(\w+)\.values\.(\w+)\}\}", model_uri)
    assert refs == [("train", "model_version")]
    published = training_task_values({"mlflow_run_id": "r", "mlflow_model": {
        "model_uri": "models:/m-1", "registered_model_name": "c.s.m", "model_version": "7"}})
    assert published["model_version"] == "7"
    assert tasks["train"]["python_wheel_task"]["entry_point"] == "orchestrator-train"


def test_train_promote_score_scores_the_alias_only_after_the_gate_passed(bundle):
    """train_and_promote runs the promotion config with --fail-on-reject (a rejection fails
    the task, so the dependent score task never runs) and score reads the model at the alias
    the gate moves: a rejected model is never scored. That run --fail-on-reject exits 1 on a
    real rejection is tested in test_promotion.py; that train_main passes the flag on, in
    test_wheel_task_parameters_parse_with_the_entry_points_own_parsers."""
    from orchestrator.config import load_config, validate_config

    job = bundle["resources"]["jobs"]["train_promote_score"]
    assert [t["task_key"] for t in job["tasks"]] == ["train_and_promote", "score"]
    train, score = job["tasks"]
    assert "depends_on" not in train
    assert score["depends_on"] == [{"task_key": "train_and_promote"}]
    assert train["python_wheel_task"]["entry_point"] == "orchestrator-train"
    assert score["python_wheel_task"]["entry_point"] == "orchestrator-score"
    train_params = train["python_wheel_task"]["parameters"]
    assert "--fail-on-reject" in train_params
    model_uri = score["python_wheel_task"]["parameters"][
        score["python_wheel_task"]["parameters"].index("--model-uri") + 1]
    assert model_uri == "models:/${var.catalog}.${var.schema}.${var.model_name}@${var.model_alias}"

    # The gate moves the alias the score task reads, in the model the train task registers.
    env = job["job_clusters"][0]["new_cluster"]["spark_env_vars"]
    environ = {key: _substitute(value, bundle) for key, value in env.items()}
    config_path = ROOT / train_params[train_params.index("--config") + 1].removeprefix(
        "${workspace.file_path}/")
    specs = validate_config(load_config(config_path, environ=environ))
    assert specs.promotion is not None and specs.mlflow.model_alias is None
    uri = _substitute(model_uri, bundle)
    assert uri == f"models:/{specs.mlflow.registered_model_name}@{specs.promotion.alias}"
