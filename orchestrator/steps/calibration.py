"""Workflow step 5: probability calibration, with diagnostics you can check.

How it works
------------
:class:`CalibratedModel` is one scikit-learn estimator whose ``fit`` runs the
whole calibration procedure with :class:`~sklearn.calibration.CalibratedClassifierCV`:

* ``cv: k`` -- ``CalibratedClassifierCV(pipeline, cv=StratifiedKFold(k))``:
  calibrators are fit on out-of-fold predictions.
* ``cv: holdout`` -- scikit-learn 1.8 removed ``cv="prefit"``, so a clone of
  the pipeline is fit on ``1 - holdout_fraction`` of the rows, wrapped in
  :class:`~sklearn.frozen.FrozenEstimator`, and the calibrator is fit on the
  held-out rows only.

Because the procedure is one estimator, step 6's ``cross_validate`` refits the
calibration inside each training fold (:func:`make_calibrated_procedure`).

:func:`calibrate` decides whether the calibrated model is worth keeping. It
holds out a stratified *diagnostic split* (``diagnostic_fraction`` of the
training rows, 20% by default) that neither fit sees, fits the uncalibrated
pipeline and the calibrated procedure on the other rows, and compares Brier
score, log loss and expected calibration error on the diagnostic rows. When
calibration makes the Brier score worse, the uncalibrated pipeline is kept
(unless ``keep_if_worse``). The returned model is then refit on *all* training
rows, so no row is wasted on the model users get; the diagnostics estimate how
the procedure generalises.

Expected calibration error (ECE)
--------------------------------
One definition, :func:`expected_calibration_error`: the predicted probability
of the positive class (binary; the second of the sorted classes, scikit-learn's
convention) or of the top class (multiclass, "confidence") is put into
``n_bins = 10`` equal-width bins, bin ``b`` holding ``floor(p * n_bins) == b``
(``p = 1`` goes in the last bin). Then::

    ECE = sum over non-empty bins b of (n_b / n) * |observed_b - mean_p_b|

where ``observed_b`` is the share of rows in bin ``b`` whose label is the
positive class (binary) or whose top class is correct (multiclass).
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    MetaEstimatorMixin,
    clone,
    is_classifier,
)
from sklearn.utils.validation import check_is_fitted

from orchestrator.errors import (
    CalibrationError,
)
from orchestrator.specs.calibration import HOLDOUT, METHODS, CalibrationSpec

logger = logging.getLogger(__name__)

__all__ = [
    "CalibrationError",
    "CalibratedModel",
    "CalibrationOutcome",
    "ReliabilityCurve",
    "calibrate",
    "make_calibrated_procedure",
    "choose_method",
    "calibration_rows_per_class",
    "expected_calibration_error",
    "reliability_curve",
    "probability_metrics",
    "decide",
    "ISOTONIC_MIN_ROWS_PER_CLASS",
    "ECE_BINS",
]

#: ``method: auto`` picks isotonic regression for a binary task only when the
#: calibrator sees at least this many rows of each class; below it, isotonic
#: regression overfits (scikit-learn's user guide: "not recommended when the
#: number of calibration samples is << 1000") and sigmoid scaling is used.
ISOTONIC_MIN_ROWS_PER_CLASS = 1000
#: Number of equal-width probability bins of the ECE and the reliability diagram.
ECE_BINS = 10
PLOT_FILE_NAME = "calibration_reliability.png"

ECE_DEFINITION = (
    f"{ECE_BINS} equal-width bins on the predicted probability of the positive class "
    "(binary) or of the top class (multiclass); ECE = sum over bins of "
    "(rows in bin / rows) * |observed frequency - mean predicted probability|"
)


# ---------------------------------------------------------------- pure decision helpers


def calibration_rows_per_class(class_counts: Sequence[int], *, cv: int | str,
                               holdout_fraction: float = 0.2, ensemble: bool | str = "auto"
                               ) -> int:
    """Rows of the smallest class that one calibrator is fit on.

    Parameters
    ----------
    class_counts : sequence of int
        Rows per class of the data the procedure is fit on.
    cv : int or "holdout"
    holdout_fraction : float
        Used with ``cv="holdout"``.
    ensemble : bool or "auto"
        With ``cv=k``, true/auto fits one calibrator per fold on that fold's
        held-out rows (``count / k``); false fits one calibrator on all
        out-of-fold predictions (``count``).

    Returns
    -------
    int

    Examples
    --------
    >>> calibration_rows_per_class([3000, 5000], cv=5)
    600
    >>> calibration_rows_per_class([3000, 5000], cv="holdout", holdout_fraction=0.5)
    1500
    """
    smallest = min(class_counts)
    if cv == HOLDOUT:
        return int(smallest * holdout_fraction)
    if ensemble is False:
        return int(smallest)
    return int(smallest // int(cv))


def choose_method(requested: str, *, n_classes: int, calibration_rows_per_class: int,
                  ) -> tuple[str, str]:
    """Resolve ``method`` (``auto`` included) and say why.

    Parameters
    ----------
    requested : {"auto", "sigmoid", "isotonic", "temperature"}
    n_classes : int
        Number of classes of the task.
    calibration_rows_per_class : int
        Rows of the smallest class one calibrator is fit on
        (:func:`calibration_rows_per_class`).

    Returns
    -------
    method : str
        "sigmoid", "isotonic" or "temperature".
    reason : str
        One sentence for the calibration summary.

    Raises
    ------
    CalibrationError
        If ``requested`` is not a known method.

    Examples
    --------
    >>> choose_method("auto", n_classes=2, calibration_rows_per_class=400)[0]
    'sigmoid'
    >>> choose_method("auto", n_classes=2, calibration_rows_per_class=1500)[0]
    'isotonic'
    >>> choose_method("auto", n_classes=4, calibration_rows_per_class=50)[0]
    'temperature'
    """
    if requested not in METHODS:
        raise CalibrationError(f"unknown calibration method {requested!r}; expected one of "
                               f"{', '.join(METHODS)}.")
    rows = calibration_rows_per_class
    if requested != "auto":
        reason = f"method {requested!r} requested in calibration_spec"
        if requested == "isotonic" and rows < ISOTONIC_MIN_ROWS_PER_CLASS:
            reason += (f"; note: the calibrator sees only {rows} rows of the smallest class "
                       f"(isotonic regression tends to overfit below ~"
                       f"{ISOTONIC_MIN_ROWS_PER_CLASS})")
        return requested, reason
    if n_classes > 2:
        return "temperature", (
            f"auto: {n_classes} classes, so temperature scaling (one parameter shared by all "
            "classes; sigmoid and isotonic would calibrate each class one-vs-rest and "
            "renormalise)")
    if rows >= ISOTONIC_MIN_ROWS_PER_CLASS:
        return "isotonic", (
            f"auto: binary task and the calibrator sees {rows} rows of the smallest class "
            f"(>= {ISOTONIC_MIN_ROWS_PER_CLASS}), enough for isotonic regression, which "
            "can fix any monotone miscalibration")
    return "sigmoid", (
        f"auto: binary task and the calibrator sees only {rows} rows of the smallest class "
        f"(< {ISOTONIC_MIN_ROWS_PER_CLASS}), so sigmoid (Platt) scaling, which has two "
        "parameters and does not overfit small calibration sets like isotonic regression")


def decide(before_brier: float | None, after_brier: float, *, keep_if_worse: bool
           ) -> tuple[bool, str]:
    """Whether to keep the calibrated model, and why.

    Parameters
    ----------
    before_brier : float or None
        Held-out Brier score of the uncalibrated model; None when it has no
        ``predict_proba`` (e.g. LinearSVC), so calibration is what gives it
        probabilities.
    after_brier : float
        Held-out Brier score of the calibrated model.
    keep_if_worse : bool
        Keep the calibrated model even when its Brier score is worse.

    Returns
    -------
    keep_calibrated : bool
    reason : str

    Examples
    --------
    >>> decide(0.20, 0.15, keep_if_worse=False)[0]
    True
    >>> decide(0.15, 0.20, keep_if_worse=False)[0]
    False
    >>> decide(0.15, 0.20, keep_if_worse=True)[0]
    True
    """
    if before_brier is None:
        return True, ("the uncalibrated model has no predict_proba, so calibration is what "
                      "gives it probabilities; kept calibrated")
    change = f"held-out Brier score {before_brier:.4f} -> {after_brier:.4f}"
    if after_brier <= before_brier:
        return True, f"calibration improved (or matched) the {change}; kept calibrated"
    if keep_if_worse:
        return True, (f"calibration made the {change} worse, but keep_if_worse is true; "
                      "kept calibrated")
    return False, (f"calibration made the {change} worse; kept the uncalibrated model "
                   "(set keep_if_worse: true to keep the calibrated one)")


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin statistics of one model's probabilities on held-out rows.

    Attributes
    ----------
    bin_edges : ndarray, shape (n_bins + 1,)
    counts : ndarray of int, shape (n_bins,)
        Rows per bin.
    mean_predicted : ndarray, shape (n_bins,)
        Mean predicted probability per bin (NaN for empty bins).
    observed : ndarray, shape (n_bins,)
        Observed frequency per bin (NaN for empty bins).
    probabilities : ndarray
        The probabilities that were binned (for the histogram).
    """

    bin_edges: np.ndarray
    counts: np.ndarray
    mean_predicted: np.ndarray
    observed: np.ndarray
    probabilities: np.ndarray

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        filled = self.counts > 0
        gaps = np.abs(self.observed[filled] - self.mean_predicted[filled])
        return float(np.sum(self.counts[filled] / total * gaps))


def reliability_curve(probabilities: Any, outcomes: Any, *, n_bins: int = ECE_BINS
                      ) -> ReliabilityCurve:
    """Bin probabilities into ``n_bins`` equal-width bins (see the module docstring).

    Parameters
    ----------
    probabilities : array-like of float in [0, 1], shape (n,)
    outcomes : array-like of bool or {0, 1}, shape (n,)
        Whether the event the probability is about happened.
    n_bins : int

    Returns
    -------
    ReliabilityCurve
    """
    p = np.asarray(probabilities, dtype=float).ravel()
    o = np.asarray(outcomes, dtype=float).ravel()
    if p.shape != o.shape or p.size == 0:
        raise ValueError(f"need as many probabilities as outcomes (at least one), got "
                         f"{p.size} and {o.size}.")
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("probabilities must lie in [0, 1].")
    bins = np.minimum(np.floor(p * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bins, weights=p, minlength=n_bins) / counts
        observed = np.bincount(bins, weights=o, minlength=n_bins) / counts
    return ReliabilityCurve(bin_edges=np.linspace(0.0, 1.0, n_bins + 1), counts=counts,
                            mean_predicted=mean_predicted, observed=observed, probabilities=p)


def expected_calibration_error(probabilities: Any, outcomes: Any, *, n_bins: int = ECE_BINS
                               ) -> float:
    """Expected calibration error with ``n_bins`` fixed equal-width bins.

    ``ECE = sum_b (n_b / n) * |observed_b - mean_predicted_b|`` over non-empty
    bins, bin ``b`` holding the probabilities with ``floor(p * n_bins) == b``
    (``p = 1`` in the last bin).

    Parameters
    ----------
    probabilities : array-like, shape (n,)
        Predicted probability of the event (positive class, or top class).
    outcomes : array-like, shape (n,)
        1 when the event happened (the label is the positive class, or the
        top class was right), else 0.
    n_bins : int

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> expected_calibration_error([0.25, 0.25, 0.75, 0.75], [0, 1, 1, 1])
    0.25
    """
    return reliability_curve(probabilities, outcomes, n_bins=n_bins).ece


def calibration_target(proba: np.ndarray, y: Any, classes: Sequence[Any]
                       ) -> tuple[np.ndarray, np.ndarray, str]:
    """The probabilities the ECE and the diagram look at, their outcomes, and a label.

    Binary: probability of ``classes[1]`` and whether ``y == classes[1]``.
    Multiclass: top-class probability and whether the top class is ``y``.
    """
    proba = np.asarray(proba, dtype=float)
    y = np.asarray(y)
    classes = np.asarray(classes)
    if len(classes) == 2:
        positive = _json_scalar(classes[1])
        return proba[:, 1], (y == classes[1]), f"predicted probability of class {positive!r}"
    top = np.argmax(proba, axis=1)
    return proba.max(axis=1), (classes[top] == y), "predicted probability of the top class"


def probability_metrics(y: Any, proba: np.ndarray, classes: Sequence[Any],
                        sample_weight: Any = None) -> dict[str, float]:
    """Brier score, log loss and ECE of ``proba`` (columns in ``classes`` order).

    The Brier score is scikit-learn's ``brier_score_loss`` (binary: mean squared
    error of the positive-class probability, in [0, 1]; multiclass: summed over
    classes, in [0, 2]). With ``sample_weight`` the Brier score and the log loss
    weight each row; the ECE counts rows (its bins are the reliability diagram's).
    """
    from sklearn.metrics import brier_score_loss, log_loss

    labels = list(classes)
    confidence, outcome, _ = calibration_target(proba, y, classes)
    return {
        "brier": float(brier_score_loss(y, proba, labels=labels, sample_weight=sample_weight)),
        "log_loss": float(log_loss(y, proba, labels=labels, sample_weight=sample_weight)),
        "ece": expected_calibration_error(confidence, outcome),
    }


# ---------------------------------------------------------------- the calibrated procedure


def _class_counts(y: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(np.asarray(y), return_counts=True)


def _check_response(estimator: Any) -> None:
    if not is_classifier(estimator):
        raise CalibrationError(
            f"calibration needs a classifier, got {type(_final_step(estimator)).__name__}; "
            "remove calibration_spec for regression models.")
    final = _final_step(estimator)
    if not (hasattr(final, "predict_proba") or hasattr(final, "decision_function")):
        raise CalibrationError(f"{type(final).__name__} has neither predict_proba nor "
                               "decision_function, so it cannot be calibrated.")


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _ndim(X: Any) -> int | None:
    """Dimensions of ``X`` (frames and sparse matrices have ``ndim``); None if it has no shape."""
    ndim = getattr(X, "ndim", None)
    if ndim is not None:
        return int(ndim)
    try:
        return np.asarray(X).ndim
    except (ValueError, TypeError):  # ragged nested lists: the estimator decides
        return None


def _is_fold_count(cv) -> bool:
    return isinstance(cv, numbers.Integral) and not isinstance(cv, bool)


class CalibratedModel(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A classifier pipeline plus its probability calibration, as one estimator.

    ``fit`` runs the calibration procedure of the calibration spec, so cloning
    and refitting it (as ``cross_validate`` does) recalibrates inside each fold.

    Parameters
    ----------
    estimator : classifier
        The unfitted pipeline (or any classifier); it is cloned, never mutated.
    method : {"auto", "sigmoid", "isotonic", "temperature"}
        ``auto`` is resolved at fit time by :func:`choose_method`.
    cv : int, "holdout", CV splitter or iterable of (train, test) splits
        A count gives shuffled stratified folds (the calibration spec's ``cv``);
        a splitter or explicit splits are used as they are, as in scikit-learn.
    holdout_fraction : float
    ensemble : bool or "auto"
    random_state : int or None
        Seeds the holdout split and the shuffled stratified folds.

    Attributes
    ----------
    calibrator_ : CalibratedClassifierCV
        The fitted scikit-learn calibrator.
    classes_ : ndarray
    method_ : str
        The method used (``auto`` resolved).
    method_reason_ : str
    ensemble_ : bool
        Whether ``calibrator_`` averages one (model, calibrator) pair per fold.
    n_fit_rows_ : int
        Rows the classifier(s) were fit on (with ``cv: k``, every row, fold by fold).
    n_calibration_rows_ : int
        Rows the calibrator(s) were fit on (with ``cv: k``, every row once,
        out of fold, spread over the ``k`` calibrators when ``ensemble_``).
    calibration_rows_per_class_ : int
        Rows of the smallest class one calibrator saw.

    Notes
    -----
    ``fit(X, y, sample_weight=w)`` weights the calibrators' fit and passes the weights
    on to the estimator's fit: with scikit-learn's metadata routing on, to whatever
    inside it requested them (the workflow's pipeline requests them for its model
    step); with routing off, as ``CalibratedClassifierCV`` does, only when the
    estimator's own ``fit`` takes ``sample_weight``. This estimator requests
    ``sample_weight`` by default, so a meta-estimator around it (the decision
    threshold) routes the weights to it.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.naive_bayes import GaussianNB
    >>> X, y = make_classification(n_samples=300, random_state=0)
    >>> model = CalibratedModel(GaussianNB(), cv=3, random_state=0).fit(X, y)
    >>> model.method_
    'sigmoid'
    """

    # Routed to fit by default when metadata routing is on (a class default, so no
    # request state is stored on instances: skops cannot serialise it).
    __metadata_request__fit = {"sample_weight": True}

    def __init__(self, estimator, *, method: str = "auto", cv: int | str = 5,
                 holdout_fraction: float = 0.2, ensemble: bool | str = "auto",
                 random_state: int | None = None):
        self.estimator = estimator
        self.method = method
        self.cv = cv
        self.holdout_fraction = holdout_fraction
        self.ensemble = ensemble
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        """Fit the classifier and its calibrator(s) on ``X, y``, weighting rows by
        ``sample_weight`` when given (see the class notes).

        Raises
        ------
        CalibrationError
            A ``ValueError``: when ``y`` is not one class label per row of
            ``X`` (2-D, continuous, NaN or infinite, another length), has one
            class only, a class has too few rows for the folds or the holdout
            split, or the estimator cannot be calibrated. scikit-learn errors
            raised while fitting propagate unchanged.
        """
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.utils.validation import _check_sample_weight

        y = self._check_labels(X, y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        _check_response(self.estimator)
        classes, counts = _class_counts(y)
        if len(classes) < 2:
            raise CalibrationError(f"calibration needs at least two classes, got only one "
                                   f"class: {classes.tolist()!r}.")
        holdout = isinstance(self.cv, str) and self.cv == HOLDOUT
        folds, n_folds = (None, None) if holdout else self._folds(X, y)
        if holdout and self.ensemble is True:
            raise CalibrationError("ensemble=True needs cv folds; use ensemble='auto' or False "
                                   "with cv='holdout'.")
        self.ensemble_ = False if holdout else self.ensemble is not False
        self.calibration_rows_per_class_ = calibration_rows_per_class(
            counts, cv=HOLDOUT if holdout else n_folds, holdout_fraction=self.holdout_fraction,
            ensemble=self.ensemble_)
        self.method_, self.method_reason_ = choose_method(
            self.method, n_classes=len(classes),
            calibration_rows_per_class=self.calibration_rows_per_class_)

        if holdout:
            self.calibrator_ = self._fit_holdout(X, y, classes, CalibratedClassifierCV,
                                                 sample_weight)
        else:
            small = {c: int(n) for c, n in zip(classes.tolist(), counts) if n < n_folds}
            if small and _is_fold_count(self.cv):
                raise CalibrationError(
                    f"cv={self.cv} calibration needs at least {self.cv} rows of every class, "
                    f"but of the {len(np.asarray(y))} rows being calibrated these classes have "
                    f"fewer: {small}. Lower calibration_spec.cv or use cv: holdout.")
            weighted = {} if sample_weight is None else {"sample_weight": sample_weight}
            self.calibrator_ = CalibratedClassifierCV(
                clone(self.estimator), method=self.method_, cv=folds,
                ensemble=self.ensemble_).fit(X, y, **weighted)
            self.n_fit_rows_ = self.n_calibration_rows_ = len(np.asarray(y))
        self.classes_ = self.calibrator_.classes_
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.calibrator_, name):
                setattr(self, name, getattr(self.calibrator_, name))
        return self

    def _folds(self, X, y):
        """The folds and their number: shuffled stratified folds for a count, else ``cv``
        itself (a CV splitter or an iterable of (train, test) splits, as scikit-learn takes)."""
        from sklearn.model_selection import StratifiedKFold, check_cv

        if _is_fold_count(self.cv):
            if self.cv < 2:
                raise CalibrationError(f"cv must be an integer >= 2, 'holdout', a CV splitter or "
                                       f"(train, test) splits, got {self.cv!r}.")
            return StratifiedKFold(n_splits=self.cv, shuffle=True,
                                   random_state=self.random_state), int(self.cv)
        try:
            folds = check_cv(self.cv, y, classifier=True)
            return folds, int(folds.get_n_splits(X, y))
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"cv must be an integer >= 2, 'holdout', a CV splitter or "
                                   f"(train, test) splits, got {self.cv!r}: {exc}") from exc

    def _check_labels(self, X, y) -> np.ndarray:
        """``y`` as one class label per row of ``X``, or a CalibrationError saying why not.

        Done first, as scikit-learn's classifiers do, so that a 2-D, continuous
        or non-finite ``y`` is refused with scikit-learn's message instead of
        failing somewhere inside the split or the folds. A column vector
        ``(n, 1)`` is raveled with scikit-learn's DataConversionWarning.
        """
        from sklearn.utils import check_consistent_length, column_or_1d, get_tags
        from sklearn.utils.multiclass import check_classification_targets

        if y is None:
            raise CalibrationError(f"{type(self).__name__} requires y to be passed, but the "
                                   "target y is None.")
        try:
            labels = column_or_1d(y, warn=True)
            check_classification_targets(labels)
            check_consistent_length(X, labels)
        except ValueError as exc:
            raise CalibrationError(f"calibration needs one class label per row of X: {exc}"
                                   ) from exc
        if labels.shape[0] == 0:
            raise CalibrationError("calibration needs at least one row of each of two classes, "
                                   "got 0 samples.")
        ndim = _ndim(X)
        if not get_tags(self.estimator).input_tags.one_d_array and ndim not in (None, 2):
            raise CalibrationError(
                f"Expected 2D array, got {ndim}D array instead: X must be a table, one row "
                "per sample (reshape a single feature with X.reshape(-1, 1)).")
        return labels

    def __sklearn_tags__(self):
        from dataclasses import replace

        from sklearn.utils import get_tags

        tags = super().__sklearn_tags__()
        # X goes to the wrapped estimator unchanged (the calibrator only sees its
        # predictions), so it accepts exactly the input the estimator accepts:
        # sparse matrices, missing values, strings... (CalibratedClassifierCV
        # passes on the sparse tag the same way).
        tags.input_tags = replace(get_tags(self.estimator).input_tags)
        return tags

    def _fit_holdout(self, X, y, classes, calibrated_cv_class, sample_weight=None):
        from sklearn.frozen import FrozenEstimator
        from sklearn.model_selection import train_test_split

        fraction = self.holdout_fraction
        if not 0 < fraction < 1:
            raise CalibrationError(f"holdout_fraction must lie in (0, 1), got {fraction!r}.")
        try:
            fit_rows, cal_rows = train_test_split(
                np.arange(len(y)), test_size=fraction, stratify=y,
                random_state=self.random_state)
        except ValueError as exc:
            raise CalibrationError(f"cannot split off a stratified holdout of {fraction:.0%} "
                                   f"for calibration: {exc}") from exc
        X_fit, X_cal = _safe_rows(X, fit_rows), _safe_rows(X, cal_rows)
        y_fit, y_cal = y[fit_rows], y[cal_rows]
        w_fit, w_cal = ((None, None) if sample_weight is None
                        else (sample_weight[fit_rows], sample_weight[cal_rows]))
        for part, name in ((y_fit, "model-fitting rows"), (y_cal, "calibration holdout")):
            missing = sorted(set(classes.tolist()) - set(np.unique(np.asarray(part)).tolist()))
            if missing:
                raise CalibrationError(
                    f"the {name} ({len(np.asarray(part))} rows) contain no row of class(es) "
                    f"{missing}; a class is too small for holdout_fraction={fraction}. Use more "
                    "data, another holdout_fraction, or cv folds.")
        fitted = _fit_estimator(clone(self.estimator), X_fit, y_fit, w_fit)
        n_cal = len(np.asarray(y_cal))
        # A frozen model's predictions do not depend on the folds, so one split
        # whose test part is every calibration row replaces the default 5-fold
        # StratifiedKFold (which would demand 5 rows of each class for nothing).
        single_split = [(np.arange(n_cal), np.arange(n_cal))]
        calibrator = calibrated_cv_class(FrozenEstimator(fitted), method=self.method_,
                                         cv=single_split, ensemble=False)
        with warnings.catch_warnings():
            # "Since FrozenEstimator does not appear to accept sample_weight, sample weights
            # will only be used for the calibration itself": exactly what is meant here.
            warnings.filterwarnings("ignore", message="Since FrozenEstimator",
                                    category=UserWarning)
            calibrator.fit(X_cal, y_cal,
                           **({} if w_cal is None else {"sample_weight": w_cal}))
        self.n_fit_rows_ = len(np.asarray(y_fit))
        self.n_calibration_rows_ = n_cal
        return calibrator

    def predict_proba(self, X):
        """Calibrated class probabilities, columns in ``classes_`` order."""
        check_is_fitted(self, "calibrator_")
        return self.calibrator_.predict_proba(X)

    def predict(self, X):
        """The class with the highest calibrated probability."""
        check_is_fitted(self, "calibrator_")
        return self.calibrator_.predict(X)


def _safe_rows(X, positions):
    from sklearn.utils import _safe_indexing

    return _safe_indexing(X, positions)


def _fit_estimator(estimator, X, y, sample_weight):
    """Fit with ``sample_weight`` as :class:`CalibratedClassifierCV` passes it on: routed
    when metadata routing is on, else only to an estimator whose fit takes it."""
    import sklearn
    from sklearn.utils.validation import has_fit_parameter

    if sample_weight is None:
        return estimator.fit(X, y)
    if sklearn.get_config()["enable_metadata_routing"] or has_fit_parameter(
            estimator, "sample_weight"):
        return estimator.fit(X, y, sample_weight=sample_weight)
    warnings.warn(f"Since {type(estimator).__name__} does not appear to accept sample_weight, "
                  "sample weights will only be used for the calibration itself.", UserWarning,
                  stacklevel=3)
    return estimator.fit(X, y)


def make_calibrated_procedure(pipeline, spec: CalibrationSpec, *, random_state: int | None = None
                              ) -> CalibratedModel:
    """An unfitted estimator whose ``fit`` runs the calibration of ``spec``.

    Use it where the workflow would otherwise cross-validate the bare pipeline,
    so that calibration is refit inside each training fold.

    Parameters
    ----------
    pipeline : classifier
        The unfitted pipeline template (tuned parameters set).
    spec : CalibrationSpec
    random_state : int or None

    Returns
    -------
    CalibratedModel
        Clonable; exposes ``fit``, ``predict``, ``predict_proba`` and, once fit, ``classes_``.

    Examples
    --------
    >>> from sklearn.naive_bayes import GaussianNB
    >>> make_calibrated_procedure(GaussianNB(), CalibrationSpec(cv=3), random_state=0)
    CalibratedModel(cv=3, estimator=GaussianNB(), random_state=0)
    """
    return CalibratedModel(pipeline, method=spec.method, cv=spec.cv,
                           holdout_fraction=spec.holdout_fraction, ensemble=spec.ensemble,
                           random_state=random_state)


# ---------------------------------------------------------------- step 5


@dataclass(frozen=True)
class CalibrationOutcome:
    """What step 5 decided.

    Attributes
    ----------
    model : estimator
        Fitted on all training rows: the :class:`CalibratedModel` when
        ``calibrated``, else the uncalibrated pipeline.
    calibrated : bool
    summary : dict
        JSON-serialisable: method and why, cv/holdout, rows used, metrics
        before and after on the diagnostic rows, decision and reason, plot path.
    procedure : estimator
        Unfitted clone matching ``model`` (the calibrated procedure with the
        resolved method, or the bare pipeline), for step 6's cross-validation.
    """

    model: Any
    calibrated: bool
    summary: Mapping[str, Any]
    procedure: Any


def fold_placement(spec: CalibrationSpec, ensemble: bool, session) -> tuple[int, str]:
    """How many of calibration's own folds run at once as Spark tasks (0: on the driver), and why.

    Examples
    --------
    >>> fold_placement(CalibrationSpec(cv="holdout"), False, None)
    (0, 'on the driver: cv is holdout (one fit, no folds)')
    >>> fold_placement(CalibrationSpec(cv=5), True, None)
    (0, 'on the driver: no SparkSession')
    """
    if spec.uses_holdout:
        return 0, "on the driver: cv is holdout (one fit, no folds)"
    if not ensemble:
        return 0, "on the driver: ensemble is false (one cross_val_predict, then one fit)"
    from orchestrator.cluster.tasks import cluster_unusable_reason, task_slots

    reason = cluster_unusable_reason(session)
    if reason is not None:
        return 0, f"on the driver: {reason}"
    parallelism = min(task_slots(session) or 1, int(spec.cv))
    if parallelism < 2:
        return 0, "on the driver: the session has one task slot"
    return parallelism, f"on the cluster: {parallelism} of the {spec.cv} folds at once"


def _folds_on_cluster(session, parallelism: int):
    """Route CalibratedClassifierCV's fold ``Parallel`` to Spark tasks, or do nothing.

    Only around a CalibratedModel fit with folds: its one ``Parallel`` call is over the
    folds (an estimator's own ``n_jobs`` parallelism elsewhere would become tasks too).
    """
    import contextlib

    if not parallelism:
        return contextlib.nullcontext()
    from orchestrator.cluster.joblib_backend import cluster_parallel

    return cluster_parallel(session, parallelism, description="calibration fold")


def calibrate(pipeline, X, y, spec: CalibrationSpec, *, output_dir: str | Path,
              random_state: int | None = 42, sample_weight: Any = None,
              session=None) -> CalibrationOutcome:
    """Calibrate ``pipeline`` on the training rows, check it helped, and report.

    Parameters
    ----------
    pipeline : classifier
        The UNFITTED pipeline template (tuned parameters already set).
    X : pandas.DataFrame
        Training rows only.
    y : pandas.Series or array-like
        Training labels.
    spec : CalibrationSpec
    output_dir : str or Path
        Where the reliability diagram ``calibration_reliability.png`` is written
        (created if missing).
    random_state : int or None
        Seeds the diagnostic split, the holdout split and the folds.
    sample_weight : array-like, optional
        One weight per row: every fit is weighted (the pipeline's model step must
        request them, :func:`orchestrator.steps.weights.request_sample_weight`) and the
        diagnostic Brier score and log loss weight the diagnostic rows.
    session : SparkSession, optional
        With ``cv: k`` and an ensemble, the calibrated fits' ``k`` folds run as
        Spark tasks on its executors (:func:`fold_placement` says when), the
        rows sent once per fit; without it they run on the driver. Same models.

    Returns
    -------
    CalibrationOutcome

    Raises
    ------
    CalibrationError
        When calibration cannot run: not a classifier, a class too small for
        the diagnostic split, the folds or the holdout. scikit-learn errors
        from fitting propagate. The workflow catches both, keeps the
        uncalibrated model and records a warning.

    Examples
    --------
    >>> outcome = calibrate(pipeline, X_train, y_train, CalibrationSpec(),
    ...                     output_dir="artifacts")  # doctest: +SKIP
    >>> outcome.summary["decision"]  # doctest: +SKIP
    'calibrated'
    """
    from sklearn.model_selection import train_test_split

    from orchestrator.plots import plot_reliability_diagram
    from orchestrator.steps.weights import fit_weighted, rows_of

    _check_response(pipeline)
    classes, counts = _class_counts(y)
    n_rows = int(counts.sum())
    if len(classes) < 2:
        raise CalibrationError(f"calibration needs at least two classes, got only "
                               f"{classes.tolist()!r}.")
    tiny = {c: int(n) for c, n in zip(classes.tolist(), counts) if n < 2}
    if tiny:
        raise CalibrationError(f"classes with a single row cannot be calibrated or held out "
                               f"for diagnostics: {tiny}.")

    # Resolve the method once, on all rows, so the diagnostics test the very
    # procedure whose refit on all rows is returned.
    ensemble = False if spec.uses_holdout else spec.ensemble is not False
    rows_per_class = calibration_rows_per_class(counts, cv=spec.cv,
                                                holdout_fraction=spec.holdout_fraction,
                                                ensemble=ensemble)
    method, method_reason = choose_method(spec.method, n_classes=len(classes),
                                          calibration_rows_per_class=rows_per_class)
    procedure = make_calibrated_procedure(pipeline, spec, random_state=random_state
                                          ).set_params(method=method)

    try:
        rest, diag = train_test_split(np.arange(n_rows), test_size=spec.diagnostic_fraction,
                                      stratify=y, random_state=random_state)
    except ValueError as exc:
        raise CalibrationError(f"cannot hold out a stratified {spec.diagnostic_fraction:.0%} "
                               f"diagnostic split of {n_rows} rows: {exc}") from exc
    X_rest, X_diag = _safe_rows(X, rest), _safe_rows(X, diag)
    y_rest, y_diag = _safe_rows(y, rest), _safe_rows(y, diag)
    w_rest, w_diag = rows_of(sample_weight, rest), rows_of(sample_weight, diag)
    logger.info("calibration: %s (%s); diagnostics on %d held-out rows of %d", method,
                method_reason, len(np.asarray(y_diag)), n_rows)

    uncalibrated = fit_weighted(clone(pipeline), X_rest, y_rest, w_rest)
    before = None
    before_curve = None
    if hasattr(uncalibrated, "predict_proba"):
        proba_before = uncalibrated.predict_proba(X_diag)
        before = probability_metrics(y_diag, proba_before, uncalibrated.classes_, w_diag)
        before_curve = reliability_curve(*calibration_target(proba_before, y_diag,
                                                             uncalibrated.classes_)[:2])
    folds_at_once, placement = fold_placement(spec, ensemble, session)
    logger.info("calibration: folds %s", placement)
    with _folds_on_cluster(session, folds_at_once):
        diagnostic_model = fit_weighted(clone(procedure), X_rest, y_rest, w_rest)
    proba_after = diagnostic_model.predict_proba(X_diag)
    after = probability_metrics(y_diag, proba_after, diagnostic_model.classes_, w_diag)
    confidence, outcome, axis_label = calibration_target(proba_after, y_diag,
                                                         diagnostic_model.classes_)
    after_curve = reliability_curve(confidence, outcome)

    keep, reason = decide(None if before is None else before["brier"], after["brier"],
                          keep_if_worse=spec.keep_if_worse)
    logger.info("calibration decision: %s", reason)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = plot_reliability_diagram(
        before_curve, after_curve, output_dir / PLOT_FILE_NAME,
        title=(f"Reliability on {len(np.asarray(y_diag))} held-out rows: "
               f"{method} calibration, cv={spec.cv}"),
        x_label=axis_label,
        before_label=_curve_label("uncalibrated", before),
        after_label=_curve_label(f"calibrated ({method})", after),
    )

    if keep:
        with _folds_on_cluster(session, folds_at_once):
            model = fit_weighted(clone(procedure), X, y, sample_weight)
        final_procedure = clone(procedure)
        final_rows = {"fit": int(model.n_fit_rows_), "calibration": int(model.n_calibration_rows_)}
    else:
        model = fit_weighted(clone(pipeline), X, y, sample_weight)
        final_procedure = clone(pipeline)
        final_rows = {"fit": n_rows, "calibration": 0}

    summary = {
        "method_requested": spec.method,
        "method": method,
        "method_reason": method_reason,
        "cv": spec.cv,
        "holdout_fraction": spec.holdout_fraction if spec.uses_holdout else None,
        "ensemble": ensemble,
        "folds_placement": placement,
        "calibration_rows_per_class": rows_per_class,
        "classes": [_json_scalar(c) for c in classes.tolist()],
        "rows": {
            "training": n_rows,
            "diagnostic": int(len(np.asarray(y_diag))),
            "diagnostic_fit": int(len(np.asarray(y_rest))),
            "final_model": final_rows,
        },
        "diagnostics": (f"stratified {spec.diagnostic_fraction:.0%} of the training rows, held "
                        "out from both the uncalibrated and the calibrated fit; the returned "
                        "model is refit on all training rows"),
        "metrics_before": before,
        "metrics_after": after,
        "ece_definition": ECE_DEFINITION,
        "keep_if_worse": spec.keep_if_worse,
        "decision": "calibrated" if keep else "uncalibrated",
        "reason": reason,
        "plot_path": str(plot_path),
    }
    return CalibrationOutcome(model=model, calibrated=keep, summary=summary,
                              procedure=final_procedure)


def _curve_label(name: str, metrics: Mapping[str, float] | None) -> str:
    if metrics is None:
        return name
    return f"{name}: Brier {metrics['brier']:.3f}, ECE {metrics['ece']:.3f}"


def _json_scalar(value: Any) -> Any:
    """numpy scalars -> Python scalars, so the summary serialises to JSON."""
    item = getattr(value, "item", None)
    result = item() if callable(item) else value
    return result if not (isinstance(result, float) and math.isnan(result)) else None
