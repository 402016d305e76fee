"""build_ml_pipeline: each feature type and its options, on real pandas data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator import build_ml_pipeline
from orchestrator.errors import SpecError
from orchestrator.steps.transformers import BooleanToFloat, DatetimeParts, TextColumns


def _frame():
    return pd.DataFrame({
        "age": [20.0, np.nan, 40.0, 60.0, 30.0, 50.0],
        "count": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
        "plan": ["basic", "pro", None, "basic", "pro", "basic"],
        "mixed": [1, "a", 1, "b", None, "a"],
        "flag": [True, False, None, "yes", "no", 1],
        "review": ["great service", None, "slow and bad", "great", "", "bad"],
        "signup": pd.to_datetime(["2024-01-01 10:00", "2024-02-15 23:00", None,
                                  "2024-12-31 00:00", "2023-06-03 08:30", "2024-03-09 12:00"]),
        "ignored": list("abcdef"),
    })


def _preprocess(features, frame=None):
    frame = _frame() if frame is None else frame
    pipe = build_ml_pipeline(features, {"estimator": "logistic_regression"})
    pre = pipe.named_steps["preprocess"]
    out = pre.fit_transform(frame, [0, 1, 0, 1, 0, 1])
    out = out.toarray() if hasattr(out, "toarray") else out
    return pre, pd.DataFrame(out, columns=pre.get_feature_names_out())


def test_pipeline_has_preprocess_and_model_steps_and_drops_unnamed_columns():
    pipe = build_ml_pipeline([{"name": "age", "type": "numeric"}],
                             {"estimator": "random_forest", "params": {"n_estimators": 7}})
    assert [name for name, _ in pipe.steps] == ["preprocess", "model"]
    assert pipe.named_steps["model"].n_estimators == 7
    _, out = _preprocess([{"name": "age", "type": "numeric"}])
    assert list(out.columns) == ["numeric_0__age"]


@pytest.mark.parametrize("impute, expected_fill", [("median", 40.0), ("mean", 40.0),
                                                   ("constant", -1.0)])
def test_numeric_imputation(impute, expected_fill):
    spec = {"name": "age", "type": "numeric", "impute": impute, "scale": "none"}
    if impute == "constant":
        spec["fill_value"] = -1.0
    _, out = _preprocess([spec])
    assert out["numeric_0__age"].iloc[1] == pytest.approx(expected_fill)


@pytest.mark.parametrize("scale, check", [
    ("standard", lambda v: abs(v.mean()) < 1e-9 and abs(v.std(ddof=0) - 1) < 1e-9),
    ("minmax", lambda v: v.min() == 0 and v.max() == 1),
    ("robust", lambda v: abs(np.median(v)) < 1e-9),
    ("none", lambda v: v.max() == 60.0),
])
def test_numeric_scaling(scale, check):
    _, out = _preprocess([{"name": "age", "type": "numeric", "scale": scale}])
    assert check(out["numeric_0__age"].to_numpy())


def test_nullable_integer_column_is_imputed():
    _, out = _preprocess([{"name": "count", "type": "numeric", "scale": "none"}])
    assert out["numeric_0__count"].tolist() == [1, 4, 3, 4, 5, 6]


def test_categorical_onehot_with_unseen_category_at_predict_time():
    pre, out = _preprocess([{"name": "plan", "type": "categorical"}])
    assert set(out.columns) == {"categorical_0__plan_basic", "categorical_0__plan_pro"}
    # the missing plan took the most frequent value
    assert out.loc[2, "categorical_0__plan_basic"] == 1
    unseen = pre.transform(_frame().assign(plan="enterprise"))
    assert np.all(np.asarray(unseen) == 0)


def test_categorical_max_categories_groups_rare_values():
    frame = pd.DataFrame({"c": ["a"] * 10 + ["b"] * 5 + ["c", "d", "e"]})
    pipe = build_ml_pipeline([{"name": "c", "type": "categorical", "max_categories": 3}],
                             {"estimator": "logistic_regression"})
    pre = pipe.named_steps["preprocess"].fit(frame)
    names = list(pre.get_feature_names_out())
    assert len(names) == 3 and any("infrequent" in n for n in names)
    assert pre.transform(pd.DataFrame({"c": ["zzz"]})).sum() == 1  # unseen -> infrequent


def test_categorical_ordinal_encodes_unseen_as_minus_one_and_mixed_types_work():
    pre, out = _preprocess([{"name": "mixed", "type": "categorical", "encode": "ordinal"}])
    assert out.shape[1] == 1
    assert pre.transform(_frame().assign(mixed="new"))[0, 0] == -1


def test_boolean_values_of_many_spellings():
    converted = BooleanToFloat().fit_transform(pd.DataFrame({"f": [True, "no", "Y", 0, None,
                                                                   "maybe"]}))
    np.testing.assert_array_equal(converted[:, 0], [1.0, 0.0, 1.0, 0.0, np.nan, np.nan])
    _, out = _preprocess([{"name": "flag", "type": "boolean"}])
    assert out["boolean_0__flag"].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("method", ["tfidf", "count"])
def test_text_vectorizers(method):
    _, out = _preprocess([{"name": "review", "type": "text", "method": method}])
    assert "text_0__review__great" in out.columns
    if method == "count":
        assert out["text_0__review__great"].tolist() == [1, 0, 0, 1, 0, 0]
    else:
        assert 0 < out["text_0__review__great"].iloc[0] < 1


def test_text_max_features_limits_vocabulary():
    _, out = _preprocess([{"name": "review", "type": "text", "max_features": 2}])
    assert out.shape[1] == 2


def test_datetime_parts():
    _, out = _preprocess([{"name": "signup", "type": "datetime",
                           "parts": ["year", "month", "dayofweek", "hour", "is_weekend"]}])
    row = out.iloc[0]
    assert row["datetime_0__signup_year"] == 2024 and row["datetime_0__signup_month"] == 1
    assert row["datetime_0__signup_dayofweek"] == 0 and row["datetime_0__signup_hour"] == 10
    assert out["datetime_0__signup_is_weekend"].iloc[5] == 1  # 2024-03-09 is a Saturday
    assert not out.isna().any().any()  # the missing timestamp was imputed
    strings = DatetimeParts(parts=("year",)).fit_transform(pd.DataFrame({"d": ["2020-05-01",
                                                                               "not a date"]}))
    assert strings[0, 0] == 2020 and np.isnan(strings[1, 0])


def test_every_type_together_fits_and_predicts():
    features = [{"name": "age", "type": "numeric"}, {"name": "plan", "type": "categorical"},
                {"name": "flag", "type": "boolean"}, {"name": "review", "type": "text"},
                {"name": "signup", "type": "datetime"}]
    frame = pd.concat([_frame()] * 5, ignore_index=True)
    y = [0, 1, 0, 1, 0, 1] * 5
    pipe = build_ml_pipeline(features, {"estimator": "random_forest",
                                        "params": {"n_estimators": 5, "random_state": 0}})
    pipe.fit(frame, y)
    assert pipe.predict_proba(frame).shape == (30, 2)


def test_text_columns_survive_an_all_empty_column():
    out = TextColumns().fit(pd.DataFrame({"t": [None, "", None]})).transform(
        pd.DataFrame({"t": ["x"]}))
    assert out.shape[0] == 1


def test_build_rejects_bad_specs_with_spec_error():
    with pytest.raises(SpecError, match="did you mean 'numeric'"):
        build_ml_pipeline([{"name": "a", "type": "numerik"}], {"estimator": "ridge"})


def test_typed_specs_and_param_overrides_are_checked_like_dicts():
    from orchestrator.specs import FeatureSpec

    with pytest.raises(SpecError, match="got 'numerc'"):
        build_ml_pipeline([FeatureSpec(type="numerc", columns=("a",))], {"estimator": "ridge"})
    pipe = build_ml_pipeline([FeatureSpec(type="numeric", columns=("a",), scale="minmax")],
                             {"estimator": "ridge"}, model_params={"alpha": 3.0})
    assert pipe.named_steps["model"].alpha == 3.0
    with pytest.raises(SpecError, match=r"Ridge has no parameter 'alpah' \(did you mean 'alpha'"):
        build_ml_pipeline([{"name": "a", "type": "numeric"}], {"estimator": "ridge"},
                          model_params={"alpah": 1})
