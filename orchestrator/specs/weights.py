"""Row weights: which column holds each training row's ``sample_weight``, and which
estimators can take one.

A weight column is declared in the data source (``data: {sample_weight: weight}``) or
passed to ``run_ml_workflow(sample_weight=...)`` as a column name or as an array of one
weight per row. It is never a feature: the workflow loads it with the rows and passes
it to every fit (training, tuning trials, cross-validation folds, calibration, the
decision threshold) and to every score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.errors import did_you_mean
from orchestrator.specs.problems import Problems

__all__ = ["SampleWeightSpec", "check_sample_weight_spec", "fit_accepts_sample_weight"]


@dataclass(frozen=True)
class SampleWeightSpec:
    """Where the rows' weights come from.

    Attributes
    ----------
    column : str or None
        The weight column of the data (X, the Delta table or the feature-store training
        set); None when the weights were passed to ``run_ml_workflow`` as an array.
    """

    column: str | None = None

    @property
    def description(self) -> str:
        """``column 'w'`` or ``an array passed to run_ml_workflow``, for the summary and MLflow."""
        if self.column is None:
            return "an array passed to run_ml_workflow"
        return f"column {self.column!r}"


def fit_accepts_sample_weight(estimator_class: type) -> bool:
    """Whether the estimator's ``fit`` takes ``sample_weight`` (scikit-learn's own test).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> fit_accepts_sample_weight(LogisticRegression), fit_accepts_sample_weight(KNeighborsClassifier)
    (True, False)
    """
    from sklearn.utils.validation import has_fit_parameter

    return has_fit_parameter(estimator_class, "sample_weight")


def check_sample_weight_spec(*, from_data: str | None, from_call: object, estimator_class,
                             estimator_name: str | None, label: str | None,
                             features: Sequence[str], projected: Sequence[str] | None,
                             has_source: bool, problems: Problems) -> SampleWeightSpec | None:
    """Resolve the weight column of a job and record every problem with it.

    Parameters
    ----------
    from_data : str or None
        ``data_spec.sample_weight`` (already checked to be a string).
    from_call : str, bool or None
        ``run_ml_workflow(sample_weight=...)``: a column name, True for an array of
        weights, or None.
    estimator_class : type or None
        The model's class (None when the model spec has problems of its own).
    estimator_name : str or None
        What the model spec names (for the message).
    label : str or None
        The label column: it cannot be the weight too.
    features : sequence of str
        The feature columns: the weight is never one.
    projected : sequence of str or None
        ``data_spec.columns``, when given: the weight column must be among them.
    has_source : bool
        True when the rows come from a data source rather than X and y.
    problems : Problems

    Returns
    -------
    SampleWeightSpec or None
        None when the job has no weights (or after a problem).
    """
    where = "run_ml_workflow.sample_weight"
    if from_call is not None and not isinstance(from_call, (str, bool)):
        problems.expected(where, "a column name or an array of one weight per row", from_call)
        return None
    if from_call is True and has_source:
        problems.add(where, "an array of weights needs the rows as X and y; with a data_spec "
                     "or feature_store_spec name the weight column instead "
                     "(sample_weight='weight', or data_spec.sample_weight).")
        return None
    column = from_call if isinstance(from_call, str) else None
    if column is not None and not column.strip():
        problems.expected(where, "a column name", column)
        return None
    if from_data is not None:
        if column is not None and column != from_data:
            problems.add(where, f"{column!r} differs from data_spec.sample_weight "
                         f"{from_data!r}; name the weight column in one place.")
            return None
        column, where = from_data, "data_spec.sample_weight"
    if column is None and from_call is not True:
        return None
    found = True
    if column is not None:
        if column == label:
            problems.add(where, f"the weight column {column!r} is the label column; weights "
                         "need a column of their own.")
            found = False
        elif column in features:
            problems.add(where, f"the weight column {column!r} is also a feature; remove it "
                         "from feature_specs (a row's weight says how much the row counts, "
                         "the model never sees it).")
            found = False
        if projected is not None and column not in projected:
            problems.add(where, f"the weight column {column!r} is not among the projected "
                         f"columns; add it to data_spec.columns{did_you_mean(column, projected)}.")
            found = False
    if estimator_class is not None and not fit_accepts_sample_weight(estimator_class):
        problems.add(where, f"{estimator_class.__name__} (model_spec.estimator "
                     f"{estimator_name!r}) takes no sample_weight in fit, so row weights cannot "
                     "be used with it; choose an estimator whose fit accepts sample_weight (e.g. "
                     "logistic_regression, random_forest, hist_gradient_boosting, xgboost, "
                     "lightgbm) or remove sample_weight.")
        found = False
    return SampleWeightSpec(column=column) if found else None
