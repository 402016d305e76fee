"""The calibration spec: how workflow step 5 calibrates predicted probabilities.

.. code-block:: yaml

    calibration:
      method: auto          # sigmoid | isotonic | temperature | auto
      cv: 5                 # folds of CalibratedClassifierCV, or "holdout"
      holdout_fraction: 0.2 # with cv: holdout, the share of rows the calibrator is fit on
      ensemble: auto        # true | false | auto (scikit-learn's meaning)
      keep_if_worse: false  # keep the calibrated model even when it scores worse
      diagnostic_fraction: 0.2  # share of rows held out to compare before and after

Pure data: nothing here imports scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import did_you_mean
from orchestrator.specs.problems import Problems

WHERE = "calibration_spec"
#: Calibration methods a user can name; "auto" is resolved by
#: :func:`orchestrator.steps.calibration.choose_method` once the data is known.
METHODS = ("auto", "sigmoid", "isotonic", "temperature")
ENSEMBLE_OPTIONS = ("auto", True, False)
HOLDOUT = "holdout"
_KEYS = ("method", "cv", "holdout_fraction", "ensemble", "keep_if_worse", "diagnostic_fraction")


@dataclass(frozen=True)
class CalibrationSpec:
    """A validated calibration spec.

    Attributes
    ----------
    method : {"auto", "sigmoid", "isotonic", "temperature"}
        The calibration map. ``auto`` picks temperature scaling for multiclass
        tasks, isotonic regression for binary tasks with at least about 1,000
        calibration rows per class, and sigmoid (Platt) scaling otherwise.
    cv : int or "holdout"
        An int ``k >= 2`` calibrates with ``CalibratedClassifierCV(cv=k)``
        (out-of-fold predictions); ``"holdout"`` fits the pipeline on
        ``1 - holdout_fraction`` of the rows, freezes it, and fits the
        calibrator on the remaining rows.
    holdout_fraction : float
        Share of rows the calibrator is fit on when ``cv == "holdout"``, in (0, 1).
        Ignored with ``cv: k`` (the issue's example YAML sets both).
    ensemble : bool or "auto"
        Passed to ``CalibratedClassifierCV``: with ``cv: k``, true keeps ``k``
        (model, calibrator) pairs and averages them, false refits one model on
        all rows. "auto" is scikit-learn's default (true for ``cv: k``,
        false for a frozen holdout model). True is invalid with ``cv: holdout``.
    keep_if_worse : bool
        Keep the calibrated model even when its held-out Brier score is worse
        than the uncalibrated model's.
    diagnostic_fraction : float
        Share of the training rows, stratified by class, held out from both
        the uncalibrated and the calibrated fit so that their Brier score, log
        loss and ECE are compared on the same unseen rows. In (0, 1).
    """

    method: str = "auto"
    cv: int | str = 5
    holdout_fraction: float = 0.2
    ensemble: bool | str = "auto"
    keep_if_worse: bool = False
    diagnostic_fraction: float = 0.2

    @property
    def uses_holdout(self) -> bool:
        return self.cv == HOLDOUT


def parse_calibration_spec(raw: object, problems: Problems, model_spec=None,
                           ) -> CalibrationSpec | None:
    """Parse ``calibration_spec``; record every problem in ``problems``.

    Parameters
    ----------
    raw : mapping or None
        The spec as written in YAML. None (or absent) means no calibration; an
        empty mapping means calibration with every default.
    problems : Problems
        Collector that receives one line per problem found.
    model_spec : ModelSpec or None
        The parsed model spec; calibration of a regression task is a problem.

    Returns
    -------
    CalibrationSpec or None
        None when ``raw`` is None or is not a mapping.

    Examples
    --------
    >>> problems = Problems()
    >>> spec = parse_calibration_spec({"method": "isotonic", "cv": 3}, problems)
    >>> spec.method, spec.cv, spec.keep_if_worse
    ('isotonic', 3, False)
    >>> bool(problems)
    False
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.expected(WHERE, "a mapping such as {method: auto, cv: 5}", raw)
        return None
    problems.unknown_keys(raw, _KEYS, WHERE)
    if model_spec is not None and getattr(model_spec, "task", None) == "regression":
        problems.add(WHERE, "probability calibration applies to classification only, but "
                     f"model_spec.task is 'regression' ({model_spec.estimator}); remove "
                     "calibration_spec or choose a classifier.")

    defaults = CalibrationSpec()
    method = problems.choice(raw, "method", METHODS, WHERE, default=defaults.method)
    cv = _parse_cv(raw, problems, defaults.cv)
    holdout_fraction = problems.number(raw, "holdout_fraction", WHERE,
                                       default=defaults.holdout_fraction, low=0, high=1,
                                       low_open=True, high_open=True)
    diagnostic_fraction = problems.number(raw, "diagnostic_fraction", WHERE,
                                          default=defaults.diagnostic_fraction, low=0, high=1,
                                          low_open=True, high_open=True)
    ensemble = _parse_ensemble(raw, problems, defaults.ensemble)
    keep_if_worse = problems.boolean(raw, "keep_if_worse", WHERE, defaults.keep_if_worse)

    if cv == HOLDOUT and ensemble is True:
        problems.add(f"{WHERE}.ensemble", "ensemble: true needs cv folds (it averages one "
                     "calibrated model per fold); with cv: holdout use ensemble: auto or false.")
    if (cv == HOLDOUT and holdout_fraction is not None and diagnostic_fraction is not None
            and (1 - diagnostic_fraction) * (1 - holdout_fraction) <= 0.1):
        problems.add(WHERE, f"holdout_fraction {holdout_fraction} and diagnostic_fraction "
                     f"{diagnostic_fraction} leave at most 10% of the rows to fit the model "
                     "on; lower one of them.")
    return CalibrationSpec(
        method=method if method is not None else defaults.method,
        cv=cv if cv is not None else defaults.cv,
        holdout_fraction=(holdout_fraction if holdout_fraction is not None
                          else defaults.holdout_fraction),
        ensemble=ensemble,
        keep_if_worse=keep_if_worse,
        diagnostic_fraction=(diagnostic_fraction if diagnostic_fraction is not None
                             else defaults.diagnostic_fraction),
    )


def _parse_cv(raw: Mapping, problems: Problems, default: int | str) -> int | str | None:
    value = raw.get("cv", default)
    if isinstance(value, str):
        if value == HOLDOUT:
            return value
        hint = did_you_mean(value, [HOLDOUT]).strip()
        if value.strip().isdigit():
            hint = f"write the number without quotes: cv: {value.strip()}"
        problems.expected(f"{WHERE}.cv", "an integer >= 2 (folds) or 'holdout'", value, hint)
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        problems.expected(f"{WHERE}.cv", "an integer >= 2 (folds) or 'holdout'", value)
        return None
    return value


def _parse_ensemble(raw: Mapping, problems: Problems, default: bool | str) -> bool | str:
    value = raw.get("ensemble", default)
    if value is True or value is False or value == "auto":
        return value
    problems.expected(f"{WHERE}.ensemble", "true, false or auto", value,
                      did_you_mean(value, ["auto"]).strip())
    return default
