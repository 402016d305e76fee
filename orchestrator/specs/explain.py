"""The explain spec: which explanations of the fitted model to compute.

.. code-block:: yaml

    explain:
      permutation: true   # permutation importance on held-out rows (default on)
      n_repeats: 5        # shuffles per input column
      max_rows: 2000      # held-out rows used (a seeded sample when there are more)
      top: 10             # features shown in the summary
      shap: false         # a SHAP summary plot (tree models; needs the shap package)

Pure data: nothing here imports scikit-learn or shap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.specs.problems import Problems

_KEYS = ("permutation", "n_repeats", "max_rows", "top", "shap", "random_state")


@dataclass(frozen=True)
class ExplainSpec:
    """A validated explain spec (see the module docstring for the keys)."""

    permutation: bool = True
    n_repeats: int = 5
    max_rows: int = 2000
    top: int = 10
    shap: bool = False
    random_state: int = 0


def _positive_int(raw: Mapping, key: str, default: int, where: str, problems: Problems) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.expected(f"{where}.{key}", "an integer >= 1", value)
        return default
    return value


def _flag(raw: Mapping, key: str, default: bool, where: str, problems: Problems) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        problems.expected(f"{where}.{key}", "true or false", value)
        return default
    return value


def parse_explain_spec(raw: object, problems: Problems) -> ExplainSpec | None:
    """Parse ``explain``; ``True`` means the defaults. Records problems in ``problems``."""
    where = "explain"
    if raw is None or raw is False:
        return None
    if raw is True:
        return ExplainSpec()
    if not isinstance(raw, Mapping):
        problems.expected(where, "true or a mapping such as {shap: true, n_repeats: 5}", raw)
        return None
    problems.unknown_keys(raw, _KEYS, where)
    defaults = ExplainSpec()
    random_state = raw.get("random_state", defaults.random_state)
    spec = ExplainSpec(
        permutation=_flag(raw, "permutation", defaults.permutation, where, problems),
        n_repeats=_positive_int(raw, "n_repeats", defaults.n_repeats, where, problems),
        max_rows=_positive_int(raw, "max_rows", defaults.max_rows, where, problems),
        top=_positive_int(raw, "top", defaults.top, where, problems),
        shap=_flag(raw, "shap", defaults.shap, where, problems),
        random_state=random_state if isinstance(random_state, int) else defaults.random_state)
    if not (spec.permutation or spec.shap):
        problems.add(where, "both permutation and shap are off; remove the explain section or "
                     "turn one on.")
    return spec
