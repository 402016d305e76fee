"""Specs: pure data describing one training job, validated in one place.

:func:`parse_specs` turns the user's dicts (as written in YAML) into frozen
spec objects and reports every problem of every spec in one
:class:`~orchestrator.errors.SpecError`. Nothing here imports Spark, MLflow or
hyperopt, so validation is fast and runs before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import did_you_mean
from orchestrator.specs.calibration import CalibrationSpec, parse_calibration_spec
from orchestrator.specs.data import DataSpec, parse_data_spec
from orchestrator.specs.explain import ExplainSpec, parse_explain_spec
from orchestrator.specs.feature_store import FeatureStoreSpec, parse_feature_store_spec
from orchestrator.specs.features import (
    FeatureSpec,
    feature_columns,
    parse_feature_specs,
)
from orchestrator.specs.mlflow import MLflowSpec, parse_mlflow_spec
from orchestrator.specs.model import ModelSpec, parse_model_spec
from orchestrator.specs.problems import Problems
from orchestrator.specs.promotion import (
    PromotionSpec,
    check_promotion_context,
    parse_promotion_spec,
)
from orchestrator.specs.threshold import ThresholdSpec, parse_threshold_spec
from orchestrator.specs.tuning import TuningSpec, parse_tuning_spec
from orchestrator.specs.validation import (
    ValidationSpec,
    check_nested_needs_tuning,
    parse_validation_spec,
)
from orchestrator.specs.weights import SampleWeightSpec, check_sample_weight_spec

__all__ = [
    "WorkflowSpecs",
    "parse_specs",
    "FeatureSpec",
    "ModelSpec",
    "DataSpec",
    "ValidationSpec",
    "TuningSpec",
    "CalibrationSpec",
    "MLflowSpec",
    "FeatureStoreSpec",
    "PromotionSpec",
    "ThresholdSpec",
    "ExplainSpec",
    "SampleWeightSpec",
    "Problems",
    "did_you_mean",
]


@dataclass(frozen=True)
class WorkflowSpecs:
    """Every spec of one job, validated together."""

    features: tuple[FeatureSpec, ...]
    model: ModelSpec
    validation: ValidationSpec
    data: DataSpec | None = None
    tuning: TuningSpec | None = None
    calibration: CalibrationSpec | None = None
    mlflow: MLflowSpec | None = None
    feature_store: FeatureStoreSpec | None = None
    promotion: PromotionSpec | None = None
    threshold: ThresholdSpec | None = None
    explain: ExplainSpec | None = None
    sample_weight: SampleWeightSpec | None = None


def _typed_or_parsed(raw: Any, spec_type: type, parse, *args):
    return raw if isinstance(raw, spec_type) else parse(raw, *args)


def parse_specs(*, feature_specs: Any, model_spec: Any,
                validation_strategy: str = "cross_validation",
                validation_params: Any = None, data_spec: Any = None, tuning_spec: Any = None,
                calibration_spec: Any = None, mlflow_spec: Any = None,
                feature_store_spec: Any = None, promotion_spec: Any = None,
                data_given: bool = False,
                threshold_spec: Any = None, explain_spec: Any = None,
                sample_weight: str | bool | None = None) -> WorkflowSpecs:
    """Validate all specs of a job at once.

    Parameters
    ----------
    feature_specs, model_spec, validation_strategy, validation_params, data_spec, tuning_spec,
    calibration_spec, mlflow_spec, feature_store_spec, threshold_spec, explain_spec
        The specs as plain dicts/lists (as in YAML) or as spec objects.
    data_given : bool
        True when the caller passes X and y directly, so no data source is needed.
    sample_weight : str, bool or None
        ``run_ml_workflow(sample_weight=...)``: the weight column's name, or True when
        the weights are an array (``data_spec.sample_weight`` names it in the data spec).

    Returns
    -------
    WorkflowSpecs

    Raises
    ------
    SpecError
        Listing every problem found, each with what was expected, what was
        given and, for names, a did-you-mean.

    Examples
    --------
    >>> specs = parse_specs(feature_specs=[{"name": "age", "type": "numeric"}],
    ...                     model_spec={"estimator": "logistic_regression"}, data_given=True)
    >>> specs.model.task
    'classification'
    """
    problems = Problems()
    features = parse_feature_specs(feature_specs, problems)
    model = _typed_or_parsed(model_spec, ModelSpec, parse_model_spec, problems)
    validation = parse_validation_spec(validation_strategy, validation_params, problems)
    data = _typed_or_parsed(data_spec, DataSpec, parse_data_spec, problems)
    tuning = _typed_or_parsed(tuning_spec, TuningSpec, parse_tuning_spec, problems, model)
    calibration = _typed_or_parsed(calibration_spec, CalibrationSpec, parse_calibration_spec,
                                   problems, model)
    mlflow = _typed_or_parsed(mlflow_spec, MLflowSpec, parse_mlflow_spec, problems, model)
    feature_store = _typed_or_parsed(feature_store_spec, FeatureStoreSpec,
                                     parse_feature_store_spec, problems, model)
    promotion = _typed_or_parsed(promotion_spec, PromotionSpec, parse_promotion_spec, problems,
                                 model)
    check_promotion_context(promotion, mlflow, validation, problems)
    threshold = _typed_or_parsed(threshold_spec, ThresholdSpec, parse_threshold_spec, problems,
                                 model)
    explain = _typed_or_parsed(explain_spec, ExplainSpec, parse_explain_spec, problems)
    check_nested_needs_tuning(validation, tuning is not None, problems)

    sources = [name for name, spec in (("data_spec", data), ("feature_store_spec", feature_store))
               if spec is not None]
    if data_given and sources:
        problems.add("run_ml_workflow", f"X and y were given together with {sources[0]}; "
                     "pass either the data (X, y) or a source spec, not both.")
    elif not data_given and not sources and not (data_spec or feature_store_spec):
        problems.add("run_ml_workflow", "no training data: pass X and y, or a data_spec "
                     "(a Delta table), or a feature_store_spec.")
    elif len(sources) > 1:
        problems.add("run_ml_workflow", "give one data source: data_spec or feature_store_spec, "
                     "not both.")
    if data is not None:
        if data.label is None:
            problems.add("data_spec", "missing required key 'label' (the column to predict).")
        elif data.label in feature_columns(features):
            problems.add("feature_specs", f"the label column {data.label!r} is also a feature; "
                         "remove it from feature_specs (it would leak the answer).")
        if data.columns is not None and features:
            for column in feature_columns(features):
                if column not in data.columns:
                    problems.add("data_spec.columns", f"feature column {column!r} is not among "
                                 "the projected columns; add it to data_spec.columns"
                                 f"{did_you_mean(column, data.columns)}.")
    weights = check_sample_weight_spec(
        from_data=getattr(data, "sample_weight", None), from_call=sample_weight,
        estimator_class=model.estimator_class() if model is not None else None,
        estimator_name=getattr(model, "estimator", None),
        label=data.label if data is not None else getattr(
            getattr(feature_store, "labels", None), "label", None),
        features=feature_columns(features), projected=getattr(data, "columns", None),
        has_source=bool(sources), problems=problems)
    problems.raise_if_any()
    return WorkflowSpecs(features=features, model=model, validation=validation, data=data,
                         tuning=tuning, calibration=calibration, mlflow=mlflow,
                         promotion=promotion, feature_store=feature_store, threshold=threshold,
                         explain=explain, sample_weight=weights)
