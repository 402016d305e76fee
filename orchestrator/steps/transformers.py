"""scikit-learn transformers for the feature types scikit-learn has no single step for.

They are plain module-level classes (no lambdas, no closures) so that a fitted
pipeline can be serialized with skops and declared as trusted by MLflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
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


class _ColumnwiseTransformer(TransformerMixin, BaseEstimator):
    """Remembers the input columns so feature names come out right."""

    def _remember_columns(self, X) -> pd.DataFrame:
        frame = _as_frame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        return frame

    def _frame(self, X) -> pd.DataFrame:
        check_is_fitted(self, "feature_names_in_")
        return _as_frame(X, columns=list(self.feature_names_in_))


class BooleanToFloat(_ColumnwiseTransformer):
    """Map booleans (True/False, "yes"/"no", 1/0, ...) to 1.0/0.0; anything else to NaN."""

    def fit(self, X, y=None):
        self._remember_columns(X)
        return self

    def transform(self, X):
        frame = self._frame(X)
        return np.column_stack([_to_float_bool(frame[c]) for c in frame.columns])

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(self.feature_names_in_, dtype=object)


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


class CategoryToString(_ColumnwiseTransformer):
    """Turn every category into a string (missing stays missing).

    OneHotEncoder refuses columns that mix numbers and strings, and pandas
    ``category`` or boolean columns; strings make all of them one kind.
    """

    def fit(self, X, y=None):
        self._remember_columns(X)
        return self

    def transform(self, X):
        frame = self._frame(X)
        # An int column arrives as float once it has a missing value: 1.0 must stay "1".
        frame = frame.apply(_integral_floats_as_ints)
        as_text = frame.astype("string").astype(object)
        return as_text.where(frame.notna(), np.nan).to_numpy(dtype=object)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(self.feature_names_in_, dtype=object)


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
        self._remember_columns(X)
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
        check_is_fitted(self, "feature_names_in_")
        return np.asarray([f"{c}_{p}" for c in self.feature_names_in_ for p in self.parts],
                          dtype=object)


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
        frame = self._remember_columns(X)
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
        return np.asarray([f"{c}__{w}" for v, c in zip(self.vectorizers_, self.feature_names_in_)
                           for w in v.get_feature_names_out()], dtype=object)


def _texts(series: pd.Series) -> list[str]:
    return ["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in series.tolist()]
