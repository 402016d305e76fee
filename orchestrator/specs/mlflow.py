"""The mlflow spec: where runs are tracked, what is logged, and how long a call may take.

Pure data: nothing here imports MLflow. Tracking is optional; the workflow
degrades to training without it when the server cannot be reached within
``timeout_s`` (see :mod:`orchestrator.tracking`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.specs.problems import Problems

WHERE = "mlflow_spec"
_MAX_RUN_NAME = 250
_MAX_EXPERIMENT_NAME = 500
_KEYS = ("tracking_uri", "experiment_name", "run_name", "tags", "log_model",
         "registered_model_name", "model_alias", "log_plots", "timeout_s", "trusted_types")

# MLflow's own rules for alias names (mlflow/utils/validation.py), checked here so a bad alias
# is reported before training rather than after the model is registered.
_ALIAS_PATTERN = re.compile(r"^[\w\-]+$")
_VERSION_LIKE_ALIAS = re.compile(r"^[vV]\d+$")
_MAX_ALIAS_LENGTH = 255
_MAX_TIMEOUT_S = 600
# A trusted type is a dotted name ("xgboost.core.Booster") or a module prefix ("xgboost.*").
_TYPE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(\.\*)?$")


@dataclass(frozen=True)
class MLflowSpec:
    """What to track in MLflow and where.

    Attributes
    ----------
    tracking_uri : str or None
        None means the default: ``$MLFLOW_TRACKING_URI``, else ``databricks``
        on Databricks, else a sqlite store under ``./mlruns``.
    experiment_name : str or None
        None means MLflow's default experiment (the notebook's on Databricks).
    run_name : str or None
    tags : mapping of str to str
        Extra run tags.
    log_model : bool
        Log the fitted pipeline as an MLflow model.
    registered_model_name : str or None
        Register the logged model as a new version of this registered model.
    model_alias : str or None
        Alias set on the new version only (needs ``registered_model_name``).
    log_plots : bool
        Log ROC/PR curves, confusion matrix, residuals, feature importance.
    timeout_s : float
        Bound on the reachability check and on each HTTP request to the server.
    trusted_types : tuple of str
        Extra types (dotted names, or ``package.*``) the skops-serialized model
        may contain, beyond scikit-learn's and this package's own.
    """

    tracking_uri: str | None = None
    experiment_name: str | None = None
    run_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    log_model: bool = True
    registered_model_name: str | None = None
    model_alias: str | None = None
    log_plots: bool = True
    timeout_s: float = 10.0
    trusted_types: tuple[str, ...] = ()


def parse_mlflow_spec(raw: object, problems: Problems, model_spec=None) -> MLflowSpec | None:
    """Parse ``mlflow_spec``; record every problem in ``problems``.

    Parameters
    ----------
    raw : mapping or None
        The spec as written in YAML. None means no tracking; an empty mapping
        means tracking with every default.
    problems : Problems
        Collector that receives one line per problem found.
    model_spec : ModelSpec or None
        Unused; accepted for the common parser signature.

    Returns
    -------
    MLflowSpec or None
        None when ``raw`` is None or is not a mapping.

    Examples
    --------
    >>> problems = Problems()
    >>> spec = parse_mlflow_spec({"experiment_name": "/Shared/churn", "timeout_s": 5}, problems)
    >>> spec.timeout_s, spec.log_model, bool(problems)
    (5, True, False)
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.expected(WHERE, "a mapping such as {experiment_name: /Shared/churn}", raw)
        return None
    problems.unknown_keys(raw, _KEYS, WHERE)
    defaults = MLflowSpec()

    tracking_uri = raw.get("tracking_uri")
    # An unset ${MLFLOW_TRACKING_URI} may be resolved to "" by the config loader: that means
    # "use the default", not an error.
    if isinstance(tracking_uri, str) and not tracking_uri.strip():
        tracking_uri = None
    elif tracking_uri is not None:
        tracking_uri = problems.string(raw, "tracking_uri", WHERE, default=None)
    experiment_name = problems.string(raw, "experiment_name", WHERE, default=None)
    run_name = problems.string(raw, "run_name", WHERE, default=None)
    # MLflow's limits (its runs.name column is VARCHAR(250); validation.py caps experiment
    # names at 500): refused here rather than by the server after training.
    for key, value, limit in (("run_name", run_name, _MAX_RUN_NAME),
                              ("experiment_name", experiment_name, _MAX_EXPERIMENT_NAME)):
        if value is not None and len(value) > limit:
            problems.add(f"{WHERE}.{key}", f"{len(value)} characters, but MLflow allows at most "
                         f"{limit}; shorten it.")
    tags = _parse_tags(raw.get("tags"), problems)
    log_model = problems.boolean(raw, "log_model", WHERE, defaults.log_model)
    log_plots = problems.boolean(raw, "log_plots", WHERE, defaults.log_plots)
    registered_model_name = problems.string(raw, "registered_model_name", WHERE, default=None)
    model_alias = problems.string(raw, "model_alias", WHERE, default=None)
    timeout_s = problems.number(raw, "timeout_s", WHERE, default=defaults.timeout_s, low=0,
                                high=_MAX_TIMEOUT_S, low_open=True)
    trusted_types = _parse_trusted_types(raw, problems)

    if model_alias is not None:
        _check_alias(model_alias, problems)
        if registered_model_name is None and "registered_model_name" not in raw:
            problems.add(f"{WHERE}.model_alias", f"alias {model_alias!r} needs a registered "
                         "model to point into; add registered_model_name.")
    if registered_model_name is not None and not log_model:
        problems.add(f"{WHERE}.registered_model_name", "registering a model needs the model "
                     "logged; set log_model: true or remove registered_model_name.")

    return MLflowSpec(
        tracking_uri=tracking_uri,
        experiment_name=experiment_name,
        run_name=run_name,
        tags=tags,
        log_model=log_model,
        registered_model_name=registered_model_name,
        model_alias=model_alias,
        log_plots=log_plots,
        timeout_s=timeout_s if timeout_s is not None else defaults.timeout_s,
        trusted_types=trusted_types,
    )


def _parse_tags(value: Any, problems: Problems) -> dict[str, str]:
    where = f"{WHERE}.tags"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.expected(where, "a mapping of tag names to values, such as {team: growth}",
                          value)
        return {}
    tags: dict[str, str] = {}
    for key, tag_value in value.items():
        if not isinstance(key, str) or not key.strip():
            problems.expected(where, "non-empty string tag names", key)
            continue
        if isinstance(tag_value, (Mapping, list, tuple, set)) or tag_value is None:
            problems.expected(f"{where}.{key}", "a string, number or boolean", tag_value)
            continue
        tags[key] = str(tag_value)
    return tags


def _parse_trusted_types(raw: Mapping[str, Any], problems: Problems) -> tuple[str, ...]:
    if raw.get("trusted_types") is None:
        return ()
    names = problems.string_list(raw, "trusted_types", WHERE, default=None)
    if names is None:
        return ()
    for name in names:
        if not _TYPE_NAME.match(name) or "." not in name:
            problems.expected(f"{WHERE}.trusted_types", "dotted type names such as "
                              "'xgboost.core.Booster' or module prefixes such as 'xgboost.*'",
                              name)
    return names


def _check_alias(alias: str, problems: Problems) -> None:
    where = f"{WHERE}.model_alias"
    if not _ALIAS_PATTERN.match(alias) or len(alias) > _MAX_ALIAS_LENGTH:
        problems.expected(where, "letters, digits, '_' and '-' only (at most 255 characters)",
                          alias)
    elif alias.lower() == "latest" or _VERSION_LIKE_ALIAS.match(alias):
        problems.expected(where, "a name MLflow does not reserve ('latest' and v<number> are "
                          "reserved)", alias, "Use e.g. 'champion' or 'challenger'.")
