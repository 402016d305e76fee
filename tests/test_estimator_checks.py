"""scikit-learn's contract for our estimators: ``check_estimator`` plus the bugs it found.

Checked against scikit-learn 1.9.1. Each entry of ``EXPECTED_FAILED_CHECKS``
says why that check is wrong for the estimator by design; the test also fails
when an expected failure starts passing, so the list cannot go stale.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import DataConversionWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import check_estimator
from threadpoolctl import threadpool_limits

from orchestrator.steps.calibration import CalibratedModel, CalibrationError
from orchestrator.errors import DataError, MissingColumnError, OrchestratorError
from orchestrator.steps.transformers import (
    BooleanToFloat,
    CategoryToString,
    DatetimeParts,
    TextColumns,
)

# CategoryToString turns every value into a string, by design: OneHotEncoder
# refuses columns that mix numbers and strings. These checks compare two
# outputs with assert_allclose, which cannot subtract strings ("unsupported
# operand type(s) for -: 'str' and 'str'"). The properties they test (pickling,
# idempotence, sample order and subset invariance, list input, pipelines) are
# tested with exact equality in test_category_to_string_output_is_stable below.
_STRING_OUTPUT = ("CategoryToString returns strings; the check compares outputs with "
                  "assert_allclose, which needs numbers (see "
                  "test_category_to_string_output_is_stable for the same property)")
EXPECTED_FAILED_CHECKS = {
    "CategoryToString": {name: _STRING_OUTPUT for name in (
        "check_pipeline_consistency",
        "check_estimators_pickle",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_fit_idempotent",
    )},
}

@pytest.fixture(autouse=True)
def _one_thread():
    # These tests fit hundreds of tiny models; multi-threaded BLAS and OpenMP
    # make each of them several times slower on a busy machine.
    with threadpool_limits(limits=1):
        yield


ESTIMATORS = [
    BooleanToFloat(),
    CategoryToString(),
    DatetimeParts(),
    TextColumns(),
    # cv=3, as scikit-learn's own test configuration for CalibratedClassifierCV:
    # check_fit2d_1feature and check_fit1d draw classes of 3 rows, and the default
    # cv=5 rightly refuses them ("needs at least 5 rows of every class").
    CalibratedModel(LogisticRegression(), cv=3),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_check_estimator(estimator):
    expected = EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SkipTestWarning for array API, convergence, ...
        results = check_estimator(estimator, expected_failed_checks=expected)
    ran = {r["check_name"] for r in results}
    assert len(ran) > 40  # the whole suite ran, not a handful of checks
    passing_anyway = sorted({r["check_name"] for r in results
                             if r["expected_to_fail"] and r["status"] == "passed"})
    assert not passing_anyway, f"expected to fail but pass, remove them: {passing_anyway}"
    assert set(expected) <= ran


def test_every_estimator_class_of_the_package_is_checked():
    from sklearn.base import BaseEstimator

    import orchestrator.steps.calibration
    import orchestrator.steps.transformers

    classes = {obj for module in (orchestrator.steps.transformers, orchestrator.steps.calibration)
               for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, BaseEstimator)
               and obj.__module__ == module.__name__ and not obj.__name__.startswith("_")}
    assert classes == {type(e) for e in ESTIMATORS}


# ------------------------------------------------------------------ transformers

def _frame(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame({
        "flag": ["yes", "no", True, False, "1", None, "y", "n"][:n],
        "city": ["Paris", "Oslo", "Rome", None, "Oslo", "Paris", "Rome", "Oslo"][:n],
        "when": pd.to_datetime(["2024-01-06 10:00", "2024-02-07 11:00", "2024-03-08 12:00",
                                "2024-04-09 13:00", None, "2024-06-11 15:00",
                                "2024-07-12 16:00", "2024-08-13 17:00"][:n]),
        "text": ["red apple", "green pear", "red pear", None, "apple pie", "pear tart",
                 "green apple", "red"][:n],
    })


def _pair(transformer) -> list[str]:
    """Two columns of the kind the transformer is made for."""
    kind = {BooleanToFloat: "flag", CategoryToString: "city", DatetimeParts: "when",
            TextColumns: "text"}[type(transformer)]
    return [kind, f"{kind}_2"]


def _fitted(transformer):
    columns = _pair(transformer)
    data = _frame()
    second = data[columns[0]].iloc[::-1].reset_index(drop=True)
    frame = pd.DataFrame({columns[0]: data[columns[0]], columns[1]: second})
    return clone(transformer).fit(frame), frame


TRANSFORMERS = [BooleanToFloat(), CategoryToString(), DatetimeParts(), TextColumns()]
ids = [type(t).__name__ for t in TRANSFORMERS]


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=ids)
def test_reordered_columns_are_refused(transformer):
    fitted, frame = _fitted(transformer)
    with pytest.raises(ValueError, match=r"(?s)The feature names should match those that were "
                                         r"passed during fit.*same order as they were in fit"):
        fitted.transform(frame[frame.columns[::-1]])


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=ids)
def test_extra_and_missing_columns_are_refused(transformer):
    fitted, frame = _fitted(transformer)
    extra = frame.assign(other=1)
    with pytest.raises(ValueError, match=r"(?s)should match.*unseen at fit time:\n- other"):
        fitted.transform(extra)
    with pytest.raises(ValueError, match=rf"(?s)should match.*yet now missing:\n- "
                                         rf"{frame.columns[1]}"):
        fitted.transform(frame[[frame.columns[0]]])
    with pytest.raises(ValueError, match=rf"X has 3 features, but {type(transformer).__name__} "
                                         r"is expecting 2 features as input"):
        clone(transformer).fit(frame.to_numpy()).transform(extra.to_numpy())


def test_text_columns_keep_each_vocabulary_on_its_column():
    # The bug: a frame with swapped columns used to be transformed with each
    # vocabulary applied to the other column, silently.
    frame = pd.DataFrame({"a": ["cat dog", "dog"], "b": ["red blue", "blue"]})
    fitted = TextColumns(method="count").fit(frame)
    names = fitted.get_feature_names_out().tolist()
    assert names == ["a__cat", "a__dog", "b__blue", "b__red"]
    counts = fitted.transform(frame).toarray()
    np.testing.assert_array_equal(counts, [[1, 1, 1, 1], [0, 1, 1, 0]])
    with pytest.raises(ValueError, match="same order"):
        fitted.transform(frame[["b", "a"]])


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=ids)
def test_wrong_input_features_are_refused(transformer):
    fitted, frame = _fitted(transformer)
    right = fitted.get_feature_names_out()
    np.testing.assert_array_equal(fitted.get_feature_names_out(list(frame.columns)), right)
    with pytest.raises(ValueError, match="input_features is not equal to feature_names_in_"):
        fitted.get_feature_names_out(list(frame.columns[::-1]))
    with pytest.raises(ValueError, match="input_features should have length equal to number "
                                         "of features"):
        clone(transformer).fit(frame.to_numpy()).get_feature_names_out(["only_one"])


def test_names_out_without_input_names_follow_scikit_learn():
    fitted = DatetimeParts(parts=("year",)).fit(_frame()[["when"]].to_numpy())
    assert not hasattr(fitted, "feature_names_in_")
    assert fitted.get_feature_names_out().tolist() == ["x0_year"]
    assert fitted.get_feature_names_out(["stamp"]).tolist() == ["stamp_year"]


def test_frames_keep_their_types_through_the_checks():
    # The checks must not convert a mixed frame to numbers (or to one object
    # array): datetimes, booleans and missing values arrive as they were.
    frame = _frame()
    parts = DatetimeParts(parts=("month", "hour")).fit(frame[["when"]]).transform(frame[["when"]])
    np.testing.assert_array_equal(parts[:2], [[1, 10], [2, 11]])
    assert np.isnan(parts[4]).all()
    flags = BooleanToFloat().fit_transform(frame[["flag"]]).ravel()
    np.testing.assert_array_equal(flags, [1, 0, 1, 0, 1, np.nan, 1, 0])
    counts = pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")})
    assert CategoryToString().fit_transform(counts).ravel().tolist()[::2] == ["1", "3"]


def test_category_to_string_output_is_stable():
    """What the checks CategoryToString is expected to fail test, with exact equality."""
    rng = np.random.RandomState(0)
    X = rng.randint(0, 4, size=(30, 3)).astype(float)
    fitted = CategoryToString().fit(X)
    out = fitted.transform(X)
    assert out.dtype == object and out[0, 0] == str(int(X[0, 0]))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).transform(X), out)
    np.testing.assert_array_equal(CategoryToString().fit(X).transform(X), out)  # idempotent
    np.testing.assert_array_equal(fitted.transform(X.tolist()), out)  # not an array
    order = rng.permutation(len(X))
    np.testing.assert_array_equal(fitted.transform(X[order]), out[order])
    np.testing.assert_array_equal(fitted.transform(X[:5]), out[:5])
    np.testing.assert_array_equal(make_pipeline(CategoryToString()).fit(X).transform(X), out)


def test_transformers_in_a_pipeline_get_their_columns_by_name():
    # The ColumnTransformer gives each transformer exactly its columns, in
    # spec order, also when the scoring frame has its columns in another order.
    from sklearn.compose import ColumnTransformer

    frame = _frame()
    pipeline = ColumnTransformer([
        ("flags", BooleanToFloat(), ["flag"]),
        ("cities", make_pipeline(CategoryToString(), OneHotEncoder(handle_unknown="ignore")),
         ["city"]),
        ("times", DatetimeParts(parts=("month",)), ["when"]),
        ("texts", TextColumns(method="count"), ["text"]),
    ], sparse_threshold=0)
    expected = pipeline.fit_transform(frame)
    np.testing.assert_array_equal(pipeline.transform(frame[frame.columns[::-1]]), expected)
    assert "texts__text__apple" in pipeline.get_feature_names_out()


# ------------------------------------------------------------------ CalibratedModel

def _binary(n: int = 60):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return X, y


# type_of_target casts the NaN/inf labels to int to see whether they are integral.
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("cv", [3, "holdout"])
@pytest.mark.parametrize("labels, match", [
    (lambda y: np.column_stack([y, y]), r"y should be a 1d array, got an array of shape \(60, 2\)"),
    (lambda y: np.linspace(0, 1, len(y)), "Unknown label type: continuous"),
    (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y), "Input y contains NaN"),
    (lambda y: np.where(np.arange(len(y)) == 3, np.inf, y), "Input y contains infinity"),
    (lambda y: y[:-1], "inconsistent numbers of samples: \\[60, 59\\]"),
    (lambda y: np.zeros_like(y), r"needs at least two classes, got only one class: \[0\]"),
], ids=["2d", "continuous", "nan", "inf", "length", "one_class"])
def test_bad_labels_give_a_clear_value_error(cv, labels, match):
    X, y = _binary()
    with pytest.raises(CalibrationError, match=match) as info:
        CalibratedModel(LogisticRegression(), cv=cv).fit(X, labels(y))
    assert isinstance(info.value, ValueError) and isinstance(info.value, OrchestratorError)


def test_empty_data_and_1d_x_are_refused():
    with pytest.raises(ValueError, match="got 0 samples"):
        CalibratedModel(LogisticRegression()).fit(np.empty((0, 3)), [])
    X, y = _binary()
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        CalibratedModel(LogisticRegression(), cv=3).fit(X[:, 0], y)


def test_column_vector_y_is_raveled_like_scikit_learn():
    X, y = _binary()
    flat = CalibratedModel(LogisticRegression(), cv="holdout", random_state=0).fit(X, y)
    with pytest.warns(DataConversionWarning):
        column = CalibratedModel(LogisticRegression(), cv="holdout",
                                 random_state=0).fit(X, y.reshape(-1, 1))
    np.testing.assert_allclose(column.predict_proba(X), flat.predict_proba(X))


def test_wrapped_estimator_tags_pass_through():
    X, y = _binary()
    linear, gbm = LogisticRegression(), HistGradientBoostingClassifier(max_iter=5)
    assert get_tags(linear).input_tags != get_tags(gbm).input_tags  # missing values, sparse
    for estimator in (linear, gbm):
        assert get_tags(CalibratedModel(estimator)).input_tags == get_tags(estimator).input_tags
    assert get_tags(CalibratedModel(gbm)).input_tags.allow_nan
    X_nan = X.copy()
    X_nan[::7, 1] = np.nan
    fitted = CalibratedModel(gbm, cv=3).fit(X_nan, y)
    assert np.isfinite(fitted.predict_proba(X_nan)).all()
    fitted = CalibratedModel(linear, cv=3).fit(sparse.csr_matrix(X), y)
    assert fitted.predict_proba(sparse.csr_matrix(X)).shape == (len(y), 2)


# ------------------------------------------------------------------ the error family

def test_data_errors_are_value_errors():
    from orchestrator.specs.validation import ValidationSpec
    from orchestrator.steps.validation import make_cv_splitter

    y = pd.Series(["a"] * 10 + ["rare"] * 2)
    with pytest.raises(ValueError, match="class 'rare' has 2 row") as info:
        make_cv_splitter(ValidationSpec(cv_folds=5), "classification", y)
    assert isinstance(info.value, DataError)
    assert issubclass(MissingColumnError, ValueError)


def test_missing_column_is_caught_as_value_error(tmp_path):
    from orchestrator.workflow import run_ml_workflow

    X = pd.DataFrame({"age": [30, 40, 50, 60] * 5})
    y = pd.Series([0, 1] * 10)
    try:
        run_ml_workflow([{"columns": ["age", "income"], "type": "numeric"}],
                        {"estimator": "logistic_regression"}, X=X, y=y, output_dir=tmp_path)
    except ValueError as exc:
        caught = exc
    else:
        pytest.fail("a missing feature column was accepted")
    assert isinstance(caught, MissingColumnError)
    assert "'income'" in str(caught)
