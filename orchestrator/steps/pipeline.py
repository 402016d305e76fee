"""Building the scikit-learn Pipeline (preprocessing + model) from specs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from orchestrator.specs import FeatureSpec, ModelSpec, Problems, did_you_mean
from orchestrator.specs.features import parse_feature_specs
from orchestrator.specs.model import estimator_param_names, parse_model_spec

logger = logging.getLogger(__name__)

PREPROCESS_STEP = "preprocess"
MODEL_STEP = "model"


def transformer_name(spec: FeatureSpec, index: int) -> str:
    """Name of a feature spec's transformer inside the ColumnTransformer, e.g. ``numeric_0``.

    Tuning addresses preprocessing parameters through it:
    ``preprocess__numeric_0__scaler__with_mean``.
    """
    return f"{spec.type}_{index}"


def _numeric_steps(spec: FeatureSpec) -> list[tuple[str, Any]]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    imputer = SimpleImputer(strategy=spec.impute or "median", fill_value=spec.fill_value,
                            keep_empty_features=True)
    steps: list[tuple[str, Any]] = [("imputer", imputer)]
    scalers = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
    if spec.scale in scalers:
        steps.append(("scaler", scalers[spec.scale]()))
    return steps


def _categorical_steps(spec: FeatureSpec) -> list[tuple[str, Any]]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    from orchestrator.steps.transformers import CategoryToString

    fill_value = None if spec.fill_value is None else str(spec.fill_value)
    imputer = SimpleImputer(strategy=spec.impute or "most_frequent", fill_value=fill_value,
                            keep_empty_features=True)
    if spec.encode == "ordinal":
        # Unseen categories become -1 instead of failing at predict time.
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                 max_categories=spec.max_categories)
    elif spec.max_categories is not None:
        # Rare and unseen categories share the "infrequent" column.
        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist",
                                max_categories=spec.max_categories)
    else:
        encoder = OneHotEncoder(handle_unknown="ignore")
    return [("to_string", CategoryToString()), ("imputer", imputer), ("encoder", encoder)]


def _boolean_steps(spec: FeatureSpec) -> list[tuple[str, Any]]:
    from sklearn.impute import SimpleImputer

    from orchestrator.steps.transformers import BooleanToFloat

    fill = 0.0 if spec.fill_value is None else float(bool(spec.fill_value))
    return [("to_float", BooleanToFloat()),
            ("imputer", SimpleImputer(strategy=spec.impute or "most_frequent", fill_value=fill,
                                      keep_empty_features=True))]


def _text_steps(spec: FeatureSpec) -> list[tuple[str, Any]]:
    from orchestrator.steps.transformers import TextColumns

    return [("vectorizer", TextColumns(method=spec.method, max_features=spec.max_features,
                                       ngram_max=spec.ngram_max, lowercase=spec.lowercase))]


def _datetime_steps(spec: FeatureSpec) -> list[tuple[str, Any]]:
    from sklearn.impute import SimpleImputer

    from orchestrator.steps.transformers import DatetimeParts

    return [("parts", DatetimeParts(parts=tuple(spec.parts))),
            ("imputer", SimpleImputer(strategy="median", keep_empty_features=True))]


_STEP_BUILDERS = {
    "numeric": _numeric_steps,
    "categorical": _categorical_steps,
    "boolean": _boolean_steps,
    "text": _text_steps,
    "datetime": _datetime_steps,
}


def build_preprocessor(feature_specs: Sequence[FeatureSpec]):
    """A ColumnTransformer with one named sub-pipeline per feature spec; other columns dropped."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    transformers = []
    for index, spec in enumerate(feature_specs):
        steps = _STEP_BUILDERS[spec.type](spec)
        transformers.append((transformer_name(spec, index), Pipeline(steps), list(spec.columns)))
    has_text = any(spec.type == "text" for spec in feature_specs)
    # Dense output unless text makes the matrix wide and sparse.
    return ColumnTransformer(transformers, remainder="drop",
                             sparse_threshold=0.3 if has_text else 0.0,
                             verbose_feature_names_out=True)


def build_ml_pipeline(feature_specs: Any, model_spec: Any, *, model_params: dict | None = None):
    """Build the unfitted scikit-learn Pipeline for the specs.

    Parameters
    ----------
    feature_specs : list of dict or FeatureSpec
        As in YAML, e.g. ``[{"name": "age", "type": "numeric"}]``.
    model_spec : dict or ModelSpec
        E.g. ``{"estimator": "random_forest", "params": {"n_estimators": 200}}``.
    model_params : dict, optional
        Parameters that override the model spec's (tuned values, say).

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``preprocess`` (a ColumnTransformer with one ``<type>_<index>``
        transformer per feature spec; unnamed columns are dropped) and ``model``.

    Raises
    ------
    SpecError
        When a spec is invalid, listing every problem.

    Examples
    --------
    >>> pipe = build_ml_pipeline([{"name": "age", "type": "numeric"}],
    ...                          {"estimator": "logistic_regression"})
    >>> [name for name, _ in pipe.steps]
    ['preprocess', 'model']
    """
    from sklearn.pipeline import Pipeline

    problems = Problems()
    features = parse_feature_specs(feature_specs, problems)
    model = model_spec if isinstance(model_spec, ModelSpec) else parse_model_spec(model_spec,
                                                                                problems)
    if model is not None and model_params:
        known = estimator_param_names(model.estimator_class())
        for key in model_params:
            if key not in known:
                problems.add("model_params", f"{model.estimator_class().__name__} has no "
                             f"parameter {key!r}{did_you_mean(key, known)}.")
    problems.raise_if_any()
    estimator = model.make_estimator(**(model_params or {}))
    return Pipeline([(PREPROCESS_STEP, build_preprocessor(features)), (MODEL_STEP, estimator)])


def search_space_problems(pipeline, tuning_spec) -> list[str]:
    """Search-space keys that are not parameters of ``pipeline``, as spec problems.

    Checked when a job is validated (the pipeline is built from the specs, no data
    needed), so a misspelt ``preprocess__...`` name is refused before any Spark
    starts instead of degrading the tuning step at run time.

    Examples
    --------
    >>> search_space_problems(pipeline, tuning)  # doctest: +SKIP
    ["tuning_spec.search_space: 'preprocess__num_0__scaler__with_mean' is not ..."]
    """
    if tuning_spec is None:
        return []
    available = pipeline.get_params(deep=True)
    candidates = [name for name in available if "__" in name]
    problems = []
    for key, name in tuning_spec.pipeline_params().items():
        if name not in available:
            problems.append(f"tuning_spec.search_space: {key!r} is not a parameter of the "
                            f"pipeline{did_you_mean(name, candidates)}.")
    return problems
