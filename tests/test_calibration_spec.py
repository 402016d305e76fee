"""calibration_spec parsing: every problem recorded, with one message shape."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from orchestrator.errors import SpecError
from orchestrator.specs import parse_specs
from orchestrator.specs.problems import Problems
from orchestrator.specs.calibration import CalibrationSpec, parse_calibration_spec
from orchestrator.specs.model import parse_model_spec

ISSUE_EXAMPLE = """
calibration:
  method: auto          # sigmoid | isotonic | temperature | auto
  cv: 5                 # folds of CalibratedClassifierCV, or "holdout"
  holdout_fraction: 0.2 # with cv: holdout
  ensemble: auto
  keep_if_worse: false
"""


def parse(raw, model_spec=None):
    problems = Problems()
    spec = parse_calibration_spec(raw, problems, model_spec)
    return spec, problems.messages


def model(estimator: str):
    problems = Problems()
    spec = parse_model_spec({"estimator": estimator}, problems)
    assert not problems.messages  # fixture sanity, not the behaviour under test
    return spec


def test_the_issue_example_parses_without_problems():
    raw = yaml.safe_load(ISSUE_EXAMPLE)["calibration"]
    spec, messages = parse(raw, model("gaussian_nb"))
    assert messages == []
    assert spec == CalibrationSpec(method="auto", cv=5, holdout_fraction=0.2, ensemble="auto",
                                   keep_if_worse=False)


def test_absent_means_no_calibration_and_empty_means_defaults():
    assert parse(None) == (None, [])
    spec, messages = parse({})
    assert messages == []
    assert (spec.method, spec.cv, spec.holdout_fraction, spec.ensemble, spec.keep_if_worse,
            spec.diagnostic_fraction) == ("auto", 5, 0.2, "auto", False, 0.2)
    assert not spec.uses_holdout


def test_a_full_holdout_spec():
    spec, messages = parse({"method": "isotonic", "cv": "holdout", "holdout_fraction": 0.3,
                            "ensemble": False, "keep_if_worse": True,
                            "diagnostic_fraction": 0.25})
    assert messages == []
    assert spec.uses_holdout and spec.method == "isotonic" and spec.holdout_fraction == 0.3
    assert spec.ensemble is False and spec.keep_if_worse is True
    assert spec.diagnostic_fraction == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.method = "sigmoid"


@pytest.mark.parametrize("raw, pattern", [
    ({"method": "sigmod"}, r"calibration_spec\.method: expected one of auto, sigmoid, isotonic, "
                           r"temperature, got 'sigmod'\. \(did you mean 'sigmoid'\?\)"),
    ({"method": "platt"}, r"calibration_spec\.method: expected one of .*got 'platt'"),
    ({"cv": 1}, r"calibration_spec\.cv: expected an integer >= 2 \(folds\) or 'holdout', got 1"),
    ({"cv": 0}, r"calibration_spec\.cv: expected an integer >= 2"),
    ({"cv": 2.5}, r"calibration_spec\.cv: expected an integer >= 2 .*got 2\.5"),
    ({"cv": True}, r"calibration_spec\.cv: expected .*got True"),
    ({"cv": "holdot"}, r"calibration_spec\.cv: .*got 'holdot'\. \(did you mean 'holdout'\?\)"),
    ({"cv": "5"}, r"calibration_spec\.cv: .*got '5'\. write the number without quotes: cv: 5"),
    ({"cv": "holdout", "holdout_fraction": 0}, r"holdout_fraction: expected a number in \(0, 1\)"),
    ({"cv": "holdout", "holdout_fraction": 1.0},
     r"holdout_fraction: expected a number in \(0, 1\), got 1\.0"),
    ({"cv": "holdout", "holdout_fraction": -0.2}, r"holdout_fraction: expected a number"),
    ({"cv": "holdout", "holdout_fraction": "20%"}, r"holdout_fraction: expected a number .*'20%'"),
    ({"diagnostic_fraction": 1.5}, r"diagnostic_fraction: expected a number in \(0, 1\)"),
    ({"ensemble": "yes"}, r"calibration_spec\.ensemble: expected true, false or auto, got 'yes'"),
    ({"cv": "holdout", "ensemble": True}, r"ensemble: true needs cv folds"),
    ({"keep_if_worse": "no"}, r"keep_if_worse: expected true or false, got 'no'"),
    ({"methd": "auto"}, r"calibration_spec: unknown key 'methd' \(did you mean 'method'\?\)\. "
                        r"Allowed keys: method, cv, holdout_fraction"),
    ({"cv": "holdout", "holdout_fraction": 0.9, "diagnostic_fraction": 0.5},
     r"leave at most 10% of the rows to fit the model on"),
])
def test_bad_values_are_recorded_with_what_was_expected(raw, pattern):
    spec, messages = parse(raw)
    assert len(messages) == 1, messages
    assert re.search(pattern, messages[0]), messages[0]
    assert isinstance(spec, CalibrationSpec)  # parsing carries on to find other problems


def test_not_a_mapping():
    spec, messages = parse("isotonic")
    assert spec is None
    assert messages == ["calibration_spec: expected a mapping such as {method: auto, cv: 5}, "
                        "got 'isotonic'."]


def test_calibration_of_a_regression_task_is_a_problem():
    spec, messages = parse({"method": "sigmoid"}, model("ridge"))
    assert messages == [
        "calibration_spec: probability calibration applies to classification only, but "
        "model_spec.task is 'regression' (ridge); remove calibration_spec or choose a "
        "classifier."]
    assert parse({}, model("logistic_regression"))[1] == []


def test_parse_specs_reports_calibration_problems_with_the_others():
    with pytest.raises(SpecError) as info:
        parse_specs(feature_specs=[{"name": "age", "type": "numeric"}],
                    model_spec={"estimator": "ridge"},
                    calibration_spec={"method": "isotonc", "cv": 1}, data_given=True)
    problems = info.value.problems
    assert any("classification only" in p for p in problems)
    assert any("did you mean 'isotonic'" in p for p in problems)
    assert any(p.startswith("calibration_spec.cv:") for p in problems)
    assert len([p for p in problems if p.startswith("calibration_spec")]) == 3


def test_parse_specs_passes_a_valid_calibration_through():
    specs = parse_specs(feature_specs=[{"name": "age", "type": "numeric"}],
                        model_spec={"estimator": "gaussian_nb"},
                        calibration_spec={"cv": "holdout"}, data_given=True)
    assert specs.calibration == CalibrationSpec(cv="holdout")
    typed = CalibrationSpec(method="temperature", cv=3)
    specs = parse_specs(feature_specs=[{"name": "age", "type": "numeric"}],
                        model_spec={"estimator": "gaussian_nb"}, calibration_spec=typed,
                        data_given=True)
    assert specs.calibration is typed
