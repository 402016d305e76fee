"""Feature specs: which columns feed the model and how each kind is prepared."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.specs.problems import Problems

FEATURE_TYPES = ("numeric", "categorical", "boolean", "text", "datetime")
NUMERIC_IMPUTE = ("median", "mean", "most_frequent", "constant")
NUMERIC_SCALE = ("standard", "minmax", "robust", "none")
CATEGORICAL_IMPUTE = ("most_frequent", "constant")
CATEGORICAL_ENCODE = ("onehot", "ordinal")
TEXT_METHODS = ("tfidf", "count")
DATETIME_PARTS = ("year", "month", "day", "dayofweek", "dayofyear", "hour", "minute", "quarter",
                  "is_weekend")
DEFAULT_DATETIME_PARTS = ("year", "month", "dayofweek", "hour")

# The keys each feature type accepts besides name/columns/type.
_OPTIONS = {
    "numeric": ("impute", "fill_value", "scale"),
    "categorical": ("impute", "fill_value", "encode", "max_categories"),
    "boolean": ("impute", "fill_value"),
    "text": ("method", "max_features", "ngram_max", "lowercase"),
    "datetime": ("parts",),
}


@dataclass(frozen=True)
class FeatureSpec:
    """One group of columns of one type, with its preparation options.

    Attributes mirror the YAML keys; options that do not apply to ``type``
    keep their defaults and are ignored.
    """

    type: str
    columns: tuple[str, ...]
    impute: str | None = None
    fill_value: Any = None
    scale: str = "standard"
    encode: str = "onehot"
    max_categories: int | None = None
    method: str = "tfidf"
    max_features: int | None = None
    ngram_max: int = 1
    lowercase: bool = True
    parts: tuple[str, ...] = DEFAULT_DATETIME_PARTS


def parse_feature_specs(raw: object, problems: Problems) -> tuple[FeatureSpec, ...]:
    """Parse the ``feature_specs`` list; record every problem in ``problems``."""
    where = "feature_specs"
    if raw is None or isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)):
        problems.expected(where, "a non-empty list of feature specs such as "
                          "{name: age, type: numeric}", raw)
        return ()
    if not raw:
        problems.add(where, "expected at least one feature spec, got an empty list.")
        return ()
    specs = []
    seen: dict[str, str] = {}
    for index, item in enumerate(raw):
        item_where = f"{where}[{index}]"
        if isinstance(item, FeatureSpec):
            item = _as_raw(item)  # typed specs pass the same checks as dicts
        spec = _parse_one(item, item_where, problems)
        if spec is None:
            continue
        for column in dict.fromkeys(spec.columns):
            if column in seen:
                problems.add(item_where, f"column {column!r} is already used by {seen[column]}; "
                             "list each column in one feature spec only.")
            else:
                seen[column] = item_where
        specs.append(spec)
    return tuple(specs)


def _as_raw(spec: FeatureSpec) -> dict[str, Any]:
    """A typed spec as the dict a user would write (only the options of its type)."""
    raw: dict[str, Any] = {"type": spec.type, "columns": list(spec.columns)}
    for key in _OPTIONS.get(spec.type, ()):
        value = getattr(spec, key)
        if key == "fill_value" and spec.impute != "constant":
            continue
        if value is not None:
            raw[key] = list(value) if isinstance(value, tuple) else value
    return raw


def _parse_one(item: object, where: str, problems: Problems) -> FeatureSpec | None:
    if not isinstance(item, Mapping):
        problems.expected(where, "a mapping such as {name: age, type: numeric}", item)
        return None
    kind = problems.choice(item, "type", FEATURE_TYPES, where)
    allowed = ("name", "columns", "type") + (_OPTIONS.get(kind, ()) if kind else
                                             tuple(k for opts in _OPTIONS.values() for k in opts))
    problems.unknown_keys(item, allowed, where)
    if ("name" in item) == ("columns" in item):
        problems.add(where, "give exactly one of 'name' (one column) or 'columns' (a list), "
                     f"got {'both' if 'name' in item else 'neither'}.")
        return None
    if "name" in item:
        name = problems.string(item, "name", where)
        columns = (name,) if name else None
    else:
        columns = problems.string_list(item, "columns", where)
    if kind is None or not columns:
        return None

    # Impute defaults depend on the type (FeatureSpec.impute is None for "not chosen");
    # every other option defaults to the dataclass field.
    defaults = FeatureSpec(type=kind, columns=columns)
    options: dict[str, Any] = {}
    if kind == "numeric":
        options["impute"] = problems.choice(item, "impute", NUMERIC_IMPUTE, where, default="median")
        options["scale"] = problems.choice(item, "scale", NUMERIC_SCALE, where,
                                           default=defaults.scale)
    elif kind == "categorical":
        options["impute"] = problems.choice(item, "impute", CATEGORICAL_IMPUTE, where,
                                            default="most_frequent")
        options["encode"] = problems.choice(item, "encode", CATEGORICAL_ENCODE, where,
                                            default=defaults.encode)
        options["max_categories"] = problems.number(item, "max_categories", where,
                                                    default=defaults.max_categories,
                                                    integer=True, low=2)
    elif kind == "boolean":
        options["impute"] = problems.choice(item, "impute", ("most_frequent", "constant"), where,
                                            default="most_frequent")
    elif kind == "text":
        options["method"] = problems.choice(item, "method", TEXT_METHODS, where,
                                            default=defaults.method)
        options["max_features"] = problems.number(item, "max_features", where,
                                                  default=defaults.max_features, integer=True,
                                                  low=1)
        options["ngram_max"] = problems.number(item, "ngram_max", where,
                                               default=defaults.ngram_max, integer=True, low=1,
                                               high=5)
        options["lowercase"] = problems.boolean(item, "lowercase", where,
                                                default=defaults.lowercase)
    elif kind == "datetime":
        parts = problems.string_list(item, "parts", where, default=list(defaults.parts))
        for part in parts or ():
            if part not in DATETIME_PARTS:
                problems.choice({"parts": part}, "parts", DATETIME_PARTS, where)
        options["parts"] = tuple(parts or defaults.parts)

    if options.get("impute") == "constant":
        if "fill_value" not in item:
            problems.add(where, "impute 'constant' needs a 'fill_value' (the value that "
                         "replaces missing entries).")
        fill_value = item.get("fill_value")
        if kind == "numeric" and "fill_value" in item and (
                isinstance(fill_value, bool) or not isinstance(fill_value, (int, float))):
            problems.expected(f"{where}.fill_value", "a number for a numeric feature",
                              fill_value)
        if kind == "boolean" and "fill_value" in item and not isinstance(fill_value, bool):
            problems.expected(f"{where}.fill_value", "true or false for a boolean feature",
                              fill_value)
        options["fill_value"] = fill_value
    elif "fill_value" in item:
        problems.add(where, "'fill_value' is only used with impute: constant; "
                     "remove it or set impute: constant.")
    options = {k: v for k, v in options.items() if v is not None or k == "fill_value"}
    return FeatureSpec(type=kind, columns=tuple(columns), **options)


def feature_columns(specs: tuple[FeatureSpec, ...]) -> list[str]:
    """Every input column the feature specs use, in spec order."""
    return [column for spec in specs for column in spec.columns]


def as_dict(spec: FeatureSpec) -> Mapping[str, Any]:
    """The spec as plain data (for logging and summaries)."""
    from dataclasses import asdict

    return asdict(spec)
