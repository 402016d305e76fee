"""The feature_store spec: its shape, checked without reading any table (no Spark)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from orchestrator.entrypoints.cli import main
from orchestrator.errors import SpecError
from orchestrator.specs import Problems, parse_specs
from orchestrator.specs.feature_store import (
    FeatureStoreSpec,
    parse_feature_store_spec,
    parse_lookback,
)

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "labels": {"path": "data/churn_labels", "keys": ["customer_id"], "timestamp": "event_ts",
               "label": "churned", "version": 3},
    "lookups": [
        {"table": "main.ml.customer_features", "keys": ["customer_id"],
         "timestamp_key": "as_of_ts", "features": ["tenure_months", "plan", "monthly_charges"],
         "rename": {"plan": "current_plan"}, "lookback": "90d"},
        {"path": "data/profile", "keys": ["id"]},
    ],
    "exclude_columns": ["event_ts"],
}


def _parse(raw):
    problems = Problems()
    spec = parse_feature_store_spec(raw, problems)
    return spec, problems.messages


def _with(path: str, value):
    """GOOD with one value replaced (``labels.keys``, ``lookups.0.lookback``...), or removed."""
    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if value is _DELETE:
        del node[key]
    else:
        node[key] = value
    return raw


_DELETE = object()


def test_good_spec_parses_into_frozen_specs():
    spec, problems = _parse(GOOD)
    assert problems == []
    assert isinstance(spec, FeatureStoreSpec)
    assert spec.labels.path == "data/churn_labels" and spec.labels.version == 3
    assert spec.labels.keys == ("customer_id",) and spec.labels.timestamp == "event_ts"
    first, second = spec.lookups
    assert first.table == "main.ml.customer_features" and first.location == first.table
    assert first.features == ("tenure_months", "plan", "monthly_charges")
    assert first.output_name("plan") == "current_plan" and first.output_name("x") == "x"
    assert first.lookback_seconds == 90 * 86400
    assert second.path == "data/profile" and second.timestamp_key is None
    assert second.features is None and second.rename == {}
    assert spec.exclude_columns == ("event_ts",)
    with pytest.raises(AttributeError):
        spec.labels.label = "other"  # frozen


@pytest.mark.parametrize("text, seconds", [
    ("90d", 90 * 86400), ("12h", 12 * 3600), ("30m", 1800), ("45s", 45), ("2w", 14 * 86400),
    (" 7 d ", 7 * 86400), ("0d", None), ("90", None), ("90 days", None), ("-1d", None),
    ("1.5h", None), (90, None), (None, None),
])
def test_parse_lookback(text, seconds):
    assert parse_lookback(text) == seconds


def test_none_is_no_spec_and_timestamp_is_optional():
    assert _parse(None) == (None, [])
    raw = _with("labels.timestamp", _DELETE)
    raw["lookups"] = [{"path": "p", "keys": ["customer_id"]}]
    spec, problems = _parse(raw)
    assert problems == [] and spec.labels.timestamp is None


@pytest.mark.parametrize("raw, fragment", [
    ("labels.parquet", "feature_store_spec: expected a mapping"),
    ({**GOOD, "lookup": []}, "unknown key 'lookup' (did you mean 'lookups'?)"),
    (_with("labels", _DELETE), "missing required key 'labels'"),
    (_with("labels", ["a"]), "feature_store_spec.labels: expected a mapping"),
    (_with("labels.table", "main.ml.labels"), "labels: give exactly one of 'path'"),
    (_with("labels.path", _DELETE), "labels: give exactly one of 'path'"),
    (_with("labels.keys", _DELETE), "labels: missing required key 'keys'"),
    (_with("labels.keys", []), "labels.keys: expected a non-empty list of names"),
    (_with("labels.label", _DELETE), "labels: missing required key 'label'"),
    (_with("labels.label", "customer_id"), "'customer_id' is also one of the keys"),
    (_with("labels.timestamp", "customer_id"), "labels.timestamp: 'customer_id' is also one"),
    (_with("labels.version", -1), "labels.version: expected an integer >= 0"),
    (_with("labels.labl", "churned"), "unknown key 'labl' (did you mean 'label'?)"),
    (_with("lookups", _DELETE), "missing required key 'lookups'"),
    (_with("lookups", []), "lookups: expected a non-empty list of lookups"),
    (_with("lookups.1", "data/profile"), "lookups[1]: expected a mapping"),
    (_with("lookups.0.timestamp_col", "as_of_ts"),
     "unknown key 'timestamp_col' (did you mean 'timestamp_key'?)"),
    (_with("lookups.0.path", "data/features"), "lookups[0]: give exactly one of 'path'"),
    (_with("lookups.1.keys", ["id", "region"]),
     "lookups[1].keys: 2 key(s) ['id', 'region'] but labels.keys has 1"),
    (_with("lookups.0.keys", _DELETE), "lookups[0]: missing required key 'keys'"),
    (_with("lookups.0.lookback", "90 days"), "lookups[0].lookback: expected a positive duration"),
    (_with("lookups.0.lookback", "0h"), "lookups[0].lookback: expected a positive duration"),
    (_with("lookups.1.lookback", "30d"), "lookups[1].lookback: needs a timestamp_key"),
    (_with("lookups.0.timestamp_key", "customer_id"),
     "lookups[0].timestamp_key: 'customer_id' is also one of the keys"),
    (_with("lookups.0.features", ["plan", "customer_id"]),
     "lookups[0].features: 'customer_id' is a key or the timestamp_key"),
    (_with("lookups.0.rename", {"plam": "current_plan"}),
     "lookups[0].rename: 'plam' is not among the features ['tenure_months', 'plan', "
     "'monthly_charges'] (did you mean 'plan'?)"),
    (_with("lookups.0.rename", {"plan": "p", "tenure_months": "p"}),
     "'plan', 'tenure_months' are all renamed to 'p'"),
    (_with("lookups.0.rename", ["plan"]), "lookups[0].rename: expected a mapping"),
    (_with("lookups.0.rename", {"plan": ""}), "lookups[0].rename: expected feature names mapped"),
    (_with("lookups.0.rename", {"plan": "churned"}),
     "feature 'churned' would appear twice in the training set (also from the labels table)"),
    (_with("lookups.1.features", ["monthly_charges"]),
     "lookups[1]: feature 'monthly_charges' would appear twice in the training set (also from "
     "lookups[0])"),
    (_with("lookups.1.rename", {"plan": "current_plan"}),
     "lookups[1]: feature 'current_plan' would appear twice"),
    (_with("exclude_columns", ["churned"]), "exclude_columns: 'churned' is the label"),
])
def test_bad_spec_is_reported_with_where_and_how(raw, fragment):
    _, problems = _parse(raw)
    assert any(fragment in message for message in problems), problems


def test_point_in_time_lookup_without_label_timestamp_is_a_problem():
    _, problems = _parse(_with("labels.timestamp", _DELETE))
    assert problems == [
        "feature_store_spec.lookups[0].timestamp_key: 'as_of_ts' is given but labels has no "
        "'timestamp'; a point-in-time lookup needs each label row's event time (add "
        "labels.timestamp, or drop timestamp_key for an exact-key join)."]


def test_every_problem_is_reported_at_once_by_parse_specs():
    raw = _with("lookups.0.lookback", "soon")
    raw["lookups"][1]["keys"] = ["a", "b"]
    raw["labels"]["labl"] = "x"
    with pytest.raises(SpecError) as info:
        parse_specs(feature_specs=[{"name": "plan", "type": "categorical"}],
                    model_spec={"estimator": "logistic_regression"}, feature_store_spec=raw)
    assert len(info.value.problems) == 3
    text = str(info.value)
    for fragment in ("lookups[0].lookback", "lookups[1].keys", "unknown key 'labl'"):
        assert fragment in text


def test_parse_specs_accepts_the_feature_store_as_the_data_source():
    specs = parse_specs(feature_specs=[{"name": "plan", "type": "categorical"}],
                        model_spec={"estimator": "logistic_regression"}, feature_store_spec=GOOD)
    assert specs.feature_store.lookups[0].rename == {"plan": "current_plan"}
    assert specs.data is None


def test_demo_config_validates_from_the_cli(capsys):
    assert main(["validate", str(REPO / "conf" / "demo_feature_store.yml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_demo_config_resolves_table_paths_next_to_the_config():
    from orchestrator.config import load_config, validate_config

    config = load_config(REPO / "conf" / "demo_feature_store.yml", environ={})
    spec = validate_config(config).feature_store
    assert spec.labels.path == str(REPO / "data" / "demo" / "churn_labels")
    assert [lookup.path for lookup in spec.lookups] == [
        str(REPO / "data" / "demo" / "customer_features"), str(REPO / "data" / "demo" / "churn")]
