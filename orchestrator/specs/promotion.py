"""The promotion spec: which registry alias a new model may take, on which rows, by which rules.

Pure data: nothing here imports MLflow or Spark. The gate itself is
:mod:`orchestrator.tracking.promotion`; the decision is the pure
:func:`orchestrator.tracking.promotion.decide_promotion`.

::

    promotion:
      alias: champion
      rows: holdout                 # the train_test hold-out, or a Delta table:
      # rows: {path: data/eval, version: 3, label: churned}
      metric: roc_auc               # default: the model's primary metric
      min_improvement: 0.005        # the candidate must beat the holder by at least this
      max: {ece: 0.05}              # optional bounds on other metrics
      min: {recall: 0.6}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.specs.problems import Problems
from orchestrator.specs.source import TableSource, parse_table_source

__all__ = ["EXTRA_METRICS", "PromotionRows", "PromotionSpec", "parse_promotion_spec"]

WHERE = "promotion"
_KEYS = ("alias", "rows", "metric", "min_improvement", "max", "min")
_ROW_KEYS = ("path", "table", "version", "label", "filter")
_ALIAS_PATTERN = re.compile(r"^[\w\-]+$")
_VERSION_LIKE_ALIAS = re.compile(r"^[vV]\d+$")
#: Metrics the gate computes besides the task's scorer names (lower is better).
EXTRA_METRICS = ("ece", "brier", "log_loss")


@dataclass(frozen=True)
class PromotionRows(TableSource):
    """A Delta table of evaluation rows (the feature columns and the label).

    ``label`` defaults to the training label; ``filter`` is a Spark SQL predicate.
    """

    label: str | None = None
    filter: str | None = None


@dataclass(frozen=True)
class PromotionSpec:
    """When the registry alias moves to the new model version.

    Attributes
    ----------
    alias : str
        The alias to move, e.g. ``champion``.
    rows : "holdout" or PromotionRows
        Where both models are scored: the train_test hold-out, or a Delta table.
    metric : str or None
        The deciding metric; None means the model's primary metric.
    min_improvement : float
        The candidate's metric minus the holder's must be at least this (and,
        when 0, strictly positive is not required: an equal model passes).
    max, min : mapping of str to float
        Bounds the candidate must stay within (``max: {ece: 0.05}``).
    """

    alias: str
    rows: str | PromotionRows = "holdout"
    metric: str | None = None
    min_improvement: float = 0.0
    max: Mapping[str, float] = field(default_factory=dict)
    min: Mapping[str, float] = field(default_factory=dict)

    @property
    def uses_holdout(self) -> bool:
        return self.rows == "holdout"


def _bounds(raw: Mapping, key: str, problems: Problems, metric_ok) -> dict[str, float]:
    value = raw.get(key)
    if value is None:
        return {}
    where = f"{WHERE}.{key}"
    if not isinstance(value, Mapping):
        problems.expected(where, "a mapping of metric name to bound, e.g. {ece: 0.05}", value)
        return {}
    bounds = {}
    for name, bound in value.items():
        if not metric_ok(str(name), f"{where}.{name}"):
            continue
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(
                bound):
            problems.expected(f"{where}.{name}", "a finite number", bound)
            continue
        bounds[str(name)] = float(bound)
    return bounds


def parse_promotion_spec(raw: object, problems: Problems, model_spec=None
                         ) -> PromotionSpec | None:
    """Parse ``promotion``; record every problem in ``problems``.

    Parameters
    ----------
    raw : mapping or None
        The section as written in YAML; None means no gate (the mlflow
        section's ``model_alias``, if any, is set unconditionally as before).
    problems : Problems
    model_spec : ModelSpec, optional
        Checks metric names against the task.

    Returns
    -------
    PromotionSpec or None

    Examples
    --------
    >>> spec = parse_promotion_spec({"alias": "champion", "max": {"ece": 0.05}}, Problems())
    >>> spec.rows, spec.max
    ('holdout', {'ece': 0.05})
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.expected(WHERE, "a mapping such as {alias: champion, rows: holdout}", raw)
        return None
    problems.unknown_keys(raw, _KEYS, WHERE)
    alias = raw.get("alias")
    if not isinstance(alias, str) or not _ALIAS_PATTERN.match(alias) \
            or _VERSION_LIKE_ALIAS.match(alias) or alias.lower() == "latest":
        problems.expected(f"{WHERE}.alias", "an MLflow alias name (letters, digits, _ and -; "
                          "not 'latest' or v<number>), e.g. champion", alias)
        alias = "champion"

    def metric_ok(name: object, where: str) -> bool:
        if name in EXTRA_METRICS:
            if model_spec is not None and model_spec.task == "regression":
                problems.add(where, f"{name!r} needs class probabilities; a regressor has none.")
                return False
            return True
        if model_spec is None:
            return isinstance(name, str)
        from orchestrator.specs.model import check_metric

        before = len(problems.messages)
        check_metric(name, model_spec.task, where, problems)
        return len(problems.messages) == before

    metric = raw.get("metric")
    if metric is not None and (metric in EXTRA_METRICS or not metric_ok(metric,
                                                                       f"{WHERE}.metric")):
        if metric in EXTRA_METRICS:
            problems.add(f"{WHERE}.metric", f"{metric!r} is lower-is-better; put it in "
                         f"max: {{{metric}: ...}} and decide on a scorer name (e.g. roc_auc).")
        metric = None
    defaults = PromotionSpec(alias=alias)
    improvement = problems.number(raw, "min_improvement", WHERE,
                                  default=defaults.min_improvement, low=0)
    rows_raw = raw.get("rows", defaults.rows)
    rows: str | PromotionRows = defaults.rows
    if isinstance(rows_raw, Mapping):
        problems.unknown_keys(rows_raw, _ROW_KEYS, f"{WHERE}.rows")
        source = parse_table_source(rows_raw, f"{WHERE}.rows", problems)
        rows = PromotionRows(path=source.path, table=source.table, version=source.version,
                             label=problems.string(rows_raw, "label", f"{WHERE}.rows",
                                                   default=None),
                             filter=problems.string(rows_raw, "filter", f"{WHERE}.rows",
                                                    default=None))
    elif rows_raw != "holdout":
        problems.expected(f"{WHERE}.rows", "'holdout' (the train_test hold-out) or a Delta "
                          "table {path|table, version?, label?}", rows_raw)
    return PromotionSpec(alias=alias, rows=rows, metric=metric,
                         min_improvement=float(improvement or defaults.min_improvement),
                         max=_bounds(raw, "max", problems, metric_ok),
                         min=_bounds(raw, "min", problems, metric_ok))


def check_promotion_context(promotion: PromotionSpec | None, mlflow, validation,
                            problems: Problems) -> None:
    """Checks between sections: the gate needs a registered model and, for ``rows:
    holdout``, a train_test hold-out; its alias is not also set unconditionally."""
    if promotion is None:
        return
    if mlflow is None or not mlflow.registered_model_name or not mlflow.log_model:
        problems.add(WHERE, "the promotion gate moves a registry alias, so it needs an mlflow "
                     "section with log_model: true and registered_model_name.")
    elif mlflow.model_alias == promotion.alias:
        problems.add(WHERE, f"alias {promotion.alias!r} is also mlflow.model_alias, which is "
                     "set on every new version unconditionally; remove mlflow.model_alias or "
                     "use another alias for the gate.")
    if promotion.uses_holdout and validation is not None and \
            validation.strategy != "train_test":
        problems.add(f"{WHERE}.rows", "'holdout' needs validation strategy train_test (got "
                     f"{validation.strategy!r}); or give a Delta table of evaluation rows "
                     "{path|table, version?}.")
