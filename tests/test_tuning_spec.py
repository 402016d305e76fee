"""The tuning spec: parsing, and every spec error caught before anything runs (no Spark)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from orchestrator.errors import SpecError
from orchestrator.specs import parse_specs
from orchestrator.specs.problems import Problems
from orchestrator.specs.model import parse_model_spec
from orchestrator.specs.tuning import Distribution, parse_tuning_spec, pipeline_param_name

FEATURES = [{"columns": ["a", "b"], "type": "numeric"}]


def _model(estimator="logistic_regression"):
    problems = Problems()
    spec = parse_model_spec({"estimator": estimator}, problems)
    assert not problems.messages
    return spec


def _parse(raw, estimator="logistic_regression"):
    problems = Problems()
    spec = parse_tuning_spec(raw, problems, _model(estimator))
    return spec, problems.messages


def test_issue_example_parses_with_types_and_defaults():
    spec, messages = _parse({
        "search_space": {
            "n_estimators": {"dist": "quniform", "low": 50, "high": 500, "q": 10},
            "max_depth": {"dist": "choice", "options": [3, 5, 8, None]},
            "min_samples_leaf": {"dist": "randint", "low": 1, "high": 5},
            "max_features": {"dist": "uniform", "low": 0.2, "high": 0.9},
        },
        "max_evals": 40, "parallelism": 4, "algo": "tpe", "metric": "roc_auc", "cv_folds": 3,
        "timeout_s": 1800, "early_stopping_rounds": 10, "backend": "auto", "seed": 42,
    }, estimator="random_forest")
    assert messages == []
    assert spec.search_space["n_estimators"] == Distribution(kind="quniform", low=50, high=500,
                                                             q=10, integer=True)
    assert spec.search_space["max_depth"].options == (3, 5, 8, None)
    assert spec.search_space["min_samples_leaf"].integer is True
    assert spec.search_space["max_features"].integer is False
    assert (spec.max_evals, spec.parallelism, spec.timeout_s, spec.early_stopping_rounds) == (
        40, 4, 1800.0, 10)

    defaults, messages = _parse({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}})
    assert messages == []
    assert (defaults.max_evals, defaults.algo, defaults.backend, defaults.cv_folds,
            defaults.parallelism, defaults.timeout_s, defaults.seed) == (
        20, "tpe", "auto", 3, None, None, 42)


def test_quniform_with_float_step_is_not_integer_and_nested_choice_parses():
    spec, messages = _parse({"search_space": {
        "tol": {"dist": "quniform", "low": 0.1, "high": 1.0, "q": 0.1},
        "C": {"dist": "choice", "options": [1.0, {"dist": "loguniform", "low": 0.01,
                                                  "high": 10}]}}})
    assert messages == []
    assert spec.search_space["tol"].integer is False
    nested = spec.search_space["C"].options[1]
    assert nested == Distribution(kind="loguniform", low=0.01, high=10)


def test_preprocess_params_keep_their_names_and_model_params_get_the_step_prefix():
    spec, messages = _parse({"search_space": {
        "C": {"dist": "uniform", "low": 0.1, "high": 1},
        "preprocess__numeric_0__scaler__with_mean": {"dist": "choice", "options": [True, False]}}})
    assert messages == []
    assert spec.pipeline_params() == {
        "C": "model__C",
        "preprocess__numeric_0__scaler__with_mean": "preprocess__numeric_0__scaler__with_mean"}
    assert pipeline_param_name("max_iter") == "model__max_iter"


@pytest.mark.parametrize("raw, expected", [
    ({"search_space": {"Cc": {"dist": "uniform", "low": 0, "high": 1}}},
     r"LogisticRegression has no parameter 'Cc' \(did you mean 'C'\?\)"),
    ({"search_space": {"C": {"dist": "uniform", "low": 2, "high": 1}}},
     r"low must be below high, got low=2 >= high=1"),
    ({"search_space": {"C": {"dist": "uniform", "low": 1, "high": 1}}},
     r"low must be below high"),
    ({"search_space": {"C": {"dist": "loguniform", "low": 0, "high": 1}}},
     r"\.low: expected a number > 0 for a log-scale distribution"),
    ({"search_space": {"C": {"dist": "logunifrom", "low": 0.1, "high": 1}}},
     r"\.dist: expected one of .*got 'logunifrom'.*did you mean 'loguniform'"),
    ({"search_space": {"C": {"low": 0.1, "high": 1}}}, r"missing required key 'dist'"),
    ({"search_space": {"C": {"dist": "uniform", "low": 0.1}}}, r"missing required key 'high'"),
    ({"search_space": {"max_iter": {"dist": "randint", "low": 1.5, "high": 9}}},
     r"max_iter\.low: expected an integer"),
    ({"search_space": {"C": {"dist": "choice", "options": []}}},
     r"options: expected a non-empty list"),
    ({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}, "algo": "tpee"},
     r"tuning_spec\.algo: expected one of tpe, random, anneal, atpe, got 'tpee'.*did you mean"),
    ({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}, "backend": "ray"},
     r"tuning_spec\.backend: expected one of auto, spark, local, optuna"),
    ({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}, "max_eval": 3},
     r"unknown key 'max_eval' \(did you mean 'max_evals'\?\)"),
    ({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}, "max_evals": 0},
     r"max_evals: expected an integer >= 1"),
    ({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}, "metric": "r2"},
     r"metric 'r2' does not fit a classification task"),
    ({"search_space": {"model__C": {"dist": "uniform", "low": 0, "high": 1}}},
     r"write the plain parameter name 'C'"),
    ({"search_space": {"preprocess__scaler": {"dist": "choice", "options": [1]}}},
     r"preprocess__<transformer>__<step>__<param>"),
    ({"search_space": {"C": {"dist": "normal", "mu": 1, "sigma": 1}}, "backend": "optuna"},
     r"optuna backend has no normal distribution"),
    ({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}, "backend": "optuna",
      "algo": "anneal"}, r"backend 'optuna' runs tpe or random, not 'anneal'"),
    ({"max_evals": 5}, r"missing required key 'search_space'"),
])
def test_spec_errors_name_the_place_and_the_fix(raw, expected):
    _, messages = _parse(raw)
    assert any(re.search(expected, m) for m in messages), messages


def test_all_problems_are_reported_together_by_parse_specs():
    with pytest.raises(SpecError) as info:
        parse_specs(feature_specs=FEATURES, model_spec={"estimator": "logistic_regression"},
                    tuning_spec={"search_space": {"Cc": {"dist": "uniform", "low": 0, "high": 1},
                                                  "tol": {"dist": "uniform", "low": 3, "high": 1}},
                                 "algo": "bayes"},
                    data_given=True)
    text = str(info.value)
    assert "3 problems" in text
    assert "did you mean 'C'" in text and "low must be below high" in text and "bayes" in text


def test_spec_errors_are_caught_without_importing_spark_or_hyperopt():
    """Validation runs before Spark starts: a fresh interpreter never imports pyspark/hyperopt."""
    code = (
        "import json, sys\n"
        "from orchestrator.errors import SpecError\n"
        "from orchestrator.specs import parse_specs\n"
        "try:\n"
        "    parse_specs(feature_specs=[{'name': 'a', 'type': 'numeric'}],\n"
        "                model_spec={'estimator': 'logistic_regression'},\n"
        "                tuning_spec={'search_space': {'Cc': {'dist': 'uniform', 'low': 0,\n"
        "                             'high': 1}}}, data_given=True)\n"
        "    caught = None\n"
        "except SpecError as exc:\n"
        "    caught = str(exc)\n"
        "print(json.dumps({'caught': caught, 'modules': sorted(m for m in sys.modules\n"
        "      if m.split('.')[0] in ('pyspark', 'hyperopt', 'optuna', 'mlflow'))}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["caught"] and "did you mean 'C'" in report["caught"]
    assert report["modules"] == []
