"""Job configs: one YAML file holding every spec of a job.

``${VAR}`` and ``${VAR:-default}`` are replaced from the environment, and
relative paths are taken relative to the config file, so a config means the
same thing whatever directory a job starts in.

Top-level keys::

    features: [...]            # feature_specs
    model: {...}               # model_spec
    data: {...}                # data_spec (a Delta table)
    feature_store: {...}       # feature_store_spec (instead of data)
    validation: {strategy: cross_validation, params: {cv_folds: 5}}
    tuning: {...}
    calibration: {...}
    mlflow: {...}
    output_dir: output/demo    # plots and other artifacts
    spark: {master: "local[*]", conf: {...}}   # only used when no session is active
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.specs import WorkflowSpecs, parse_specs
from orchestrator.specs.problems import Problems

TOP_LEVEL_KEYS = ("features", "model", "data", "feature_store", "validation", "tuning",
                  "calibration", "mlflow", "output_dir", "spark", "name", "description")
TOP_LEVEL_KEYS += ("promotion",)  # the promotion gate (orchestrator.specs.promotion)
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_URI_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class JobConfig:
    """A loaded config: the workflow's keyword arguments and how to get a session."""

    path: Path
    resolved: Mapping[str, Any]
    workflow_kwargs: Mapping[str, Any] = field(default_factory=dict)
    spark_master: str | None = None
    spark_conf: Mapping[str, str] = field(default_factory=dict)

    def needs_spark(self) -> bool:
        return bool(self.resolved.get("data") or self.resolved.get("feature_store"))


def resolve_env(value: Any, environ: Mapping[str, str], problems: Problems, where: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a nested structure."""
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.add(where or "config", f"environment variable {name} is not set; export "
                         f"it or write ${{{name}:-default}} in the config.")
            return match.group(0)

        whole = _ENV_PATTERN.fullmatch(value)
        substituted = _ENV_PATTERN.sub(substitute, value)
        if whole and substituted != value:
            # A value that is only ${VAR} takes the variable's YAML type: 100 is a number.
            import yaml

            try:
                return yaml.safe_load(substituted) if substituted.strip() else substituted
            except yaml.YAMLError:
                return substituted
        return substituted
    if isinstance(value, Mapping):
        return {k: resolve_env(v, environ, problems, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, environ, problems, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def resolve_path(value: str, base: Path) -> str:
    """A path relative to ``base`` unless absolute or a URI (s3://, dbfs:, file:...)."""
    if _URI_PATTERN.match(value) or os.path.isabs(value):
        return value
    return str((base / value).resolve())


def _resolve_paths(config: dict, base: Path) -> dict:
    config = dict(config)
    if isinstance(config.get("data"), Mapping) and isinstance(config["data"].get("path"), str):
        config["data"] = {**config["data"], "path": resolve_path(config["data"]["path"], base)}
    if isinstance(config.get("output_dir"), str):
        config["output_dir"] = resolve_path(config["output_dir"], base)
    store = config.get("feature_store")
    if isinstance(store, Mapping):
        store = dict(store)
        if isinstance(store.get("labels"), Mapping) and isinstance(store["labels"].get("path"),
                                                                    str):
            store["labels"] = {**store["labels"],
                               "path": resolve_path(store["labels"]["path"], base)}
        if isinstance(store.get("lookups"), list):
            store["lookups"] = [
                {**item, "path": resolve_path(item["path"], base)}
                if isinstance(item, Mapping) and isinstance(item.get("path"), str) else item
                for item in store["lookups"]]
        config["feature_store"] = store
    return config


def parse_config(raw: Any, *, base_dir: Path, environ: Mapping[str, str] | None = None,
                 path: Path | None = None) -> JobConfig:
    """Turn a config mapping (as read from YAML) into a :class:`JobConfig`.

    Raises
    ------
    SpecError
        With every problem of the config's layout (specs are checked by
        :func:`validate_config`).
    """
    problems = Problems()
    if not isinstance(raw, Mapping):
        problems.expected("config", "a mapping of sections (features, model, data, ...)", raw)
        problems.raise_if_any()
    problems.unknown_keys(raw, TOP_LEVEL_KEYS, "config")
    resolved = resolve_env(dict(raw), os.environ if environ is None else environ, problems)
    resolved = _resolve_paths(resolved, base_dir)
    promotion = resolved.get("promotion")
    if isinstance(promotion, Mapping) and isinstance(promotion.get("rows"), Mapping) \
            and isinstance(promotion["rows"].get("path"), str):
        resolved["promotion"] = {**promotion, "rows": {
            **promotion["rows"], "path": resolve_path(promotion["rows"]["path"], base_dir)}}
    validation = resolved.get("validation") or {}
    if not isinstance(validation, Mapping):
        problems.expected("config.validation", "a mapping {strategy: ..., params: {...}}",
                          validation)
        validation = {}
    problems.unknown_keys(validation, ("strategy", "params"), "config.validation")
    spark_section = resolved.get("spark") or {}
    if not isinstance(spark_section, Mapping):
        problems.expected("config.spark", "a mapping {master: ..., conf: {...}}", spark_section)
        spark_section = {}
    problems.unknown_keys(spark_section, ("master", "conf"), "config.spark")
    spark_conf = spark_section.get("conf") or {}
    if not isinstance(spark_conf, Mapping):
        problems.expected("config.spark.conf", "a mapping of Spark settings", spark_conf)
        spark_conf = {}
    master = spark_section.get("master")
    if master is not None and not isinstance(master, str):
        problems.expected("config.spark.master", "a master URL such as local[*]", master)
        master = None
    problems.raise_if_any()
    kwargs = {
        "feature_specs": resolved.get("features"),
        "model_spec": resolved.get("model"),
        "validation_strategy": validation.get("strategy", "cross_validation"),
        "validation_params": validation.get("params"),
        "data_spec": resolved.get("data"),
        "feature_store_spec": resolved.get("feature_store"),
        "tuning_spec": resolved.get("tuning"),
        "calibration_spec": resolved.get("calibration"),
        "mlflow_spec": resolved.get("mlflow"),
        "promotion_spec": resolved.get("promotion"),
        "output_dir": resolved.get("output_dir"),
    }
    conf = {str(k): str(v) for k, v in spark_conf.items()}
    return JobConfig(path=path or base_dir, resolved=resolved, workflow_kwargs=kwargs,
                     spark_master=master, spark_conf=conf)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> JobConfig:
    """Read a YAML job config.

    Raises
    ------
    SpecError
        When the file is missing, is not valid YAML, or its layout is wrong.
    """
    import yaml

    config_path = Path(path)
    if not config_path.is_file():
        raise SpecError([f"config: file {str(config_path)!r} does not exist."])
    try:
        raw = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError([f"config {config_path}: not valid YAML: {exc}"]) from exc
    return parse_config(raw, base_dir=config_path.resolve().parent, environ=environ,
                        path=config_path)


def validate_config(config: JobConfig) -> WorkflowSpecs:
    """Validate every spec of a config without reading data or starting Spark."""
    kwargs = {k: v for k, v in config.workflow_kwargs.items() if k != "output_dir"}
    return parse_specs(**kwargs, data_given=False)
