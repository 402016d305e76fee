"""Row weights in every fit and every score.

The workflow's procedures nest scikit-learn meta-estimators (the pipeline, calibration
around it, the decision threshold around that), so the weights travel by scikit-learn's
metadata routing: :func:`request_sample_weight` marks the pipeline's model step as
wanting ``sample_weight`` (and the preprocessing steps as not wanting it), and
:func:`fit_weighted` fits with routing switched on for this thread only
(``sklearn.config_context``, never the process-wide ``set_config``). A fold run on a
Spark executor enters that context in its own process, as the task body calls
:func:`fit_weighted` there.

Routing requests live on the estimators, and skops cannot serialise them (a request
refers back to its estimator, which skops follows forever), so
:func:`drop_routing_requests` removes them from the fitted model the workflow returns
and logs: ``predict`` never routes anything.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.errors import DataError

__all__ = ["check_sample_weight_values", "drop_routing_requests", "fit_weighted",
           "request_sample_weight", "rows_of"]

#: Offending values shown in a message.
_SHOWN = 5


def check_sample_weight_values(values: Any, *, where: str, rows: int | None = None,
                               ) -> np.ndarray:
    """The weights as float64, or one :class:`DataError` naming every problem with them.

    Weights must be numbers (not booleans), one per row, with no missing or infinite
    value, none negative, and not all zero.

    Parameters
    ----------
    values : pandas Series or array-like
    where : str
        Names the weights in the message (``"data_spec.sample_weight (column 'w')"``).
    rows : int, optional
        The number of training rows the weights must match.

    Returns
    -------
    numpy.ndarray of float64

    Raises
    ------
    DataError
        Listing every problem, each with the first offending rows and values.

    Examples
    --------
    >>> check_sample_weight_values([1, 2.5, 0], where="w").tolist()
    [1.0, 2.5, 0.0]
    """
    if np.ndim(values) != 1:
        raise DataError(f"{where}: expected one weight per row (a 1-D column or array), got "
                        f"shape {np.shape(values)}.")
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if rows is not None and len(series) != rows:
        raise DataError(f"{where}: {len(series)} weights for {rows} rows; give one weight per "
                        "row, in the rows' order.")
    if pd.api.types.is_bool_dtype(series.dtype) or not (
            pd.api.types.is_numeric_dtype(series.dtype) or series.dtype == object):
        raise DataError(f"{where}: weights must be numbers, got dtype {series.dtype}; cast "
                        "the column to a numeric type.")
    problems = []
    missing = series.isna().to_numpy(dtype=bool)
    if series.dtype == object:  # e.g. a list with None: numbers only, never text or booleans
        not_numbers = series.map(lambda v: v is not None and v == v and (
            isinstance(v, bool) or not isinstance(v, numbers.Number))).to_numpy(dtype=bool)
        if not_numbers.any():
            problems.append(f"{int(not_numbers.sum())} value(s) are not numbers "
                            f"({_first(series, not_numbers)})")
            series = series.where(~not_numbers, None)
    weights = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if missing.any():
        problems.append(f"{int(missing.sum())} value(s) are missing, at rows "
                        f"{_first_rows(series, missing)}")
    infinite = np.isinf(weights)
    if infinite.any():
        problems.append(f"{int(infinite.sum())} value(s) are infinite "
                        f"({_first(series, infinite)})")
    negative = weights < 0
    if negative.any():
        problems.append(f"{int(negative.sum())} value(s) are negative "
                        f"({_first(series, negative)})")
    if not problems and not np.any(weights > 0):
        problems.append(f"all {len(weights)} weights are zero, so no row would count")
    if problems:
        raise DataError(f"{where}: weights must be finite numbers >= 0, not all zero, one per "
                        "row; " + "; ".join(problems) + ". Fix or filter those rows "
                        "(data_spec.filter can drop them).")
    return weights


def _first(series: pd.Series, mask) -> str:
    mask = np.asarray(mask, dtype=bool)
    shown = series[mask].iloc[:_SHOWN]
    pairs = ", ".join(f"row {_plain(index)!r}: {_plain(value)!r}"
                      for index, value in shown.items())
    return pairs + (", ..." if mask.sum() > _SHOWN else "")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _first_rows(series: pd.Series, mask) -> str:
    mask = np.asarray(mask, dtype=bool)
    rows = [repr(_plain(i)) for i in series.index[mask][:_SHOWN]]
    return ", ".join(rows) + (", ..." if mask.sum() > _SHOWN else "")


def rows_of(sample_weight: np.ndarray | None, positions) -> np.ndarray | None:
    """The weights of the rows at ``positions`` (None stays None)."""
    return None if sample_weight is None else np.asarray(sample_weight)[positions]


def request_sample_weight(pipeline):
    """A clone of ``pipeline`` whose last step asks for ``sample_weight`` in ``fit``.

    Every other estimator inside it whose ``fit`` takes ``sample_weight`` (a
    ``StandardScaler``) is marked as not wanting it: preprocessing learns from the
    rows unweighted, as with ``pipeline.fit(X, y, model__sample_weight=w)``.
    """
    import sklearn
    from sklearn.base import clone
    from sklearn.utils.validation import has_fit_parameter

    requested = clone(pipeline)
    steps = getattr(requested, "steps", None)
    final = steps[-1][1] if steps else requested
    with sklearn.config_context(enable_metadata_routing=True):
        final.set_fit_request(sample_weight=True)
        for value in requested.get_params(deep=True).values():
            if (value is not final and hasattr(value, "set_fit_request")
                    and hasattr(value, "fit") and has_fit_parameter(value, "sample_weight")):
                value.set_fit_request(sample_weight=False)
    return requested


def fit_weighted(estimator, X, y, sample_weight: np.ndarray | None = None):
    """``estimator.fit(X, y)``, routing ``sample_weight`` to whatever asked for it.

    Routing is on for this call only, in this thread; without weights this is a plain fit.
    """
    if sample_weight is None:
        return estimator.fit(X, y)
    import sklearn

    with sklearn.config_context(enable_metadata_routing=True):
        return estimator.fit(X, y, sample_weight=sample_weight)


_MODEL_PACKAGES = ("sklearn.", "orchestrator.", "xgboost.", "lightgbm.")


def drop_routing_requests(model):
    """Remove metadata-routing requests from a fitted model and everything inside it.

    The model predicts exactly as before; a later weighted refit should start from the
    workflow's procedure (which keeps its requests), not from this model. Returns ``model``.
    """
    seen: set[int] = set()
    pending = [model]
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, (list, tuple)):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif (not isinstance(value, type)
              and type(value).__module__.startswith(_MODEL_PACKAGES)
              and hasattr(value, "__dict__")):
            value.__dict__.pop("_metadata_request", None)
            pending.extend(value.__dict__.values())
    return model
