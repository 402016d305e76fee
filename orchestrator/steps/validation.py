"""Step 6: validating the fitted procedure honestly.

Cross-validation refits the whole procedure (preprocessing, model, and
calibration when on) inside each training fold. A train_test hold-out is split
off before any fitting, tuning or calibration and only scored here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.errors import DataError
from orchestrator.steps.metrics import WorkflowScorer
from orchestrator.specs import ValidationSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationOutcome:
    """Scores of one validation.

    ``metrics`` maps a metric name to ``{"mean", "std", "folds"}`` for
    cross-validation, or ``{"value"}`` for a hold-out.
    """

    strategy: str
    primary_metric: str
    cv_score: float | None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    #: Out-of-fold or hold-out predictions (y_true, y_pred, y_proba, classes, description),
    #: kept only when asked for, for the plots of step 7.
    predictions: dict[str, Any] | None = None


def _predictions(model, X, y, description: str) -> dict[str, Any]:
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    classes = list(getattr(model, "classes_", [])) or None
    return {"y_true": np.asarray(y), "y_pred": np.asarray(model.predict(X)), "y_proba": proba,
            "classes": classes, "description": description}


def _concatenate(parts: list[dict[str, Any]], description: str) -> dict[str, Any]:
    proba = [p["y_proba"] for p in parts]
    return {"y_true": np.concatenate([p["y_true"] for p in parts]),
            "y_pred": np.concatenate([p["y_pred"] for p in parts]),
            "y_proba": None if any(p is None for p in proba) else np.vstack(proba),
            "classes": parts[0]["classes"], "description": description}


def _smallest_class(y: pd.Series) -> tuple[Any, int]:
    counts = pd.Series(y).value_counts()
    return counts.index[-1], int(counts.iloc[-1])


def make_cv_splitter(spec: ValidationSpec, kind: str, y: pd.Series):
    """StratifiedKFold for classification, KFold for regression.

    Raises
    ------
    DataError
        When a class has fewer rows than folds (stratification is impossible).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    random_state = spec.random_state if spec.shuffle else None
    if kind == "regression":
        return KFold(n_splits=spec.cv_folds, shuffle=spec.shuffle, random_state=random_state)
    label, count = _smallest_class(y)
    if count < spec.cv_folds:
        raise DataError(f"validation: class {label!r} has {count} row(s), fewer than "
                        f"cv_folds={spec.cv_folds}; lower validation_params.cv_folds or add rows "
                        "of that class.")
    return StratifiedKFold(n_splits=spec.cv_folds, shuffle=spec.shuffle,
                           random_state=random_state)


def split_holdout(X: pd.DataFrame, y: pd.Series, spec: ValidationSpec, kind: str):
    """Split off the train_test hold-out before anything is fitted.

    Returns
    -------
    X_train, X_test, y_train, y_test
    """
    from sklearn.model_selection import train_test_split

    stratify = None
    if kind != "regression" and spec.stratify:
        label, count = _smallest_class(y)
        if count < 2:
            raise DataError(f"validation: class {label!r} has {count} row; a stratified hold-out "
                            "needs at least 2 rows per class. Add rows or set "
                            "validation_params.stratify: false.")
        stratify = y
    n_test = int(np.ceil(spec.test_size * len(y)))
    needed = pd.Series(y).nunique() if stratify is not None else 1
    if n_test < needed or len(y) - n_test < max(2, needed):
        per_class = " (a stratified split needs a row of each class on both sides)" \
            if stratify is not None else ""
        raise DataError(f"validation: test_size={spec.test_size} of {len(y)} rows leaves "
                        f"{len(y) - n_test} training and {n_test} hold-out rows{per_class}; "
                        "adjust validation_params.test_size.")
    return train_test_split(X, y, test_size=spec.test_size, random_state=spec.random_state,
                            stratify=stratify)


def cross_validate_procedure(procedure, X: pd.DataFrame, y: pd.Series, spec: ValidationSpec,
                             scorer: WorkflowScorer, kind: str, *,
                             keep_predictions: bool = False) -> ValidationOutcome:
    """Cross-validate an unfitted procedure; every fold refits a clone of it.

    With ``keep_predictions`` the fold models also predict their own test
    rows, giving out-of-fold predictions without refitting anything.
    """
    from sklearn.model_selection import cross_validate

    splitter = make_cv_splitter(spec, kind, y)
    scores = cross_validate(procedure, X, y, cv=splitter, scoring=scorer, error_score="raise",
                            return_estimator=keep_predictions, return_indices=keep_predictions)
    predictions = None
    if keep_predictions:
        parts = [_predictions(model, X.iloc[test], y.iloc[test], "")
                 for model, test in zip(scores["estimator"], scores["indices"]["test"])]
        predictions = _concatenate(parts, f"out-of-fold predictions of {spec.cv_folds}-fold "
                                   "cross-validation")
    metrics: dict[str, dict[str, Any]] = {}
    for name in scorer.metric_names():
        key = f"test_{name}"
        if key not in scores:
            continue
        folds = [float(v) for v in scores[key]]
        metrics[name] = {"mean": float(np.nanmean(folds)) if not np.all(np.isnan(folds))
                         else float("nan"),
                         "std": float(np.nanstd(folds)) if not np.all(np.isnan(folds))
                         else float("nan"),
                         "folds": folds}
    cv_score = metrics[scorer.primary]["mean"]
    return ValidationOutcome(strategy="cross_validation", primary_metric=scorer.primary,
                             cv_score=cv_score, metrics=metrics,
                             rows={"rows": len(y), "folds": spec.cv_folds},
                             predictions=predictions)


def score_holdout(model, X_test: pd.DataFrame, y_test: pd.Series, scorer: WorkflowScorer,
                  *, train_rows: int, keep_predictions: bool = False) -> ValidationOutcome:
    """Score the final model on the hold-out it never saw."""
    scores = scorer(model, X_test, y_test)
    predictions = (_predictions(model, X_test, y_test, "predictions on the train_test hold-out")
                   if keep_predictions else None)
    metrics = {name: {"value": float(scores[name])} for name in scorer.metric_names()
               if name in scores}
    return ValidationOutcome(strategy="train_test", primary_metric=scorer.primary,
                             cv_score=float(scores[scorer.primary]), metrics=metrics,
                             rows={"train_rows": train_rows, "test_rows": len(y_test)},
                             predictions=predictions)
