"""The promotion gate: the registry alias moves to the new version only when it earns it.

:func:`decide_promotion` is the decision, a pure function of two metric dicts
and the rules. :func:`run_promotion_gate` does the I/O around it: finds the
version the alias points to (through a client bound to the run's tracking
URI), loads it, scores it and the candidate on the same rows, moves the alias
only on a pass, and logs the decision, both models' metrics and the deciding
rule to the candidate's run. A registry that cannot be read fails closed: the
alias stays where it is and the decision says why.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.specs.promotion import PromotionSpec
from orchestrator.tracking.params import finite_number
from orchestrator.tracking.uri import tracking_errors

logger = logging.getLogger(__name__)

__all__ = ["PromotionDecision", "decide_promotion", "log_promotion", "run_promotion_gate"]

PROMOTED, REJECTED = "promoted", "rejected"
_TAG = "orchestrator.promotion."
# Two scores this close are equal (the same model scored twice differs by rounding at most).
_EPSILON = 1e-12


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict.

    Attributes
    ----------
    decision : {"promoted", "rejected"}
    rule : str
        The rule that decided, e.g. ``"roc_auc >= champion + 0.005"`` or ``"ece <= 0.05"``.
    reason : str
        One sentence for people.
    comparison : list of dict
        One row per metric: ``metric``, ``candidate``, ``champion``, ``rule``, ``outcome``.
    """

    decision: str
    rule: str
    reason: str
    comparison: list[dict[str, Any]] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTED


def decide_promotion(candidate: Mapping[str, float], champion: Mapping[str, float] | None, *,
                     metric: str, min_improvement: float = 0.0,
                     max_bounds: Mapping[str, float] | None = None,
                     min_bounds: Mapping[str, float] | None = None) -> PromotionDecision:
    """Decide whether the candidate takes the alias (pure: plain values in, verdict out).

    The candidate must stay within every bound, then beat the champion's
    ``metric`` by at least ``min_improvement`` (greater is better: scikit-learn
    scorer names). Without a champion, the bounds alone decide.

    Parameters
    ----------
    candidate, champion : mapping of str to float
        Metrics of both models on the same rows; ``champion`` None when the
        alias points nowhere yet.
    metric : str
    min_improvement : float
    max_bounds, min_bounds : mapping of str to float, optional

    Returns
    -------
    PromotionDecision

    Examples
    --------
    >>> decide_promotion({"roc_auc": 0.80}, {"roc_auc": 0.79}, metric="roc_auc",
    ...                  min_improvement=0.005).decision
    'promoted'
    >>> decide_promotion({"roc_auc": 0.80, "ece": 0.09}, None, metric="roc_auc",
    ...                  max_bounds={"ece": 0.05}).rule
    'ece <= 0.05'
    """
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    champion_values = champion or {}

    def row(name: str, rule: str, ok: bool | None) -> None:
        rows.append({"metric": name, "candidate": candidate.get(name),
                     "champion": champion_values.get(name) if champion is not None else None,
                     "rule": rule, "outcome": {True: "pass", False: "fail", None: ""}[ok]})

    for bounds, symbol, within in ((max_bounds or {}, "<=", lambda v, b: v <= b + _EPSILON),
                                   (min_bounds or {}, ">=", lambda v, b: v >= b - _EPSILON)):
        for name, bound in bounds.items():
            rule = f"{name} {symbol} {bound:g}"
            value = finite_number(candidate.get(name))
            ok = value is not None and within(value, bound)
            row(name, rule, ok)
            if not ok:
                shown = "missing" if value is None else f"{value:.4f}"
                failed.append((rule, f"the candidate's {name} is {shown}, outside {rule}"))
    main_rule = (f"{metric} >= champion + {min_improvement:g}" if champion is not None
                 else f"{metric}: no current holder")
    cand, champ = finite_number(candidate.get(metric)), finite_number(champion_values.get(metric))
    beats = None
    if champion is not None:
        beats = cand is not None and champ is not None and \
            cand - champ >= min_improvement - _EPSILON
    row(metric, main_rule, beats)
    for name in sorted(set(candidate) | set(champion_values)):
        if name not in {r["metric"] for r in rows}:
            row(name, "", None)
    if failed:
        rule, reason = failed[0]
        return PromotionDecision(REJECTED, rule, reason + ("" if len(failed) == 1 else
                                 f" (and {len(failed) - 1} more bound(s))"), rows)
    if champion is None:
        return PromotionDecision(PROMOTED, main_rule, "no model holds the alias yet; the "
                                 "candidate is within its bounds", rows)
    if cand is None or champ is None:
        return PromotionDecision(REJECTED, main_rule, f"{metric} could not be computed for "
                                 f"the {'candidate' if cand is None else 'champion'}", rows)
    change = f"{cand:.4f} vs {champ:.4f} (change {cand - champ:+.4f})"
    if beats:
        return PromotionDecision(PROMOTED, main_rule, f"{metric} {change} meets "
                                 f"min_improvement {min_improvement:g}", rows)
    return PromotionDecision(REJECTED, main_rule, f"{metric} {change} is short of "
                             f"min_improvement {min_improvement:g}", rows)


def run_promotion_gate(tracker, spec: PromotionSpec, *, candidate_model, candidate_version,
                       X, y, score: Callable[[Any, Any, Any], Mapping[str, float]],
                       metric: str, rows_description: str) -> dict[str, Any]:
    """Score candidate and champion on the same rows, decide, move the alias only on a pass.

    Parameters
    ----------
    tracker : Tracker
        The candidate's run (its client is bound to the run's tracking URI).
    spec : PromotionSpec
    candidate_model : estimator
        This run's fitted model (the one registered as ``candidate_version``).
    candidate_version : str or None
        The registered version; None (registration failed) rejects.
    X, y
        The evaluation rows, the same for both models; or ``X`` a callable
        ``X(champion_columns) -> (X, y, rows_description)`` that reads them
        with the champion's input columns too (``y`` then ignored).
    score : callable
        ``score(model, X, y) -> {metric: value}``.
    metric : str
        The deciding metric (the spec's, else the primary metric).
    rows_description : str
        Which rows, for the log (``"hold-out, 114 rows"``, a table and version).

    Returns
    -------
    dict
        ``decision``, ``rule``, ``reason``, ``alias``, ``registered_model_name``,
        ``candidate_version``, ``champion_version``, ``rows``, ``comparison``,
        ``alias_moved``. Never raises for registry trouble: it is a rejection.
    """
    name = tracker.spec.registered_model_name
    outcome: dict[str, Any] = {"alias": spec.alias, "registered_model_name": name,
                               "candidate_version": candidate_version, "champion_version": None,
                               "rows": rows_description, "metric": metric,
                               "min_improvement": spec.min_improvement, "alias_moved": False}
    errors = tracking_errors()
    client = tracker.client()
    if candidate_version is None:
        decision = PromotionDecision(REJECTED, "registered version", "the model was not "
                                     "registered, so there is nothing to promote")
    else:
        try:
            champion_version, champion_model = _current_holder(client, tracker.tracking_uri,
                                                               name, spec.alias)
            outcome["champion_version"] = champion_version
            needed = [str(c) for c in getattr(champion_model, "feature_names_in_", [])]
            if callable(X):  # a loader: the rows with every column either model reads
                X, y, outcome["rows"] = X(needed)
            missing = [c for c in needed if c not in X.columns]
            if missing:
                decision = PromotionDecision(
                    REJECTED, "same rows for both models", f"fail closed: the champion "
                    f"(version {champion_version}) reads columns the evaluation rows lack: "
                    f"{', '.join(missing)}; give promotion.rows a Delta table holding every "
                    f"column both models read. The alias {spec.alias!r} was not moved")
            else:
                candidate = dict(score(candidate_model, _inputs(candidate_model, X), y))
                champion = (dict(score(champion_model, _inputs(champion_model, X), y))
                            if champion_model is not None else None)
                decision = decide_promotion(candidate, champion, metric=metric,
                                            min_improvement=spec.min_improvement,
                                            max_bounds=spec.max, min_bounds=spec.min)
                if decision.promoted:
                    client.set_registered_model_alias(name, spec.alias, candidate_version)
                    outcome["alias_moved"] = True
        except errors as exc:
            decision = PromotionDecision(
                REJECTED, "registry reachable", f"fail closed: the registry could not be "
                f"used ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); the alias "
                f"{spec.alias!r} was not moved")
    outcome.update({k: v for k, v in asdict(decision).items()})
    logger.info("Promotion gate %s: %s (%s)", decision.decision, decision.reason, decision.rule)
    log_promotion(tracker, outcome)
    return outcome


def _inputs(model, X):
    """The columns ``model`` was fitted on, in its order (the rows may hold more)."""
    names = getattr(model, "feature_names_in_", None)
    return X.loc[:, [str(c) for c in names]] if names is not None else X


def _current_holder(client, tracking_uri: str, name: str, alias: str):
    """(version, loaded model) the alias points to, or (None, None) when it points nowhere."""
    import mlflow.artifacts
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and (
                "not found" in str(exc).lower() or "does not exist" in str(exc).lower()):
            return None, None
        raise
    with tempfile.TemporaryDirectory(prefix="orchestrator-champion-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=tmp,
                                                    tracking_uri=tracking_uri,
                                                    registry_uri=tracking_uri)
        model = mlflow.sklearn.load_model(local)
    return str(version.version), model


def log_promotion(tracker, outcome: Mapping[str, Any]) -> None:
    """Log a gate outcome to the candidate's run: tags, metrics and the comparison table."""
    client = tracker.client()
    tags = {f"{_TAG}{key}": str(outcome[key])[:5000] for key in
            ("decision", "rule", "reason", "alias", "candidate_version", "champion_version",
             "rows", "metric") if outcome.get(key) is not None}
    metrics = {}
    for row in outcome.get("comparison") or []:
        for who in ("candidate", "champion"):
            if finite_number(row.get(who)) is not None:
                metrics[f"promotion/{who}/{row['metric']}"] = row[who]
    lines = [f"{'metric':<28}{'candidate':>12}{'champion':>12}  rule / outcome"]
    for row in outcome.get("comparison") or []:
        cells = [f"{row[w]:>12.4f}" if finite_number(row.get(w)) is not None else f"{'-':>12}"
                 for w in ("candidate", "champion")]
        lines.append(f"{row['metric']:<28}{''.join(cells)}  {row['rule']} {row['outcome']}")
    try:
        for key, value in tags.items():
            client.set_tag(tracker.run_id, key, value)
        tracker.log_metrics(metrics)
        client.log_dict(tracker.run_id, dict(outcome), "promotion/comparison.json")
        client.log_text(tracker.run_id, "\n".join(lines) + "\n", "promotion/comparison.txt")
    except tracking_errors() as exc:
        logger.warning("Promotion gate: decision not logged to run %s: %s", tracker.run_id, exc)


