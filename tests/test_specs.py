"""Spec validation: every bad config is reported clearly, all at once, before Spark starts."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.errors import OrchestratorError, SpecError
from orchestrator.specs import parse_specs

GOOD_FEATURES = [{"name": "age", "type": "numeric"}, {"name": "plan", "type": "categorical"}]
GOOD_MODEL = {"estimator": "random_forest", "params": {"n_estimators": 10}}


def _parse(**overrides):
    kwargs = {"feature_specs": GOOD_FEATURES, "model_spec": GOOD_MODEL, "data_given": True}
    kwargs.update(overrides)
    return parse_specs(**kwargs)


BAD_CONFIGS = [
    ("feature_specs not a list", {"feature_specs": {"name": "age"}},
     r"feature_specs: expected a non-empty list"),
    ("empty feature list", {"feature_specs": []}, r"at least one feature spec"),
    ("misspelt feature type", {"feature_specs": [{"name": "age", "type": "numerc"}]},
     r"got 'numerc'.*did you mean 'numeric'"),
    ("name and columns", {"feature_specs": [{"name": "a", "columns": ["b"], "type": "numeric"}]},
     r"exactly one of 'name'.*got both"),
    ("neither name nor columns", {"feature_specs": [{"type": "numeric"}]},
     r"exactly one of 'name'.*got neither"),
    ("unknown option key", {"feature_specs": [{"name": "a", "type": "numeric", "scaling": "x"}]},
     r"unknown key 'scaling' \(did you mean 'scale'\?\)"),
    ("bad impute", {"feature_specs": [{"name": "a", "type": "numeric", "impute": "medain"}]},
     r"impute: expected one of median.*got 'medain'.*did you mean 'median'"),
    ("bad scale", {"feature_specs": [{"name": "a", "type": "numeric", "scale": "zscore"}]},
     r"scale: expected one of standard, minmax, robust, none, got 'zscore'"),
    ("constant without fill", {"feature_specs": [{"name": "a", "type": "numeric",
                                                  "impute": "constant"}]},
     r"needs a 'fill_value'"),
    ("bad encode", {"feature_specs": [{"name": "c", "type": "categorical", "encode": "hot"}]},
     r"encode: expected one of onehot, ordinal"),
    ("max_categories too small", {"feature_specs": [{"name": "c", "type": "categorical",
                                                     "max_categories": 1}]},
     r"max_categories: expected an integer >= 2, got 1"),
    ("bad text method", {"feature_specs": [{"name": "t", "type": "text", "method": "bert"}]},
     r"method: expected one of tfidf, count"),
    ("bad datetime part", {"feature_specs": [{"name": "d", "type": "datetime",
                                              "parts": ["year", "weekday"]}]},
     r"expected one of year.*got 'weekday'"),
    ("column in two specs", {"feature_specs": [{"name": "a", "type": "numeric"},
                                               {"columns": ["a"], "type": "categorical"}]},
     r"column 'a' is already used by feature_specs\[0\]"),
    ("unknown estimator", {"model_spec": {"estimator": "random_forrest"}},
     r"unknown estimator 'random_forrest' \(did you mean 'random_forest'\?\)"),
    ("estimator outside allowed packages", {"model_spec": {"estimator": "os.system"}},
     r"outside scikit-learn, xgboost and lightgbm"),
    ("dotted class missing", {"model_spec": {"estimator": "sklearn.ensemble.RandomForestClassifer"}},
     r"has no class 'RandomForestClassifer' \(did you mean 'RandomForestClassifier'\?\)"),
    ("unknown model param", {"model_spec": {"estimator": "random_forest",
                                            "params": {"n_estimator": 5}}},
     r"RandomForestClassifier has no parameter 'n_estimator' \(did you mean 'n_estimators'\?\)"),
    ("bad param value", {"model_spec": {"estimator": "random_forest",
                                        "params": {"n_estimators": "many"}}},
     r"n_estimators"),
    ("task contradicts estimator", {"model_spec": {"estimator": "ridge",
                                                   "task": "classification"}},
     r"Ridge is a regression estimator but task is 'classification'"),
    ("metric unknown", {"model_spec": {"estimator": "random_forest", "metric": "rocauc"}},
     r"metric: expected a scikit-learn scorer name.*did you mean 'roc_auc'"),
    ("metric for the wrong task", {"model_spec": {"estimator": "random_forest", "metric": "r2"}},
     r"metric 'r2' does not fit a classification task"),
    ("unknown model key", {"model_spec": {"estimator": "random_forest", "parms": {}}},
     r"unknown key 'parms' \(did you mean 'params'\?\)"),
    ("bad strategy", {"validation_strategy": "crossval"},
     r"expected one of cross_validation, group_k_fold, time_series, nested_cross_validation, "
     r"train_test, none, got .crossval..*cross_validation"),
    ("cv_folds of one", {"validation_params": {"cv_folds": 1}},
     r"cv_folds: expected an integer >= 2, got 1"),
    ("test_size out of range", {"validation_strategy": "train_test",
                                "validation_params": {"test_size": 1.5}},
     r"test_size: expected a number in \(0, 1\), got 1.5"),
    ("param of another strategy", {"validation_params": {"test_size": 0.2}},
     r"unknown key 'test_size'"),
    ("data and X both", {"data_spec": {"path": "/tmp/t", "label": "y"}},
     r"X and y were given together with data_spec"),
    ("no data at all", {"data_given": False}, r"no training data"),
    ("data spec without label", {"data_given": False, "data_spec": {"path": "/tmp/t"}},
     r"data_spec: missing required key 'label'"),
    ("data spec path and table", {"data_given": False,
                                  "data_spec": {"path": "/t", "table": "a.b", "label": "y"}},
     r"exactly one of 'path'.*got both"),
    ("version and timestamp", {"data_given": False,
                               "data_spec": {"path": "/t", "label": "y", "version": 1,
                                             "timestamp": "2024-01-01"}},
     r"at most one of 'version' and 'timestamp'"),
    ("negative max_rows", {"data_given": False,
                           "data_spec": {"path": "/t", "label": "y", "max_rows": 0}},
     r"max_rows: expected an integer >= 1, got 0"),
    ("feature not projected", {"data_given": False,
                               "data_spec": {"path": "/t", "label": "y", "columns": ["ag", "plan"]}},
     r"feature column 'age' is not among the projected columns.*did you mean 'ag'"),
]


@pytest.mark.parametrize("overrides, pattern", [(o, p) for _, o, p in BAD_CONFIGS],
                         ids=[name for name, _, _ in BAD_CONFIGS])
def test_bad_config_gives_a_clear_spec_error(overrides, pattern):
    with pytest.raises(SpecError) as info:
        _parse(**overrides)
    assert re.search(pattern, str(info.value), flags=re.S), str(info.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(SpecError) as info:
        parse_specs(feature_specs=[{"name": "a", "type": "numric"}],
                    model_spec={"estimator": "random_forrest"},
                    validation_strategy="cv", data_spec={"path": "/t", "version": -1})
    problems = info.value.problems
    assert len(problems) >= 4
    text = str(info.value)
    for fragment in ("numric", "random_forrest", "'cv'", "version", "label"):
        assert fragment in text


def test_spec_error_is_a_value_error_and_an_orchestrator_error():
    with pytest.raises(ValueError):
        _parse(feature_specs=[])
    with pytest.raises(OrchestratorError):
        _parse(feature_specs=[])


def test_good_specs_resolve_defaults():
    specs = _parse(feature_specs=[{"columns": ["a", "b"], "type": "numeric"},
                                  {"name": "c", "type": "categorical", "max_categories": 5},
                                  {"name": "t", "type": "text", "max_features": 50},
                                  {"name": "d", "type": "datetime"},
                                  {"name": "f", "type": "boolean"}],
                   model_spec={"estimator": "ridge"})
    numeric, categorical, text, dates, _ = specs.features
    assert numeric.columns == ("a", "b") and numeric.impute == "median"
    assert numeric.scale == "standard"
    assert categorical.impute == "most_frequent" and categorical.encode == "onehot"
    assert text.method == "tfidf" and text.max_features == 50
    assert dates.parts == ("year", "month", "dayofweek", "hour")
    assert specs.model.task == "regression"
    assert specs.model.class_path == "sklearn.linear_model.Ridge"
    assert specs.validation.cv_folds == 5


def test_dotted_estimator_path_and_task_inference():
    specs = _parse(model_spec={"estimator": "sklearn.svm.SVC", "params": {"C": 2.0}})
    assert specs.model.task == "classification"
    assert specs.model.make_estimator().C == 2.0


def test_validation_starts_no_spark_and_imports_no_heavy_library():
    # A fresh interpreter: in a full test run these modules are already imported.
    code = ("import sys\n"
            "from orchestrator.specs import parse_specs\n"
            "parse_specs(feature_specs=[{'name': 'a', 'type': 'numeric'}],\n"
            "            model_spec={'estimator': 'random_forest'}, data_given=True,\n"
            "            tuning_spec={'search_space': {'max_depth': {'dist': 'randint', 'low': 2,"
            " 'high': 9}}}, calibration_spec={'method': 'sigmoid'}, mlflow_spec={})\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pyspark', 'mlflow', 'hyperopt', 'py4j', 'optuna'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("overrides, pattern", [
    ({"model_spec": {"estimator": "linear_svc", "metric": "neg_log_loss"}},
     r"'neg_log_loss' needs predicted probabilities but LinearSVC has no predict_proba"),
    ({"feature_specs": [{"name": "a", "type": "numeric", "impute": "constant",
                         "fill_value": "zero"}]},
     r"fill_value: expected a number for a numeric feature, got 'zero'"),
    ({"model_spec": {"estimator": "random_forest", "pos_label": ["a", "b"]}},
     r"pos_label: expected one class label"),
    ({"data_given": False, "feature_specs": [{"name": "churned", "type": "numeric"}],
      "data_spec": {"path": "/t", "label": "churned"}},
     r"the label column 'churned' is also a feature"),
])
def test_more_mistakes_are_caught_before_any_data(overrides, pattern):
    with pytest.raises(SpecError, match=pattern):
        _parse(**overrides)


def test_boolean_constant_fill_and_yaml_date_timestamp_are_accepted():
    import datetime

    specs = _parse(feature_specs=[{"name": "f", "type": "boolean", "impute": "constant",
                                   "fill_value": False}],
                   data_given=False,
                   data_spec={"path": "/t", "label": "y", "timestamp": datetime.date(2024, 1, 2)})
    assert specs.features[0].fill_value is False
    assert specs.data.timestamp == "2024-01-02"


def _field_defaults(spec_class) -> dict:
    import dataclasses

    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                     else f.default) for f in dataclasses.fields(spec_class)
            if f.default is not dataclasses.MISSING
            or f.default_factory is not dataclasses.MISSING}


def _minimal_specs():
    """(parsed spec, the keys the minimal dict set or the type decides) for every parser."""
    from orchestrator.specs.calibration import parse_calibration_spec
    from orchestrator.specs.data import parse_data_spec
    from orchestrator.specs.explain import parse_explain_spec
    from orchestrator.specs.feature_store import parse_feature_store_spec
    from orchestrator.specs.features import parse_feature_specs
    from orchestrator.specs.mlflow import parse_mlflow_spec
    from orchestrator.specs.problems import Problems
    from orchestrator.specs.promotion import parse_promotion_spec
    from orchestrator.specs.threshold import parse_threshold_spec
    from orchestrator.specs.tuning import parse_tuning_spec
    from orchestrator.specs.validation import STRATEGIES, parse_validation_spec

    problems = Problems()
    parsed = [
        (parse_data_spec({"path": "/t"}, problems), {"path"}),
        (parse_tuning_spec({"search_space": {"C": {"dist": "uniform", "low": 0, "high": 1}}},
                           problems), {"search_space"}),
        (parse_calibration_spec({}, problems), set()),
        (parse_mlflow_spec({}, problems), set()),
        (parse_explain_spec({}, problems), set()),
        (parse_threshold_spec({"objective": "f1"}, problems, None), {"objective"}),
        (parse_promotion_spec({"alias": "champion"}, problems), {"alias"}),
    ]
    store = parse_feature_store_spec({"labels": {"path": "/l", "keys": ["id"], "label": "y"},
                                      "lookups": [{"path": "/f", "keys": ["id"]}]}, problems)
    parsed += [(store, {"labels", "lookups"}), (store.labels, {"path", "keys", "label"}),
               (store.lookups[0], {"path", "keys"})]
    required = {"group_k_fold": {"groups": "g"}, "time_series": {"order_by": "ts"}}
    for strategy in STRATEGIES:
        params = required.get(strategy, {})
        # Options a strategy does not take keep their defaults too.
        parsed.append((parse_validation_spec(strategy, params, problems),
                       {"strategy", *params}))
    for kind in ("numeric", "categorical", "boolean", "text", "datetime"):
        # The imputer's default depends on the type; FeatureSpec.impute=None means "not chosen".
        [feature] = parse_feature_specs([{"name": "x", "type": kind}], problems)
        parsed.append((feature, {"type", "columns", "impute"}))
    assert not problems, problems.messages
    return parsed


@pytest.mark.parametrize("spec, given", _minimal_specs(),
                         ids=lambda value: type(value).__name__ if not isinstance(value, set)
                         else "")
def test_a_minimal_spec_gets_the_dataclass_defaults(spec, given):
    """Defaults live only in the dataclasses: a changed default cannot diverge in a parser."""
    defaults = _field_defaults(type(spec))
    assert defaults.keys() - given, f"{type(spec).__name__} has no default left to check"
    assert {name: getattr(spec, name) for name in defaults if name not in given} \
        == {name: value for name, value in defaults.items() if name not in given}
