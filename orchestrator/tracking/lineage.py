"""Data lineage of a run: the Delta tables and versions it read, as MLflow dataset inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from orchestrator.redaction import redact
from orchestrator.results import WorkflowResult, as_workflow_result
from orchestrator.tracking.model_logging import to_model_input
from orchestrator.tracking.params import finite_number, yaml_safe

__all__ = ["log_lineage"]


def _delta_source(source_class, location: str, version: Any):
    version = int(version) if finite_number(version) is not None else None
    if "/" in location or ":" in location:
        return source_class(path=location, delta_table_version=version)
    return source_class(delta_table_name=location, delta_table_version=version)


def _dataset_name(source) -> str:
    name = getattr(source, "delta_table_name", None) or getattr(source, "path", None) or "data"
    return str(name).rstrip("/").split("/")[-1] or str(name)


def log_lineage(tracker, results: WorkflowResult | Mapping[str, Any], X_sample) -> None:
    """Log ``results.data`` as ``lineage.json``, ``data.*`` params and MLflow dataset inputs."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.models import infer_signature
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    data = as_workflow_result(results).data
    if not isinstance(data, Mapping) or not data:
        return
    lineage = yaml_safe(redact(dict(data)))
    client = tracker.client()
    client.log_dict(tracker.run_id, lineage, "lineage.json")
    params = {f"data.{key}": lineage[key] for key in
              ("location", "delta_version", "row_count", "label", "filter", "max_rows")
              if lineage.get(key) is not None}
    tracker.log_params(params)
    schema = (infer_signature(to_model_input(X_sample)).inputs if X_sample is not None
              else None)
    inputs = []
    if data.get("location"):
        inputs.append((_delta_source(DeltaDatasetSource, data["location"],
                                     data.get("delta_version")),
                       "training", data.get("row_count"), schema))
    for lookup in data.get("feature_lookups") or []:
        if isinstance(lookup, Mapping) and (lookup.get("table") or lookup.get("location")):
            location = lookup.get("table") or lookup.get("location")
            inputs.append((_delta_source(DeltaDatasetSource, location,
                                         lookup.get("delta_version", lookup.get("version"))),
                           "feature_lookup", lookup.get("row_count"), None))
    entities = []
    for source, context, rows, dataset_schema in inputs:
        source_json = source.to_json()
        digest = hashlib.sha1(f"{source_json}|{rows}".encode()).hexdigest()[:8]
        name = _dataset_name(source)
        dataset = MetaDataset(source=source, name=name, digest=digest, schema=dataset_schema)
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        if rows is not None:
            tags.append(InputTag("row_count", str(rows)))
        entities.append(DatasetInput(dataset._to_mlflow_entity(), tags))
    if entities:
        client.log_inputs(tracker.run_id, datasets=entities)
