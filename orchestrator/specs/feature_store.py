"""The feature_store spec: a label table plus point-in-time feature lookups.

.. code-block:: yaml

    feature_store:
      labels:                       # the rows to train on: keys, an event time, the label
        path: data/churn_labels     # or table: catalog.schema.labels ; optional version
        keys: [customer_id]
        timestamp: event_ts         # optional; without it lookups are exact-key joins
        label: churned
      lookups:
        - table: catalog.schema.customer_features   # or path ; optional version
          keys: [customer_id]       # the feature table's keys, matched to labels.keys in order
          timestamp_key: as_of_ts   # the feature table's time column: point-in-time lookup
          features: [tenure_months, plan, monthly_charges]   # default: every non-key column
          rename: {plan: current_plan}
          lookback: 90d             # optional: older feature rows count as missing
      exclude_columns: [event_ts]

The words follow Databricks Feature Engineering (``FeatureLookup``,
``create_training_set``, ``timestamp_lookup_key``, ``lookback_window``). The
shape is checked here, without reading any table; names and types of columns
are checked against the tables by :func:`orchestrator.io.feature_store.build_training_set`
before any join.

Pure data: nothing here imports Spark.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.errors import did_you_mean
from orchestrator.specs.problems import Problems
from orchestrator.specs.source import TableSource, parse_table_source

WHERE = "feature_store_spec"
_STORE_KEYS = ("labels", "lookups", "exclude_columns")
_LABELS_KEYS = ("path", "table", "version", "keys", "timestamp", "label")
_LOOKUP_KEYS = ("table", "path", "version", "keys", "timestamp_key", "features", "rename",
                "lookback")

#: Seconds per lookback unit: ``90d``, ``12h``, ``30m``, ``45s``, ``2w``.
LOOKBACK_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LOOKBACK_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


@dataclass(frozen=True)
class LabelsSpec(TableSource):
    """The label table: one training row per row of it.

    Attributes
    ----------
    path, table : str or None
        Exactly one: a Delta table directory or a metastore name.
    version : int or None
        Delta version to read (time travel); the latest when None.
    keys : tuple of str
        The columns matched to each lookup's ``keys``, in order.
    timestamp : str or None
        The event time of each row; lookups with a ``timestamp_key`` take the
        latest feature row at or before it. Without it, lookups join on the
        keys alone.
    label : str
        The column to predict.
    """

    keys: tuple[str, ...] = ()
    timestamp: str | None = None
    label: str = ""


@dataclass(frozen=True)
class FeatureLookupSpec(TableSource):
    """One feature table joined to the label rows.

    Attributes
    ----------
    table, path : str or None
        Exactly one: a metastore / Unity Catalog name, or a Delta table directory.
    version : int or None
        Delta version to read; the latest when None.
    keys : tuple of str
        The feature table's key columns, matched to ``labels.keys`` in order.
    timestamp_key : str or None
        The feature table's time column. When given, each label row gets the
        latest feature row with the same keys whose time is at or before the
        label's ``timestamp`` (point-in-time lookup); without it the feature
        table must have one row per key (exact-key join).
    features : tuple of str or None
        Feature columns to take; every column but the keys and the time column when None.
    rename : dict of str to str
        Feature name -> name in the training set.
    lookback : str or None
        As written (``90d``); ``lookback_seconds`` holds its value.
    lookback_seconds : int or None
        Feature rows older than this before the label time count as missing.
    """

    keys: tuple[str, ...] = ()
    timestamp_key: str | None = None
    features: tuple[str, ...] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    lookback: str | None = None
    lookback_seconds: int | None = None

    def output_name(self, feature: str) -> str:
        """The name a feature column gets in the training set."""
        return self.rename.get(feature, feature)


@dataclass(frozen=True)
class FeatureStoreSpec:
    """A validated feature_store spec: the label table, its lookups and exclusions."""

    labels: LabelsSpec
    lookups: tuple[FeatureLookupSpec, ...]
    exclude_columns: tuple[str, ...] = ()


def parse_lookback(text: object) -> int | None:
    """Seconds in a lookback such as ``"90d"``, ``"12h"``, ``"30m"``; None when not one.

    Examples
    --------
    >>> parse_lookback("90d"), parse_lookback("12h"), parse_lookback("30m")
    (7776000, 43200, 1800)
    >>> parse_lookback("soon") is None, parse_lookback("0d") is None
    (True, True)
    """
    if not isinstance(text, str):
        return None
    match = _LOOKBACK_PATTERN.match(text)
    if match is None or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * LOOKBACK_UNITS[match.group(2)]


def _parse_table_source(raw: Mapping, where: str, problems: Problems):
    """The keys the labels and every lookup share: path or table, version, keys."""
    source = parse_table_source(raw, where, problems)
    keys = problems.string_list(raw, "keys", where)
    return source.path, source.table, source.version, keys


def _parse_labels(raw: object, problems: Problems) -> LabelsSpec | None:
    where = f"{WHERE}.labels"
    if raw is None:
        problems.add(WHERE, "missing required key 'labels' (the table of rows to train on: "
                     "path or table, keys, label).")
        return None
    if not isinstance(raw, Mapping):
        problems.expected(where, "a mapping such as {path: data/labels, keys: [id], "
                          "label: churned}", raw)
        return None
    problems.unknown_keys(raw, _LABELS_KEYS, where)
    path, table, version, keys = _parse_table_source(raw, where, problems)
    timestamp = problems.string(raw, "timestamp", where, default=None)
    label = problems.string(raw, "label", where)
    if keys and label and label in keys:
        problems.add(f"{where}.label", f"{label!r} is also one of the keys; the label must be "
                     "its own column.")
    if keys and timestamp and timestamp in keys:
        problems.add(f"{where}.timestamp", f"{timestamp!r} is also one of the keys; keys are "
                     "matched exactly, the timestamp point-in-time.")
    if label and timestamp and label == timestamp:
        problems.add(f"{where}.label", f"{label!r} is also the timestamp column.")
    return LabelsSpec(path=path, table=table, version=version, keys=tuple(keys or ()),
                      timestamp=timestamp, label=label or "")


def _parse_rename(raw: Mapping, where: str, problems: Problems) -> dict[str, str]:
    value = raw.get("rename")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.expected(f"{where}.rename", "a mapping {feature: new_name}", value)
        return {}
    rename = {}
    for source, target in value.items():
        if not isinstance(source, str) or not source or not isinstance(target, str) or not target:
            problems.expected(f"{where}.rename", "feature names mapped to new names (strings)",
                              {source: target})
            continue
        rename[source] = target
    targets = list(rename.values())
    for target in sorted({t for t in targets if targets.count(t) > 1}):
        sources = [s for s, t in rename.items() if t == target]
        problems.add(f"{where}.rename", f"{', '.join(map(repr, sources))} are all renamed to "
                     f"{target!r}; each feature needs its own name.")
    return rename


def _parse_lookup(raw: object, index: int, labels: LabelsSpec | None,
                  problems: Problems) -> FeatureLookupSpec | None:
    where = f"{WHERE}.lookups[{index}]"
    if not isinstance(raw, Mapping):
        problems.expected(where, "a mapping such as {path: data/features, keys: [id], "
                          "timestamp_key: as_of_ts}", raw)
        return None
    problems.unknown_keys(raw, _LOOKUP_KEYS, where)
    path, table, version, keys = _parse_table_source(raw, where, problems)
    timestamp_key = problems.string(raw, "timestamp_key", where, default=None)
    features = problems.string_list(raw, "features", where, default=None)
    rename = _parse_rename(raw, where, problems)
    lookback = problems.string(raw, "lookback", where, default=None)
    seconds = None
    if lookback is not None:
        seconds = parse_lookback(lookback)
        if seconds is None:
            problems.expected(f"{where}.lookback", "a positive duration such as '90d', '12h', "
                              "'30m' or '45s' (units: s, m, h, d, w)", lookback)

    if keys and labels is not None and labels.keys and len(keys) != len(labels.keys):
        problems.add(f"{where}.keys", f"{len(keys)} key(s) {list(keys)} but labels.keys has "
                     f"{len(labels.keys)} {list(labels.keys)}; lookup keys are matched to the "
                     "labels' keys in order, so give one per label key.")
    if timestamp_key is not None and labels is not None and labels.timestamp is None:
        problems.add(f"{where}.timestamp_key", f"{timestamp_key!r} is given but labels has no "
                     "'timestamp'; a point-in-time lookup needs each label row's event time "
                     "(add labels.timestamp, or drop timestamp_key for an exact-key join).")
    if lookback is not None and timestamp_key is None:
        problems.add(f"{where}.lookback", "needs a timestamp_key (the feature table's time "
                     "column); without one the lookup is an exact-key join.")
    if keys and timestamp_key and timestamp_key in keys:
        problems.add(f"{where}.timestamp_key", f"{timestamp_key!r} is also one of the keys.")
    if features:
        reserved = [f for f in features if f in (keys or ()) or f == timestamp_key]
        for name in reserved:
            problems.add(f"{where}.features", f"{name!r} is a key or the timestamp_key of this "
                         "lookup; those are matched, not looked up (the labels' own columns are "
                         "in the training set already).")
        for source in rename:
            if source not in features:
                problems.add(f"{where}.rename", f"{source!r} is not among the features "
                             f"{list(features)}{did_you_mean(source, features)}.")
    return FeatureLookupSpec(table=table, path=path, version=version, keys=tuple(keys or ()),
                             timestamp_key=timestamp_key, features=features, rename=rename,
                             lookback=lookback, lookback_seconds=seconds)


def _check_output_names(labels: LabelsSpec | None, lookups: list[FeatureLookupSpec],
                        problems: Problems) -> None:
    """Duplicate training-set names that the spec alone shows (the tables show the rest)."""
    owners: dict[str, str] = {}
    if labels is not None:
        for name in [*labels.keys, labels.timestamp, labels.label]:
            if name:
                owners[name] = "the labels table"
    for index, lookup in enumerate(lookups):
        # Without a features list only the rename targets are known before reading the table.
        names = ([lookup.output_name(f) for f in lookup.features] if lookup.features is not None
                 else list(lookup.rename.values()))
        for name in names:
            where = f"lookups[{index}]"
            if name in owners:
                problems.add(f"{WHERE}.{where}", f"feature {name!r} would appear twice in the "
                             f"training set (also from {owners[name]}); give one of them "
                             f"another name with rename: {{...: new_name}}.")
            else:
                owners[name] = where


def parse_feature_store_spec(raw: object, problems: Problems,
                             model_spec=None) -> FeatureStoreSpec | None:
    """Parse ``feature_store_spec``; record every problem in ``problems``.

    Parameters
    ----------
    raw : mapping or None
        The spec as written in YAML (see the module docstring).
    problems : Problems
        Collector of spec problems.
    model_spec : ModelSpec, optional
        Unused; every spec parser takes it.

    Returns
    -------
    FeatureStoreSpec or None
        None when ``raw`` is None or not a mapping.

    Examples
    --------
    >>> problems = Problems()
    >>> spec = parse_feature_store_spec({
    ...     "labels": {"path": "labels", "keys": ["id"], "timestamp": "ts", "label": "y"},
    ...     "lookups": [{"path": "feats", "keys": ["id"], "timestamp_key": "as_of",
    ...                  "lookback": "90d"}]}, problems)
    >>> spec.lookups[0].lookback_seconds, bool(problems)
    (7776000, False)
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.expected(WHERE, "a mapping with labels, lookups and optional exclude_columns",
                          raw)
        return None
    problems.unknown_keys(raw, _STORE_KEYS, WHERE)
    labels = _parse_labels(raw.get("labels"), problems)

    raw_lookups = raw.get("lookups")
    lookups: list[FeatureLookupSpec] = []
    if raw_lookups is None:
        problems.add(WHERE, "missing required key 'lookups' (a list of feature tables to join, "
                     "each with path or table, keys and optional timestamp_key).")
    elif not isinstance(raw_lookups, (list, tuple)) or not raw_lookups:
        problems.expected(f"{WHERE}.lookups", "a non-empty list of lookups", raw_lookups)
    else:
        for index, item in enumerate(raw_lookups):
            lookup = _parse_lookup(item, index, labels, problems)
            if lookup is not None:
                lookups.append(lookup)
    _check_output_names(labels, lookups, problems)

    exclude = problems.string_list(raw, "exclude_columns", WHERE, default=None) or ()
    if labels is not None and labels.label and labels.label in exclude:
        problems.add(f"{WHERE}.exclude_columns", f"{labels.label!r} is the label; it cannot "
                     "be excluded.")
    if labels is None:
        return None
    return FeatureStoreSpec(labels=labels, lookups=tuple(lookups), exclude_columns=tuple(exclude))
