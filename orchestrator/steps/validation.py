"""Step 6: validating the fitted procedure honestly.

Cross-validation refits the whole procedure (preprocessing, model, and
calibration when on) inside each training fold. A train_test hold-out is split
off before any fitting, tuning or calibration and only scored here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.errors import DataError
from orchestrator.steps.metrics import WorkflowScorer
from orchestrator.steps.weights import fit_weighted, rows_of
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
    #: Split settings, where the folds ran and, for nested CV, each outer fold's chosen params.
    details: dict[str, Any] = field(default_factory=dict)


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
    """StratifiedKFold for classification, KFold for regression (random K-fold).

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


def split_holdout(X: pd.DataFrame, y: pd.Series, spec: ValidationSpec, kind: str,
                  side: pd.DataFrame | None = None):
    """Split off the train_test hold-out before anything is fitted.

    With ``order_by`` the hold-out is the latest rows (``gap`` rows left out
    between); otherwise a random (stratified) split.

    Returns
    -------
    X_train, X_test, y_train, y_test, side_train
        ``side_train`` is None when ``side`` is.
    """
    train, test = holdout_positions(X, y, spec, kind, side)
    return (X.iloc[train], X.iloc[test], y.iloc[train], y.iloc[test],
            side.iloc[train] if side is not None else None)


def holdout_positions(X: pd.DataFrame, y: pd.Series, spec: ValidationSpec, kind: str,
                      side: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the training rows and of the train_test hold-out
    (:func:`split_holdout`'s split, for splitting the rows' weights alike)."""
    from sklearn.model_selection import train_test_split

    if spec.order_by is not None:
        return ordered_holdout(_side_column(side, spec.order_by, "order_by"),
                               spec.test_size, spec.gap)

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
    train, test = train_test_split(np.arange(len(y)), test_size=spec.test_size,
                                   random_state=spec.random_state, stratify=stratify)
    return train, test


def cross_validate_procedure(procedure, X: pd.DataFrame, y: pd.Series, spec: ValidationSpec,
                             scorer: WorkflowScorer, kind: str, *,
                             keep_predictions: bool = False, side: pd.DataFrame | None = None,
                             session=None, sample_weight: np.ndarray | None = None,
                             ) -> ValidationOutcome:
    """Cross-validate an unfitted procedure; every fold refits a clone of it.

    The folds follow ``spec`` (random K-fold, grouped or time-ordered). They run
    as Spark tasks on the session's executors (training rows broadcast once) or,
    without a usable session or when the spec asks for it, on the driver one
    after another; either way each fold fits ``clone(procedure)`` on its
    training rows and scores its test rows exactly as scikit-learn's
    ``cross_validate`` does. With ``keep_predictions`` the fold models also
    predict their own test rows, giving out-of-fold predictions. With
    ``sample_weight`` (one weight per row) each fold fits with its training rows'
    weights and scores with its test rows', as ``cross_validate(..., params=
    {"sample_weight": w})`` with metadata routing and weighted scorers does.
    """
    folds = make_folds(spec, kind, X, y, side)
    tasks = [(procedure, train, test, scorer, keep_predictions) for train, test in folds]
    shared = (X, y) if sample_weight is None else (X, y, sample_weight)
    results, placement = _run_folds(_fit_and_score_fold, tasks, shared, spec, session)
    predictions = None
    if keep_predictions:
        predictions = _concatenate([r["predictions"] for r in results],
                                   f"out-of-fold predictions of {len(folds)}-fold "
                                   f"{spec.split_kind.replace('_', ' ')} cross-validation")
    metrics = _fold_metrics([r["scores"] for r in results], scorer)
    return ValidationOutcome(strategy=spec.strategy, primary_metric=scorer.primary,
                             cv_score=metrics[scorer.primary]["mean"], metrics=metrics,
                             rows={"rows": len(y), "folds": len(folds)},
                             predictions=predictions,
                             details={"split": spec.settings(), **placement,
                                      "fold_sizes": [[len(tr), len(te)] for tr, te in folds]})


def nested_cross_validate(pipeline, X: pd.DataFrame, y: pd.Series, spec: ValidationSpec,
                          scorer: WorkflowScorer, kind: str, *, tune_fold, inner_folds: int,
                          inner_seed: int | None, keep_predictions: bool = False,
                          side: pd.DataFrame | None = None, session=None,
                          sample_weight: np.ndarray | None = None) -> ValidationOutcome:
    """Nested cross-validation: tune inside every outer training part, score its test part.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Unfitted, with the model spec's parameters (before tuning).
    tune_fold : callable
        Picklable ``tune_fold(pipeline, X, y, cv=..., sample_weight=...)`` returning an
        outcome with
        ``best_params`` and ``summary`` (the workflow passes
        :func:`orchestrator.tuning.tune` bound to the tuning spec, run on the
        driver of wherever the outer fold runs: its trials run one after another
        inside the fold's task, so the outer folds run concurrently).
    inner_folds, inner_seed : int
        The tuning spec's inner CV; the inner folds are of the same kind as the
        outer ones (grouped or time-ordered when the outer folds are).

    Returns
    -------
    ValidationOutcome
        ``cv_score`` is the mean outer score; ``details["nested"]`` lists each
        outer fold's chosen params, inner best score and outer score.
    """
    folds = make_folds(spec, kind, X, y, side)
    inner = {"kind": spec.split_kind, "folds": inner_folds, "seed": inner_seed,
             "groups": spec.groups, "order_by": spec.order_by, "gap": spec.gap,
             "max_train_size": spec.max_train_size}
    tasks = [(pipeline, train, test, scorer, keep_predictions, tune_fold, inner, kind)
             for train, test in folds]
    results, placement = _run_folds(_tune_and_score_fold, tasks, (X, y, side, sample_weight),
                                    spec, session)
    predictions = None
    if keep_predictions:
        predictions = _concatenate([r["predictions"] for r in results],
                                   f"outer-fold predictions of {len(folds)}-fold nested "
                                   "cross-validation")
    metrics = _fold_metrics([r["scores"] for r in results], scorer)
    nested = [{"fold": index, "best_params": r["best_params"], "inner_score": r["inner_score"],
               "outer_score": r["scores"].get(scorer.primary), "trials": r["trials"]}
              for index, r in enumerate(results)]
    return ValidationOutcome(strategy=spec.strategy, primary_metric=scorer.primary,
                             cv_score=metrics[scorer.primary]["mean"], metrics=metrics,
                             rows={"rows": len(y), "folds": len(folds)},
                             predictions=predictions,
                             details={"split": spec.settings(), **placement,
                                      "inner_folds": inner_folds, "nested": nested})


# ------------------------------------------------------------------ folds as tasks


def _fit_and_score_fold(shared, args) -> dict[str, Any]:
    """One fold: fit a clone on the training rows, score the test rows (runs anywhere)."""
    from sklearn.base import clone

    X, y, *weights = shared
    sample_weight = weights[0] if weights else None
    procedure, train, test, scorer, keep_predictions = args
    model = fit_weighted(clone(procedure), X.iloc[train], y.iloc[train],
                         rows_of(sample_weight, train))
    X_test, y_test = X.iloc[test], y.iloc[test]
    return {"scores": scorer(model, X_test, y_test,
                             sample_weight=rows_of(sample_weight, test)),
            "predictions": _predictions(model, X_test, y_test, "") if keep_predictions else None}


def _tune_and_score_fold(shared, args) -> dict[str, Any]:
    """One outer fold of nested CV: tune on its training part, refit, score its test part."""
    from sklearn.base import clone

    X, y, side, sample_weight = shared
    pipeline, train, test, scorer, keep_predictions, tune_fold, inner, kind = args
    X_train, y_train = X.iloc[train], y.iloc[train]
    w_train = rows_of(sample_weight, train)
    side_train = side.iloc[train] if side is not None else None
    cv = inner_splits(inner, kind, X_train, y_train, side_train)
    outcome = tune_fold(clone(pipeline), X_train, y_train, cv=cv, sample_weight=w_train)
    model = fit_weighted(clone(pipeline).set_params(**outcome.best_params), X_train, y_train,
                         w_train)
    X_test, y_test = X.iloc[test], y.iloc[test]
    return {"scores": scorer(model, X_test, y_test,
                             sample_weight=rows_of(sample_weight, test)),
            "best_params": outcome.summary.get("best_params"),
            "inner_score": outcome.summary.get("best_score"),
            "trials": outcome.summary.get("trials_run"),
            "predictions": _predictions(model, X_test, y_test, "") if keep_predictions else None}


def fold_placement(spec: ValidationSpec, n_tasks: int, *, unusable_reason: str | None,
                   slots: int | None) -> tuple[int, str]:
    """How many folds run at once on the cluster (0: on the driver), and why.

    Examples
    --------
    >>> fold_placement(ValidationSpec(), 5, unusable_reason=None, slots=2)
    (2, 'on the cluster: 2 folds at once (the session has 2 task slots)')
    >>> fold_placement(ValidationSpec(), 5, unusable_reason="no SparkSession", slots=None)
    (0, 'on the driver: no SparkSession')
    """
    if spec.on_driver:
        return 0, "on the driver: validation_params.on_driver is true"
    if spec.parallelism == 1:
        return 0, "on the driver: validation_params.parallelism is 1"
    if unusable_reason is not None:
        return 0, f"on the driver: {unusable_reason}"
    if spec.parallelism is not None:
        parallelism, why = spec.parallelism, "validation_params.parallelism"
    else:
        parallelism, why = slots or 1, f"the session has {slots or 1} task slots"
    parallelism = max(1, min(parallelism, n_tasks))
    return parallelism, f"on the cluster: {parallelism} folds at once ({why})"


def _run_folds(task_fn, tasks: list, shared, spec: ValidationSpec, session):
    from orchestrator.cluster.tasks import (cluster_unusable_reason, run_on_cluster,
                                            run_on_driver, task_slots)

    reason = cluster_unusable_reason(session)
    slots = task_slots(session) if reason is None else None
    parallelism, where = fold_placement(spec, len(tasks), unusable_reason=reason, slots=slots)
    logger.info("Validation: %d folds %s", len(tasks), where)
    started = time.perf_counter()
    if parallelism:
        results = run_on_cluster(session, task_fn, tasks, shared, parallelism,
                                 description="validation fold")
    else:
        results = run_on_driver(task_fn, tasks, shared)
    return results, {"ran": "cluster" if parallelism else "driver", "parallelism":
                     parallelism or 1, "placement": where,
                     "wall_time_s": round(time.perf_counter() - started, 3)}


def _fold_metrics(fold_scores: list[dict[str, float]], scorer: WorkflowScorer,
                  ) -> dict[str, dict[str, Any]]:
    metrics: dict[str, dict[str, Any]] = {}
    for name in scorer.metric_names():
        if not all(name in scores for scores in fold_scores):
            continue
        folds = [float(scores[name]) for scores in fold_scores]
        empty = np.all(np.isnan(folds))
        metrics[name] = {"mean": float("nan") if empty else float(np.nanmean(folds)),
                         "std": float("nan") if empty else float(np.nanstd(folds)),
                         "folds": folds}
    return metrics


# ------------------------------------------------------------------ splits


def make_folds(spec: ValidationSpec, kind: str, X: pd.DataFrame, y: pd.Series,
               side: pd.DataFrame | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) row positions of every fold the spec asks for.

    Raises
    ------
    DataError
        A groups/order_by column missing or with missing values, fewer groups
        than folds, a class smaller than the folds, or a gap too large for the data.
    """
    n_folds = spec.folds
    if spec.split_kind == "group_k_fold":
        groups = _side_column(side, spec.groups, "groups")
        return group_folds(groups, n_folds)
    if spec.split_kind == "time_series":
        order = _side_column(side, spec.order_by, "order_by")
        return time_series_folds(order, n_folds, gap=spec.gap,
                                 max_train_size=spec.max_train_size)
    splitter = make_cv_splitter(spec if spec.strategy == "cross_validation"
                                else ValidationSpec(cv_folds=n_folds, shuffle=spec.shuffle,
                                                    random_state=spec.random_state), kind, y)
    return [(np.asarray(train), np.asarray(test)) for train, test in splitter.split(X, y)]


def inner_splits(inner: dict[str, Any], kind: str, X: pd.DataFrame, y: pd.Series,
                 side: pd.DataFrame | None):
    """Tuning's inner folds of the same kind as the outer ones, or None for tuning's own
    (shuffled, stratified for classifiers) K-fold.

    ``inner`` holds ``kind``, ``folds``, ``groups``, ``order_by``, ``gap`` and ``max_train_size``.
    """
    if inner["kind"] == "group_k_fold":
        return group_folds(_side_column(side, inner["groups"], "groups"), inner["folds"],
                           where="tuning's inner folds")
    if inner["kind"] in ("time_series", "time_ordered_holdout"):
        return time_series_folds(_side_column(side, inner["order_by"], "order_by"),
                                 inner["folds"], gap=inner["gap"],
                                 max_train_size=inner.get("max_train_size"),
                                 where="tuning's inner folds")
    return None


def inner_split_settings(spec: ValidationSpec, tuning_folds: int, tuning_seed) -> dict[str, Any]:
    """What :func:`inner_splits` needs to build tuning's folds like the validation's."""
    return {"kind": spec.split_kind, "folds": tuning_folds, "seed": tuning_seed,
            "groups": spec.groups, "order_by": spec.order_by, "gap": spec.gap,
            "max_train_size": spec.max_train_size}


def _side_column(side: pd.DataFrame | None, column: str | None, key: str) -> pd.Series:
    if side is None or column not in side.columns:
        raise DataError(f"validation_params.{key}: column {column!r} was not loaded with the "
                        "data; it must be a column of the training data (X or the table).")
    values = side[column]
    missing = int(values.isna().sum())
    if missing:
        raise DataError(f"validation_params.{key}: column {column!r} has {missing} missing "
                        f"value(s) of {len(values)}; every row needs one to be "
                        f"{'grouped' if key == 'groups' else 'ordered'}.")
    return values


def group_folds(groups: pd.Series, n_folds: int, *, where: str = "validation",
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold folds: no value of ``groups`` on both sides of any fold.

    Examples
    --------
    >>> folds = group_folds(pd.Series(["a", "a", "b", "b", "c", "c"]), 3)
    >>> sorted(len(test) for _, test in folds)
    [2, 2, 2]
    """
    from sklearn.model_selection import GroupKFold

    n_groups = int(groups.nunique())
    if n_groups < n_folds:
        raise DataError(f"{where}: column {groups.name!r} has {n_groups} distinct group(s), "
                        f"fewer than the {n_folds} folds; lower the folds or group more finely.")
    positions = np.arange(len(groups))
    return [(np.asarray(train), np.asarray(test)) for train, test in
            GroupKFold(n_splits=n_folds).split(positions, groups=np.asarray(groups))]


def time_series_folds(order: pd.Series, n_folds: int, *, gap: int = 0,
                      max_train_size: int | None = None, where: str = "validation",
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """TimeSeriesSplit folds over the rows sorted by ``order`` (ties keep row order).

    Every test fold is later than its training rows, ``gap`` rows in between.

    Examples
    --------
    >>> folds = time_series_folds(pd.Series([5, 1, 4, 2, 3, 0]), 2)
    >>> [(train.tolist(), test.tolist()) for train, test in folds]
    [([5, 1], [3, 4]), ([5, 1, 3, 4], [2, 0])]
    """
    from sklearn.model_selection import TimeSeriesSplit

    n = len(order)
    test_size = n // (n_folds + 1)
    first_train = n - n_folds * test_size - gap
    if test_size < 1 or first_train < 1:
        raise DataError(f"{where}: {n} rows cannot make {n_folds} time-ordered folds with "
                        f"gap={gap}: each test fold would have {test_size} row(s) and the first "
                        f"training part {max(first_train, 0)}; lower the folds or the gap.")
    ranked = np.argsort(np.asarray(order), kind="stable")
    splitter = TimeSeriesSplit(n_splits=n_folds, gap=gap, max_train_size=max_train_size)
    return [(ranked[train], ranked[test]) for train, test in splitter.split(ranked)]


def ordered_holdout(order: pd.Series, test_size: float, gap: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training rows and of the latest ``test_size`` rows, ``gap`` between.

    Examples
    --------
    >>> train, test = ordered_holdout(pd.Series([3, 0, 2, 1, 4]), 0.4, 1)
    >>> train.tolist(), test.tolist()
    ([1, 3], [0, 4])
    """
    n = len(order)
    n_test = int(np.ceil(test_size * n))
    n_train = n - n_test - gap
    if n_train < 2 or n_test < 1:
        raise DataError(f"validation: test_size={test_size} and gap={gap} of {n} rows leave "
                        f"{max(n_train, 0)} training and {n_test} hold-out rows; lower the gap "
                        "or the test_size.")
    ranked = np.argsort(np.asarray(order), kind="stable")
    return ranked[:n_train], ranked[n - n_test:]


def score_holdout(model, X_test: pd.DataFrame, y_test: pd.Series, scorer: WorkflowScorer,
                  *, train_rows: int, keep_predictions: bool = False,
                  sample_weight: np.ndarray | None = None) -> ValidationOutcome:
    """Score the final model on the hold-out it never saw (weighted by the hold-out's
    ``sample_weight`` when given)."""
    scores = scorer(model, X_test, y_test, sample_weight=sample_weight)
    predictions = (_predictions(model, X_test, y_test, "predictions on the train_test hold-out")
                   if keep_predictions else None)
    metrics = {name: {"value": float(scores[name])} for name in scorer.metric_names()
               if name in scores}
    return ValidationOutcome(strategy="train_test", primary_metric=scorer.primary,
                             cv_score=float(scores[scorer.primary]), metrics=metrics,
                             rows={"train_rows": train_rows, "test_rows": len(y_test)},
                             predictions=predictions)
