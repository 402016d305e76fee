"""Checks of the training rows against the feature specs, made right after loading.

Each check names the column and shows the first offending values, so a user
sees ``column 'income' declared numeric holds text: '', 'n/a'`` instead of an
imputer's error about a dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from orchestrator.errors import DataError
from orchestrator.specs.features import FeatureSpec

logger = logging.getLogger(__name__)

__all__ = ["check_feature_values", "string_named_integer_columns"]

_SHOWN = 5


def _first(values: Iterable) -> str:
    shown = []
    for value in values:
        if len(shown) == _SHOWN:
            shown.append("...")
            break
        shown.append(repr(value))
    return ", ".join(shown)


def string_named_integer_columns(asked: Iterable[str], available: Iterable[object]) -> list[str]:
    """Columns asked for by a string name whose data column has a non-string name of that text.

    Examples
    --------
    >>> string_named_integer_columns(["0", "age"], [0, 1, "age"])
    ['0']
    """
    present = {c for c in available if isinstance(c, str)}
    as_text = {str(c) for c in available if not isinstance(c, str)}
    return [name for name in asked if name not in present and name in as_text]


def check_feature_values(X, specs: Iterable[FeatureSpec]) -> list[str]:
    """Refuse feature columns the pipeline cannot learn from; return warnings for doubtful ones.

    Parameters
    ----------
    X : pandas.DataFrame
        The training rows (feature columns only are looked at).
    specs : FeatureSpec sequence

    Returns
    -------
    list of str
        Warnings (a datetime column whose values parse only in part).

    Raises
    ------
    DataError
        Every problem at once: a numeric column holding text (the values are
        shown), a feature column with no value at all, a datetime column with
        no parseable value.
    """
    import pandas as pd

    problems: list[str] = []
    warnings: list[str] = []
    rows = len(X)
    for spec in specs:
        for column in spec.columns:
            if column not in X.columns:
                continue  # reported by the loader with the available columns
            values = X[column]
            present = values.dropna()
            if rows and present.empty:
                problems.append(f"column {column!r} ({spec.type}) has no values: all {rows} "
                                "rows are null; remove it from feature_specs or fix the source.")
                continue
            if spec.type == "numeric" and not pd.api.types.is_numeric_dtype(values) \
                    and not pd.api.types.is_bool_dtype(values):
                parsed = pd.to_numeric(present, errors="coerce")
                bad = present[parsed.isna()]
                if not bad.empty:
                    problems.append(
                        f"column {column!r} is declared numeric but {len(bad)} of {rows} rows "
                        f"hold non-numbers: {_first(bad.unique())}; clean or cast the column, "
                        "or declare it categorical.")
            elif spec.type == "datetime" and not pd.api.types.is_datetime64_any_dtype(values):
                # As DatetimeFeatures parses them (steps/transformers.py).
                parsed = pd.to_datetime(present, errors="coerce", utc=True)
                bad = present[parsed.isna()]
                if len(bad) == len(present):
                    problems.append(
                        f"column {column!r} is declared datetime but none of its values parse "
                        f"as a date: {_first(bad.unique())}; fix the format or the feature "
                        "type.")
                elif not bad.empty:
                    warnings.append(
                        f"column {column!r} (datetime): {len(bad)} of {len(present)} values do "
                        f"not parse as dates and are treated as missing: "
                        f"{_first(bad.unique())}.")
    if problems:
        raise DataError("training data does not fit the feature specs: "
                        + " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
                        if len(problems) > 1 else f"training data: {problems[0]}")
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings
