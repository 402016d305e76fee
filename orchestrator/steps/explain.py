"""Explanations of the fitted model, always on held-out rows.

Permutation importance shuffles one *raw input column* at a time and measures
how much the model's primary metric drops: it runs on the whole fitted
procedure (preprocessing included) with the raw frame, so a categorical column
counts once, not once per one-hot column. SHAP values (optional, tree models,
the ``shap`` package) explain the underlying model's raw output on the
preprocessed features.

Which held-out rows: for ``train_test``, the hold-out and the returned model;
for ``cross_validation`` and ``none``, one extra stratified split of the
training rows (``holdout_fraction``), with a model refit on the rest (see
:func:`explanation_split`). The training rows of the model explained are
never the rows it is explained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.errors import StepError
from orchestrator.specs.explain import ExplainSpec

logger = logging.getLogger(__name__)

__all__ = ["PermutationImportance", "explanation_split", "permutation_importance_table",
           "shap_values"]


@dataclass(frozen=True)
class ShapValues:
    """SHAP values of some rows: one row per input row, one column per model feature."""

    values: np.ndarray
    features: np.ndarray
    names: np.ndarray
    explainer: str


@dataclass(frozen=True)
class PermutationImportance:
    """Permutation importance per raw input column, most important first."""

    table: pd.DataFrame
    metric: str
    rows: int
    description: str

    def top(self, n: int) -> list[tuple[str, float, float]]:
        head = self.table.head(n)
        return [(str(r.feature), float(r.importance_mean), float(r.importance_std))
                for r in head.itertuples()]


def explanation_split(X: pd.DataFrame, y: pd.Series, kind: str, *, holdout_fraction: float = 0.2,
                      random_state: int = 0, sample_weight=None):
    """Split training rows into (fit rows, explanation rows), stratified for classifiers.

    Used when the validation strategy leaves no hold-out (cross-validation
    keeps no fold models): the explained model is refit on the fit rows only.

    Returns
    -------
    X_fit, X_explain, y_fit, y_explain
        and ``w_fit`` (the fit rows' weights) after them when ``sample_weight`` is given.
    """
    from sklearn.model_selection import train_test_split

    stratify = None
    if kind != "regression" and pd.Series(y).value_counts().min() >= 2:
        stratify = y
    weights = [] if sample_weight is None else [np.asarray(sample_weight)]
    parts = train_test_split(X, y, *weights, test_size=holdout_fraction,
                             random_state=random_state, stratify=stratify)
    return parts if sample_weight is None else parts[:5]


def _sample(X: pd.DataFrame, y: pd.Series, max_rows: int, random_state: int):
    if len(X) <= max_rows:
        return X, y
    rows = np.random.default_rng(random_state).choice(len(X), size=max_rows, replace=False)
    rows.sort()
    return X.iloc[rows], y.iloc[rows]


def permutation_importance_table(model, X: pd.DataFrame, y: pd.Series, scorer, spec: ExplainSpec,
                                 *, metric: str, description: str) -> PermutationImportance:
    """Permutation importance of each raw input column of ``X`` for a fitted ``model``.

    Parameters
    ----------
    model : fitted estimator
        The whole procedure (it takes the raw frame).
    X, y
        Held-out rows the model was not fitted on.
    scorer : callable
        ``scorer(estimator, X, y) -> float``, greater is better (the primary metric).
    spec : ExplainSpec
    metric, description : str
        The scorer's name, and which rows these are (for the summary and the plot).

    Returns
    -------
    PermutationImportance
        ``table`` has ``feature``, ``importance_mean``, ``importance_std``
        (the drop in ``metric`` when the column is shuffled), sorted.
    """
    from sklearn.inspection import permutation_importance

    X, y = _sample(X, y, spec.max_rows, spec.random_state)
    try:
        found = permutation_importance(model, X, y, scoring=scorer, n_repeats=spec.n_repeats,
                                       random_state=spec.random_state, n_jobs=1)
    except (ValueError, TypeError) as exc:
        raise StepError(f"permutation importance failed: {exc}") from exc
    table = pd.DataFrame({"feature": [str(c) for c in X.columns],
                          "importance_mean": found.importances_mean,
                          "importance_std": found.importances_std})
    table = table.sort_values("importance_mean", ascending=False, kind="stable")
    return PermutationImportance(table=table.reset_index(drop=True), metric=metric,
                                 rows=len(X), description=description)


def shap_values(pipeline, X: pd.DataFrame, spec: ExplainSpec) -> ShapValues:
    """SHAP values of a fitted tree-model pipeline on held-out rows ``X``.

    Raises
    ------
    StepError
        When ``shap`` is not installed, or the model is not a tree model
        ``shap.TreeExplainer`` supports.
    """
    try:
        import shap
    except ImportError as exc:
        raise StepError("explain.shap: the shap package is not installed; install it "
                        "(pip install shap, an optional dependency) or set "
                        "explain.shap: false.") from exc
    X = _sample(X, pd.Series(np.zeros(len(X)), index=X.index), spec.max_rows,
                spec.random_state)[0]
    transform, estimator = pipeline[:-1], pipeline.steps[-1][1]
    features = transform.transform(X)
    if hasattr(features, "toarray"):
        features = features.toarray()
    features = np.asarray(features, dtype=float)
    try:
        names = np.asarray(transform.get_feature_names_out(), dtype=object)
    except (AttributeError, ValueError, TypeError):
        names = np.asarray([f"feature {i}" for i in range(features.shape[1])], dtype=object)
    try:
        explainer = shap.TreeExplainer(estimator)
        values = explainer.shap_values(features, check_additivity=False)
    except Exception as exc:
        raise StepError(f"explain.shap: SHAP's TreeExplainer cannot explain "
                        f"{type(estimator).__name__} ({exc}); SHAP plots are for tree models "
                        "(random forests, gradient boosting, xgboost, lightgbm).") from exc
    values = np.asarray(values if not isinstance(values, list) else values[-1], dtype=float)
    if values.ndim == 3:
        # (rows, features, classes): the positive (last) class of a binary classifier.
        values = values[:, :, -1]
    return ShapValues(values=values, features=features, names=names, explainer="TreeExplainer")
