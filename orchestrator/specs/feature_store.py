"""The feature_store spec (placeholder: accepted and validated as a mapping until its issue lands)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.specs._validation import Problems


@dataclass(frozen=True)
class FeatureStoreSpec:
    """The raw feature_store options."""

    options: Mapping[str, Any] = field(default_factory=dict)


def parse_feature_store_spec(raw: object, problems: Problems, model_spec=None) -> FeatureStoreSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.expected("feature_store_spec", "a mapping", raw)
        return None
    return FeatureStoreSpec(options=dict(raw))
