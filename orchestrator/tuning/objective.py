"""One trial: the objective that scores a parameter set, and the records and stopping rules around it."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.cluster.worker import STATUS_FAIL, STATUS_OK
from orchestrator.errors import TuningError
from orchestrator.specs.tuning import TuningSpec

logger = logging.getLogger(__name__)


STOP_MAX_EVALS = "max_evals reached"


STOP_EARLY = "early stopping"


STOP_TIMEOUT = "timeout"


@dataclass(frozen=True)
class TuningProgress:
    """One progress report, made each time trials complete."""

    completed: int
    ok: int
    failed: int
    max_evals: int
    best_score: float | None
    elapsed_s: float
    metric: str


class TrialObjective:
    """Score one parameter set: inner cross-validation of the whole pipeline.

    Picklable, and light to ship: with ``broadcast`` set, the training rows
    travel once per tuning run as a Spark broadcast and each trial's closure
    carries only the unfitted pipeline, the scorer and the splitter.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Unfitted; cloned for every trial.
    scoring : str or callable
        A scikit-learn scorer (higher is better).
    cv : int or splitter
    data : tuple (X, y) or (X, y, sample_weight), optional
        The rows (and their weights), for backends that run on the driver.
    broadcast : pyspark.Broadcast, optional
        A broadcast of the same tuple, for the Spark backend.

    Returns (when called)
    ---------------------
    dict
        A hyperopt result: ``status``, ``loss`` (minus the mean score), ``score``,
        ``score_std``, ``params``, ``duration_s`` (scoring time, data access
        excluded) or ``error`` for a failed trial.
    """

    def __init__(self, pipeline, *, scoring, cv, data: tuple | None = None, broadcast=None):
        if (data is None) == (broadcast is None):
            raise TuningError("TrialObjective needs exactly one of data or broadcast")
        self.pipeline = pipeline
        self.scoring = scoring
        self.cv = cv
        self.data = data
        self.broadcast = broadcast

    def __call__(self, params: dict) -> dict:
        from sklearn.base import clone
        from sklearn.model_selection import cross_val_score

        X, y, *weights = self.data if self.data is not None else self.broadcast.value
        started = time.perf_counter()
        try:
            model = clone(self.pipeline).set_params(**params)
            if weights and weights[0] is not None:
                scores = _weighted_cv_scores(model, X, y, weights[0], self.scoring, self.cv)
            else:
                scores = cross_val_score(model, X, y, scoring=self.scoring, cv=self.cv,
                                         n_jobs=1, error_score="raise")
            score = float(sum(scores) / len(scores))
            if not math.isfinite(score):
                raise ValueError(f"the cross-validated score is {score}")
        except Exception as exc:  # a failing trial is a result, not a crash of the search
            return {"status": STATUS_FAIL, "error": f"{type(exc).__name__}: {exc}",
                    "params": params, "duration_s": time.perf_counter() - started}
        spread = float((sum((s - score) ** 2 for s in scores) / len(scores)) ** 0.5)
        return {"status": STATUS_OK, "loss": -score, "score": score, "score_std": spread,
                "params": params, "duration_s": time.perf_counter() - started}


def training_rows(X, y, sample_weight=None) -> tuple:
    """What trials read: ``(X, y)``, or ``(X, y, sample_weight)`` with weights."""
    return (X, y) if sample_weight is None else (X, y, sample_weight)


def _weighted_cv_scores(model, X, y, sample_weight, scoring, cv) -> list[float]:
    """Each fold fits with its training rows' weights and scores with its test rows'.

    scikit-learn's ``cross_val_score(..., params={"sample_weight": w})`` under metadata
    routing computes the same, but it would hand the weights to a plain callable scorer
    only through a request the callable cannot carry.
    """
    import numpy as np
    import sklearn
    from sklearn.base import clone, is_classifier
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import check_cv

    scorer = check_scoring(model, scoring=scoring)
    splits = cv if isinstance(cv, list) else list(
        check_cv(cv, y, classifier=is_classifier(model)).split(X, y))
    weights = np.asarray(sample_weight, dtype=float)
    scores = []
    for train, test in splits:
        fitted = clone(model)
        # As orchestrator.steps.weights.fit_weighted (a layer tuning does not import): the
        # pipeline's model step requested the weights; routing is on in this thread only.
        with sklearn.config_context(enable_metadata_routing=True):
            fitted.fit(X.iloc[train], y.iloc[train], sample_weight=weights[train])
        scores.append(float(scorer(fitted, X.iloc[test], y.iloc[test],
                                   sample_weight=weights[test])))
    return scores


def trials_without_improvement(scores: Sequence[float | None]) -> int:
    """How many completed trials came after the best one (scores in completion order).

    ``None`` marks a failed trial. With no successful trial, every completed trial counts.

    Examples
    --------
    >>> trials_without_improvement([0.5, 0.7, None, 0.6, 0.65])
    3
    """
    best_index, best = -1, None
    for index, score in enumerate(scores):
        if score is not None and (best is None or score > best):
            best_index, best = index, score
    return len(scores) - best_index - 1


class TrialMonitor:
    """Reports progress and decides early stopping each time trials complete."""

    def __init__(self, *, rounds: int | None, max_evals: int, metric: str,
                 progress: Callable[[TuningProgress], None] | None, started: float):
        self.rounds = rounds
        self.max_evals = max_evals
        self.metric = metric
        self.progress = progress
        self.started = started
        self.seen = 0
        self.stopped_early = False

    def update(self, completed: Sequence[tuple[str, float | None]]) -> bool:
        """``completed``: (status, score) of every completed trial, in completion order."""
        if len(completed) <= self.seen:
            return self.stopped_early
        self.seen = len(completed)
        scores = [score if status == STATUS_OK else None for status, score in completed]
        ok_scores = [s for s in scores if s is not None]
        report = TuningProgress(
            completed=len(completed), ok=len(ok_scores), failed=len(completed) - len(ok_scores),
            max_evals=self.max_evals, best_score=max(ok_scores) if ok_scores else None,
            elapsed_s=time.perf_counter() - self.started, metric=self.metric)
        logger.info("Tuning: %d/%d trials done (%d failed), best %s %s, %.1f s elapsed",
                    report.completed, report.max_evals, report.failed, report.metric,
                    "n/a" if report.best_score is None else f"{report.best_score:.4f}",
                    report.elapsed_s)
        if self.progress is not None:
            self.progress(report)
        if self.rounds is not None and trials_without_improvement(scores) >= self.rounds:
            if not self.stopped_early:
                logger.info("Tuning: %d completed trials without improvement; stopping early",
                            self.rounds)
            self.stopped_early = True
        return self.stopped_early


def make_cv(spec: TuningSpec, model_spec):
    from sklearn.model_selection import KFold, StratifiedKFold

    task = getattr(model_spec, "task", "classification")
    splitter = StratifiedKFold if task == "classification" else KFold
    return splitter(n_splits=spec.cv_folds, shuffle=True, random_state=spec.seed)


def spark_slots(session) -> int | None:
    """Task slots of the session: defaultParallelism, or the conf under Spark Connect."""
    try:
        return int(session.sparkContext.defaultParallelism)
    except (NotImplementedError, AttributeError, ValueError):
        pass
    value = session.conf.get("spark.default.parallelism", None)
    return int(value) if value else None
