"""What a run's params and metrics look like in MLflow: flattened, sanitized, redacted, finite."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

from orchestrator.redaction import redact

__all__ = ["flatten_params", "finite_number", "flat_numbers", "library_versions", "param_key",
           "param_value", "yaml_safe"]


_LIBRARIES = ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy", "pyspark",
              "delta-spark", "hyperopt", "matplotlib", "pyarrow")


_MAX_PARAM_VALUE = 6000


_MAX_KEY = 250


def yaml_safe(value: Any) -> Any:
    """Config values as YAML/JSON-safe Python (dicts, lists, str, numbers, bools, None)."""
    if isinstance(value, Mapping):
        return {str(k): yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [yaml_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def param_key(key: str) -> str:
    key = re.sub(r"[^\w\-. /:]", "_", key)
    if len(key) > _MAX_KEY:
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        key = key[:_MAX_KEY - 9] + "~" + digest
    return key


def param_value(value: Any) -> str:
    # Scalars as Python writes them (True, None, 0.5), as MLflow's autologging does;
    # containers as JSON.
    plain = yaml_safe(value)
    text = json.dumps(plain) if isinstance(plain, (dict, list)) else str(plain)
    return text if len(text) <= _MAX_PARAM_VALUE else text[:_MAX_PARAM_VALUE - 3] + "..."


def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into MLflow params, secrets redacted.

    Nested mappings become dotted keys; a list of mappings (such as the
    feature specs) is indexed (``feature_specs.0.name``); a list of scalars
    stays one JSON value.

    Examples
    --------
    >>> flatten_params({"model_spec": {"params": {"C": 0.5}}, "db": {"password": "x"}})
    {'model_spec.params.C': '0.5', 'db.password': '***REDACTED***'}
    """
    flat: dict[str, str] = {}
    _flatten_into(flat, yaml_safe(redact(config)), prefix)
    return flat


def _flatten_into(flat: dict[str, str], value: Any, prefix: str) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten_into(flat, item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            _flatten_into(flat, item, f"{prefix}.{index}" if prefix else str(index))
    elif prefix:
        flat[param_key(prefix)] = param_value("" if value is None else value)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"lib.python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            versions[f"lib.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from orchestrator._version import __version__

    versions["lib.orchestrator"] = __version__
    return versions


def finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def flat_numbers(values: Any, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    if isinstance(values, Mapping):
        for key, value in values.items():
            flat.update(flat_numbers(value, f"{prefix}{key}" if not prefix
                                      else f"{prefix}/{key}"))
    elif finite_number(values) is not None and prefix:
        flat[prefix] = finite_number(values)
    return flat
