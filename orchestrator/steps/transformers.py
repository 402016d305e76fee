"""scikit-learn transformers for the feature types scikit-learn has no single step for.

They are plain module-level classes (no lambdas, no closures) so that a fitted
pipeline can be serialized with skops and declared as trusted by MLflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["BooleanToFloat", "CategoryToString", "DatetimeParts", "TextColumns"]

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _as_frame(X, columns=None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, pd.Series):
        return X.to_frame()
    return pd.DataFrame(X, columns=columns)


def _check_input(estimator, X, *, reset: bool) -> pd.DataFrame:
    """Validate ``X`` as scikit-learn's own transformers do, keeping pandas dtypes.

    ``fit`` (``reset=True``) records ``n_features_in_`` and, for a frame with
    string column names, ``feature_names_in_``. Later calls refuse a frame
    whose columns are missing, extra or reordered, and an array with another
    number of columns, with scikit-learn's own messages ("The feature names
    should match those that were passed during fit", "X has 3 features, but
    ... is expecting 4 features as input"): a per-column transformer fed the
    wrong columns would otherwise apply each column's state to another column.

    Frames are not converted (columns keep their strings, datetimes,
    booleans and missing values); anything else goes through ``check_array``
    without numeric conversion, which refuses 1-D, complex, sparse and empty
    input.
    """
    from sklearn.utils import check_array
    from sklearn.utils.validation import validate_data

    if isinstance(X, pd.Series):
        X = X.to_frame()
    if isinstance(X, pd.DataFrame):
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} "
                             f"feature(s) (shape={X.shape}) while a minimum of 1 of each is "
                             f"required by {type(estimator).__name__}.")
        complex_columns = [str(c) for c, dtype in X.dtypes.items()
                           if pd.api.types.is_complex_dtype(dtype)]
        if complex_columns:
            raise ValueError(f"Complex data not supported: columns {complex_columns}.")
    else:
        X = check_array(X, dtype=None, ensure_all_finite=False, estimator=estimator,
                        input_name="X")
    validate_data(estimator, X, reset=reset, skip_check_array=True)
    return _as_frame(X)


def _input_feature_names(estimator, input_features) -> np.ndarray:
    """``feature_names_in_`` (or x0, x1, ... when fit without names), checking ``input_features``.

    A private scikit-learn helper (checked against scikit-learn 1.9.1), kept
    here alone so that a change in it breaks one place, and
    tests/test_estimator_checks.py, not the pipeline.
    """
    from sklearn.utils.validation import _check_feature_names_in

    return _check_feature_names_in(estimator, input_features)


class _ColumnwiseTransformer(TransformerMixin, BaseEstimator):
    """Checks the input columns at fit and transform time so feature names stay right."""

    def _fit_frame(self, X) -> pd.DataFrame:
        return _check_input(self, X, reset=True)

    def _frame(self, X) -> pd.DataFrame:
        check_is_fitted(self, "n_features_in_")
        return _check_input(self, X, reset=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Missing values are part of the data these transformers handle.
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags


class BooleanToFloat(OneToOneFeatureMixin, _ColumnwiseTransformer):
    """Map booleans (True/False, "yes"/"no", 1/0, ...) to 1.0/0.0; anything else to NaN."""

    def fit(self, X, y=None):
        self._fit_frame(X)
        return self

    def transform(self, X):
        frame = self._frame(X)
        return np.column_stack([_to_float_bool(frame[c]) for c in frame.columns])


def _to_float_bool(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series.dtype) and not series.hasnans:
        return series.to_numpy(dtype=float)
    def convert(value):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return np.nan
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        if isinstance(value, (int, float, np.integer, np.floating)):
            return 1.0 if value == 1 else 0.0 if value == 0 else np.nan
        text = str(value).strip().lower()
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
        return np.nan

    return np.fromiter((convert(v) for v in series.tolist()), dtype=float, count=len(series))


class CategoryToString(OneToOneFeatureMixin, _ColumnwiseTransformer):
    """Turn every category into a string (missing stays missing).

    OneHotEncoder refuses columns that mix numbers and strings, and pandas
    ``category`` or boolean columns; strings make all of them one kind.
    """

    def fit(self, X, y=None):
        self._fit_frame(X)
        return self

    def transform(self, X):
        frame = self._frame(X)
        # An int column arrives as float once it has a missing value: 1.0 must stay "1".
        frame = frame.apply(_integral_floats_as_ints)
        as_text = frame.astype("string").astype(object)
        return as_text.where(frame.notna(), np.nan).to_numpy(dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # always object (strings)
        return tags


def _integral_floats_as_ints(column: pd.Series) -> pd.Series:
    if not pd.api.types.is_float_dtype(column.dtype):
        return column
    values = column.dropna()
    if len(values) and (values == np.floor(values)).all():
        return column.astype("Int64")
    return column


class DatetimeParts(_ColumnwiseTransformer):
    """Expand timestamp columns into numeric parts (year, month, dayofweek, hour, ...).

    Values that cannot be read as timestamps become NaN, to be imputed after.

    Parameters
    ----------
    parts : tuple of str
        Parts to extract, in this order, for each column.
    """

    def __init__(self, parts=("year", "month", "dayofweek", "hour")):
        self.parts = parts

    def fit(self, X, y=None):
        self._fit_frame(X)
        return self

    def transform(self, X):
        frame = self._frame(X)
        blocks = []
        for column in frame.columns:
            values = pd.to_datetime(frame[column], errors="coerce", utc=True)
            for part in self.parts:
                blocks.append(_datetime_part(values, part))
        return np.column_stack(blocks).astype(float)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "n_features_in_")
        names = _input_feature_names(self, input_features)
        return np.asarray([f"{c}_{p}" for c in names for p in self.parts], dtype=object)


def _datetime_part(values: pd.Series, part: str) -> np.ndarray:
    accessor = values.dt
    if part == "is_weekend":
        result = (accessor.dayofweek >= 5).astype(float).where(values.notna())
    else:
        result = getattr(accessor, part)
    return pd.to_numeric(result, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


class TextColumns(_ColumnwiseTransformer):
    """One bag-of-words vectorizer per text column (missing text counts as empty).

    Parameters
    ----------
    method : {"tfidf", "count"}
    max_features : int or None
        Vocabulary size per column.
    ngram_max : int
        Largest n-gram.
    lowercase : bool
    """

    def __init__(self, method="tfidf", max_features=None, ngram_max=1, lowercase=True):
        self.method = method
        self.max_features = max_features
        self.ngram_max = ngram_max
        self.lowercase = lowercase

    def _new_vectorizer(self):
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        cls = TfidfVectorizer if self.method == "tfidf" else CountVectorizer
        return cls(max_features=self.max_features, ngram_range=(1, self.ngram_max),
                   lowercase=self.lowercase)

    def fit(self, X, y=None):
        frame = self._fit_frame(X)
        self.vectorizers_ = []
        for column in frame.columns:
            vectorizer = self._new_vectorizer()
            texts = _texts(frame[column])
            try:
                vectorizer.fit(texts)
            except ValueError:
                # Only stop words or empty text in this column: keep a vectorizer that yields nothing.
                vectorizer = self._new_vectorizer().fit(["__empty__"])
            self.vectorizers_.append(vectorizer)
        return self

    def transform(self, X):
        from scipy import sparse

        frame = self._frame(X)
        check_is_fitted(self, "vectorizers_")
        blocks = [v.transform(_texts(frame[c])) for v, c in zip(self.vectorizers_, frame.columns)]
        return sparse.hstack(blocks, format="csr")

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "vectorizers_")
        names = _input_feature_names(self, input_features)
        return np.asarray([f"{c}__{w}" for v, c in zip(self.vectorizers_, names)
                           for w in v.get_feature_names_out()], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # the vectorizer's dtype, whatever came in
        return tags


def _texts(series: pd.Series) -> list[str]:
    return ["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in series.tolist()]
