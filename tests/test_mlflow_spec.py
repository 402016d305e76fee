"""The mlflow spec: defaults, every key, and one message per problem."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.specs import MLflowSpec, Problems, parse_specs
from orchestrator.specs.mlflow import parse_mlflow_spec

REPO = Path(__file__).resolve().parents[1]


def _parse(raw):
    problems = Problems()
    return parse_mlflow_spec(raw, problems), problems.messages


def test_none_means_no_tracking_and_empty_means_defaults():
    assert _parse(None) == (None, [])
    spec, messages = _parse({})
    assert messages == []
    assert spec == MLflowSpec()
    assert (spec.tracking_uri, spec.log_model, spec.log_plots, spec.timeout_s) == (
        None, True, True, 10.0)


def test_every_key_of_the_issue_example():
    spec, messages = _parse({
        "tracking_uri": "http://mlflow.internal:5000",
        "experiment_name": "/Shared/churn",
        "run_name": "churn-rf",
        "tags": {"team": "growth", "cost_center": 42},
        "log_model": True,
        "registered_model_name": "churn_classifier",
        "model_alias": "challenger",
        "log_plots": False,
        "timeout_s": 2.5,
        "trusted_types": ["xgboost.*", "mypkg.models.Custom"],
    })
    assert messages == []
    assert spec == MLflowSpec(tracking_uri="http://mlflow.internal:5000",
                              experiment_name="/Shared/churn", run_name="churn-rf",
                              tags={"team": "growth", "cost_center": "42"},
                              registered_model_name="churn_classifier",
                              model_alias="challenger", log_plots=False, timeout_s=2.5,
                              trusted_types=("xgboost.*", "mypkg.models.Custom"))


def test_unset_environment_variable_means_default_uri():
    spec, messages = _parse({"tracking_uri": ""})
    assert messages == [] and spec.tracking_uri is None


@pytest.mark.parametrize("raw, message", [
    ("databricks", r"mlflow_spec: expected a mapping"),
    ({"experiment": "/Shared/x"}, r"unknown key 'experiment' \(did you mean 'experiment_name'"
                                  r"\?\)"),
    ({"timeout_s": 0}, r"mlflow_spec.timeout_s: expected a number in \(0, 600\], got 0"),
    ({"timeout_s": "10"}, r"mlflow_spec.timeout_s: expected a number"),
    ({"timeout_s": 3600}, r"mlflow_spec.timeout_s: expected a number in \(0, 600\]"),
    ({"log_model": "yes"}, r"mlflow_spec.log_model: expected true or false, got 'yes'"),
    ({"tags": ["team"]}, r"mlflow_spec.tags: expected a mapping of tag names"),
    ({"tags": {"team": {"name": "x"}}}, r"mlflow_spec.tags.team: expected a string, number"),
    ({"model_alias": "challenger"}, r"alias 'challenger' needs a registered model.*"
                                    r"add registered_model_name"),
    ({"registered_model_name": "m", "model_alias": "latest"}, r"'latest' and v<number> are "
                                                              r"reserved"),
    ({"registered_model_name": "m", "model_alias": "v3"}, r"reserved"),
    ({"registered_model_name": "m", "model_alias": "my alias"}, r"letters, digits, '_' and "
                                                                r"'-' only"),
    ({"registered_model_name": "m", "log_model": False}, r"registering a model needs the model "
                                                         r"logged"),
    ({"trusted_types": ["Booster"]}, r"mlflow_spec.trusted_types: expected dotted type names"),
    ({"tracking_uri": 5000}, r"mlflow_spec.tracking_uri: expected a non-empty string"),
])
def test_problems_say_where_what_and_how(raw, message):
    _, messages = _parse(raw)
    assert len(messages) == 1, messages
    assert re.search(message, messages[0]), messages[0]


def test_all_problems_are_reported_together_through_parse_specs():
    with pytest.raises(SpecError) as caught:
        parse_specs(feature_specs=[{"name": "age", "type": "numeric"}],
                    model_spec={"estimator": "logistic_regression"}, data_given=True,
                    mlflow_spec={"timeout_s": -1, "model_alias": "v1", "log_plot": True})
    assert len(caught.value.problems) == 4, caught.value.problems
    assert any("did you mean 'log_plots'" in p for p in caught.value.problems)


def test_parsing_imports_no_mlflow():
    code = ("import sys; from orchestrator.specs import parse_specs; "
            "parse_specs(feature_specs=[{'name': 'a', 'type': 'numeric'}], "
            "model_spec={'estimator': 'logistic_regression'}, data_given=True, "
            "mlflow_spec={'timeout_s': 3}); "
            "print(sorted(m for m in ('mlflow', 'skops', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
