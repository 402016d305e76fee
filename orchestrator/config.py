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
                               # (or remote: sc://host:15002 | local[2] for Spark Connect)
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
                  "calibration", "mlflow", "threshold", "explain", "output_dir", "spark",
                  "name", "description")
TOP_LEVEL_KEYS += ("promotion",)  # the promotion gate (orchestrator.specs.promotion)
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_URI_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# The master URLs Spark accepts (SparkContext.createTaskScheduler and spark-submit).
_MASTER_PATTERN = re.compile(
    r"^(local|yarn|local\[(\*|[1-9][0-9]*)(,[0-9]+)?\]"
    r"|local-cluster\[[1-9][0-9]*,\s*[1-9][0-9]*,\s*[1-9][0-9]*\]"
    r"|spark://[^\s/:,]+:[0-9]{1,5}(,[^\s/:,]+:[0-9]{1,5})*"
    r"|(k8s|mesos)://\S+|sc://\S+)$")


@dataclass(frozen=True)
class JobConfig:
    """A loaded config: the workflow's keyword arguments and how to get a session."""

    path: Path
    resolved: Mapping[str, Any]
    workflow_kwargs: Mapping[str, Any] = field(default_factory=dict)
    spark_master: str | None = None
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    spark_remote: str | None = None

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


def master_url_problem(master: object) -> str | None:
    """Why ``master`` is not a Spark master URL, or None when it is one.

    Checked before Spark starts, so a typo is one line instead of a JVM trace.

    Examples
    --------
    >>> master_url_problem("local[2]") is None, master_url_problem("spark://h:7077") is None
    (True, True)
    >>> master_url_problem("locl[2]")[:40]
    "expected a Spark master URL such as loca"
    """
    if isinstance(master, str) and _MASTER_PATTERN.match(master.strip()):
        return None
    return (f"expected a Spark master URL such as local[*], local[4] or spark://host:7077, "
            f"got {master!r}.")


def resolve_path(value: str, base: Path) -> str:
    """A path relative to ``base`` unless absolute or a URI (s3://, dbfs:, file:...).

    ``~`` and ``~user`` are expanded first (never a directory literally named ``~``).
    """
    if _URI_PATTERN.match(value):
        return value
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return value
    return str((base / value).resolve())


def _path_value(value: Any, where: str, base: Path, problems: Problems) -> Any:
    """A path-valued setting: a non-empty string, resolved; anything else is a problem."""
    if isinstance(value, str) and value.strip():
        return resolve_path(value, base)
    problems.expected(where, "a path (a non-empty string)", value,
                      "Quote it in the YAML if it looks like a number or a date.")
    return value


def _resolve_paths(config: dict, base: Path, problems: Problems) -> dict:
    config = dict(config)
    if isinstance(config.get("data"), Mapping) and config["data"].get("path") is not None:
        config["data"] = {**config["data"], "path": _path_value(
            config["data"]["path"], "config.data.path", base, problems)}
    if config.get("output_dir") is not None:
        config["output_dir"] = _path_value(config["output_dir"], "config.output_dir", base,
                                           problems)
    store = config.get("feature_store")
    if isinstance(store, Mapping):
        store = dict(store)
        if isinstance(store.get("labels"), Mapping) and store["labels"].get("path") is not None:
            store["labels"] = {**store["labels"], "path": _path_value(
                store["labels"]["path"], "config.feature_store.labels.path", base, problems)}
        if isinstance(store.get("lookups"), list):
            store["lookups"] = [
                {**item, "path": _path_value(item["path"], f"config.feature_store.lookups[{i}]"
                                             ".path", base, problems)}
                if isinstance(item, Mapping) and item.get("path") is not None else item
                for i, item in enumerate(store["lookups"])]
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
    resolved = _resolve_paths(resolved, base_dir, problems)
    for key in ("name", "description"):
        if resolved.get(key) is not None and not isinstance(resolved[key], str):
            problems.expected(f"config.{key}", "a string", resolved[key])
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
    problems.unknown_keys(spark_section, ("master", "remote", "conf"), "config.spark")
    spark_conf = spark_section.get("conf") or {}
    if not isinstance(spark_conf, Mapping):
        problems.expected("config.spark.conf", "a mapping of Spark settings", spark_conf)
        spark_conf = {}
    master = spark_section.get("master")
    if master is not None and master_url_problem(master):
        problems.add("config.spark.master", master_url_problem(master))
        master = None
    remote = spark_section.get("remote")
    if remote is not None and (not isinstance(remote, str) or not remote.strip()):
        problems.expected("config.spark.remote", "a Spark Connect URL such as sc://host:15002 "
                          "or local[2]", remote)
        remote = None
    elif remote is not None and master is not None:
        problems.add("config.spark", "give master (classic Spark) or remote (Spark Connect), "
                     "not both.")
    for key, value in spark_conf.items():
        if not isinstance(value, (str, int, float, bool)) or value is None:
            problems.expected(f"config.spark.conf.{key}", "a string, number or boolean", value)
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
        "threshold_spec": resolved.get("threshold"),
        "explain_spec": resolved.get("explain"),
        "output_dir": resolved.get("output_dir"),
    }
    # YAML's true is Spark's "true" (str(True) would be "True").
    conf = {str(k): str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in spark_conf.items()}
    return JobConfig(path=path or base_dir, resolved=resolved, workflow_kwargs=kwargs,
                     spark_master=master, spark_conf=conf, spark_remote=remote)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> JobConfig:
    """Read a YAML job config.

    Raises
    ------
    SpecError
        When the file is missing, is not valid YAML, or its layout is wrong.
    """
    config_path = Path(path).expanduser()
    if not config_path.is_file():
        what = "is a directory, not a file" if config_path.is_dir() else "does not exist"
        raise SpecError([f"config: {str(config_path)!r} {what}."])
    try:
        data = config_path.read_bytes()
    except OSError as exc:
        raise SpecError([f"config: cannot read {str(config_path)!r}: {exc.strerror or exc}."]
                        ) from exc
    raw = read_yaml_text(data, str(config_path))
    return parse_config(raw, base_dir=config_path.resolve().parent, environ=environ,
                        path=config_path)


def _unique_key_loader():
    """A SafeLoader that refuses a key written twice in one mapping (YAML keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)
                seen: dict = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node.start_mark)
                    except TypeError:
                        continue  # unhashable key: SafeLoader reports it below
                    if first is not key_node.start_mark:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found key {key!r} twice (first on line {first.line + 1}); "
                            "YAML would silently keep only the last one", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_timestamp(self, node):
            try:
                return super().construct_yaml_timestamp(node)
            except ValueError as exc:  # 2024-02-30 matches YAML's pattern, not the calendar
                raise yaml.constructor.ConstructorError(
                    None, None, f"{node.value!r} is not a valid date ({exc}); quote it if it "
                    "is meant as text", node.start_mark) from None

    UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp",
                                    UniqueKeyLoader.construct_yaml_timestamp)
    return UniqueKeyLoader


def read_yaml_text(data: bytes | str, source: str) -> Any:
    """Parse a config's YAML: UTF-8 only, duplicate keys refused, every failure a SpecError.

    Raises
    ------
    SpecError
        Naming ``source`` and, where YAML knows it, the line.
    """
    import yaml

    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise SpecError([f"config {source}: not UTF-8 text (byte {exc.start}, line {line}: "
                             f"{data[exc.start:exc.start + 1]!r}); save the file as UTF-8."]
                            ) from None
    try:
        return yaml.load(data, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        text = str(exc).replace("\"<unicode string>\"", source)
        raise SpecError([f"config {source}: not valid YAML: {text}"]) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # SafeLoader builds dates and numbers itself; 2024-02-30 fails inside datetime.
        raise SpecError([f"config {source}: YAML value cannot be built ({exc}); quote it if "
                         "it is meant as text."]) from None


def validate_config(config: JobConfig) -> WorkflowSpecs:
    """Validate every spec of a config without reading data or starting Spark."""
    kwargs = {k: v for k, v in config.workflow_kwargs.items() if k != "output_dir"}
    return parse_specs(**kwargs, data_given=False)
