"""Each notebook under notebooks/ runs top to bottom on the local session.

The notebooks are executed cell by cell, as Databricks would, with their
widgets set through ``ORCHESTRATOR_WIDGET_<NAME>``: train a small config that
logs and registers its model in a real sqlite MLflow store, explore that run,
then score the demo table with the registered model into a Delta table that
delta-rs reads back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"

pytestmark = [pytest.mark.spark]


def _cells(path: Path) -> list[str]:
    text = path.read_text()
    assert text.splitlines()[0] == HEADER, f"{path.name}: not in Databricks source format"
    return [cell.strip("\n") for cell in text.split(SEPARATOR)]


def _run_notebook(name: str, widgets: dict, monkeypatch) -> dict:
    for key, value in widgets.items():
        monkeypatch.setenv(f"ORCHESTRATOR_WIDGET_{key.upper()}", str(value))
    namespace = {"__name__": "__main__"}
    for number, cell in enumerate(_cells(NOTEBOOKS / name)):
        exec(compile(cell, f"{name} [cell {number}]", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.py")), ids=lambda p: p.name)
def test_notebooks_hold_no_logic_and_define_their_widgets_with_defaults(path):
    cells = _cells(path)
    assert len(cells) >= 3
    tree = ast.parse(path.read_text())
    defined = [type(node).__name__ for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.Lambda))]
    assert defined == [], f"{path.name} holds logic: {defined}"
    assert "sys.path" not in path.read_text()
    widget_calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                    and getattr(node.func, "attr", None) == "text"]
    assert widget_calls and all(len(call.args) >= 2 for call in widget_calls)
    imports = {node.module.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom)}
    imports |= {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    assert imports == {"orchestrator"}  # the notebook only calls the package


@pytest.fixture(scope="module")
def workspace(spark, tmp_path_factory):
    from orchestrator.io.demo_data import write_demo_tables

    root = tmp_path_factory.mktemp("notebooks")
    tables = write_demo_tables(spark, str(root / "data"), n_customers=300, seed=5)
    store = f"sqlite:///{root / 'mlflow.db'}"
    config = root / "job.yml"
    config.write_text(f"""
name: notebook-test
data: {{path: {tables['churn']}, label: churned}}
features:
  - {{columns: [age, tenure_months, monthly_charges], type: numeric}}
  - {{columns: [contract, plan], type: categorical}}
model: {{estimator: logistic_regression, params: {{max_iter: 300}}}}
validation: {{strategy: train_test, params: {{test_size: 0.25, random_state: 0}}}}
mlflow:
  tracking_uri: {store}
  experiment_name: notebook-test
  registered_model_name: churn_nb
  model_alias: champion
  log_plots: false
output_dir: {root / 'out'}
""")
    return {"root": root, "config": config, "store": store, "churn": tables["churn"]}


def test_train_explore_and_score_notebooks_run_top_to_bottom(workspace, monkeypatch):
    import mlflow
    from deltalake import DeltaTable

    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace["store"])
    mlflow.set_tracking_uri(workspace["store"])
    try:
        trained = _run_notebook("train.py", {"config": workspace["config"]}, monkeypatch)
        results = trained["results"]
        assert results["warnings"] == [], results["warnings"]
        run_id = results["mlflow_run_id"]
        assert results["mlflow_model"]["model_version"] == "1"
        assert trained["dbutils"].jobs.taskValues.values["model_version"] == "1"

        explored = _run_notebook("explore_run.py", {"run_id": "", "experiment": "notebook-test",
                                                    "tracking_uri": workspace["store"]},
                                 monkeypatch)
        overview = explored["overview"]
        assert overview.run_id == run_id and overview.status == "FINISHED"
        assert overview.registered_versions == ["churn_nb/1"]
        assert overview.model_uri is not None and len(overview.metrics) > 0

        output = workspace["root"] / "predictions"
        scored = _run_notebook("score_table.py", {
            "model_uri": "models:/churn_nb@champion", "input": workspace["churn"],
            "output": output, "keep_columns": "customer_id"}, monkeypatch)
    finally:
        mlflow.set_tracking_uri(previous)
    assert scored["result"].rows_written == 300 and scored["result"].model_version == "1"
    table = DeltaTable(str(output)).to_pandas()
    source = DeltaTable(workspace["churn"]).to_pandas()
    assert sorted(table["customer_id"]) == sorted(source["customer_id"])
    assert set(table["model_version"]) == {"1"}
    probabilities = table["probabilities"].map(lambda pairs: sum(v for _, v in pairs))
    assert probabilities.between(1 - 1e-9, 1 + 1e-9).all()
