"""Logging the fitted model: skops with declared trusted types, a signature, the registry.

The model becomes a LoggedModel of the run's own experiment through the run's
client, so ``runs:/<run_id>/model`` resolves and no global tracking or
registry URI is read. It is never pickled.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import ModelLoggingError
from orchestrator.results import WorkflowResult, as_workflow_result
from orchestrator.tracking.params import library_versions, yaml_safe
from orchestrator.tracking.uri import tracking_errors

logger = logging.getLogger(__name__)

__all__ = ["MODEL_NAME", "find_pipeline", "log_model", "to_model_input", "trusted_model_types"]


MODEL_NAME = "model"


# Types the skops format may contain without the user declaring them: this package's own
# transformers and calibration procedure, scikit-learn's private helpers (trees, calibrators),
# and numpy dtypes. Anything else must be listed in mlflow_spec.trusted_types.
BUILTIN_TRUSTED_PREFIXES = ("orchestrator.", "sklearn.")


# xgboost's and lightgbm's scikit-learn estimators and their boosters: skops rebuilds a booster
# through its own __setstate__, which loads the library's native model format (xgboost's
# serialized buffer, lightgbm's model string), never a pickle. Exact names only: no other type
# of those packages is trusted. Checked with xgboost 3.2 and lightgbm 4.7 (tests/test_ml_breadth.py
# loads both back and compares predictions).
BUILTIN_TRUSTED_TYPES = ("numpy.dtype",
                         "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier",
                         "xgboost.sklearn.XGBRegressor",
                         "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier",
                         "lightgbm.sklearn.LGBMRegressor",
                         # lightgbm keeps its params in an OrderedDict.
                         "collections.OrderedDict")


# A library whose types appear in the model is pinned in the model's requirements.
_PIP_NAMES = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm"}


def to_model_input(X):
    """The frame the logged model's signature describes: what pyfunc expects.

    pandas nullable columns are cast to what Spark and JSON requests deliver:
    nullable integers and floats (``Int64``, ``Float32``, ...) become
    ``float64`` with NaN, nullable booleans and ``string`` columns become
    ``object`` with None. Other columns are unchanged; the input is not
    modified. MLflow's signature inference and schema enforcement cannot
    handle the nullable extension types. Plain ``int64`` columns stay
    integers (``long`` in the signature, as JSON requests send them); a
    feature that may be missing when scoring should be nullable or float in
    the training frame.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"age": pd.array([1, None], dtype="Int64")})
    >>> to_model_input(frame)["age"].dtype
    dtype('float64')
    """
    import pandas as pd

    out = X.copy()
    for column in out.columns:
        dtype = out[column].dtype
        if isinstance(dtype, (pd.BooleanDtype, pd.StringDtype)):
            values = out[column].astype(object)
            out[column] = values.where(out[column].notna(), None)
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iuf":
            out[column] = out[column].astype("float64")
    return out


def trusted_model_types(model, extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Split the types of a skops-serialized model into trusted and untrusted.

    Trusted: this package's own types, scikit-learn's, numpy dtypes, and the
    names in ``extra`` (exact, or ``package.*`` for a whole package).

    Returns
    -------
    trusted, untrusted : list of str
        ``untrusted`` must be empty to log the model.
    """
    import skops.io

    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    prefixes = BUILTIN_TRUSTED_PREFIXES + tuple(name[:-1] for name in extra
                                                if name.endswith(".*"))
    exact = set(BUILTIN_TRUSTED_TYPES) | {name for name in extra if not name.endswith(".*")}
    trusted = [name for name in found if name in exact or name.startswith(prefixes)]
    untrusted = [name for name in found if name not in trusted]
    return trusted, untrusted


def _pip_requirements(type_names: list[str]) -> list[str]:
    from importlib import metadata

    packages = ["mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy"]
    for name in type_names:
        top = name.split(".")[0]
        if top in _PIP_NAMES and _PIP_NAMES[top] not in packages:
            packages.append(_PIP_NAMES[top])
    if "xgboost" in packages:
        # The CPU-only wheel (xgboost-cpu) provides the same module without the CUDA libraries.
        try:
            metadata.version("xgboost")
        except metadata.PackageNotFoundError:
            packages[packages.index("xgboost")] = "xgboost-cpu"
    pinned = []
    for package in packages:
        try:
            pinned.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pinned.append(package)
    return pinned


def find_pipeline(model, depth: int = 0):
    """The fitted sklearn Pipeline inside ``model``: itself, or inside a calibration wrapper.

    Fitted attributes (``calibrator_``, ``calibrated_classifiers_``, ...) are
    searched before constructor parameters, which hold unfitted templates.
    """
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if model is None or depth > 5:
        return None
    if hasattr(model, "named_steps"):
        try:
            check_is_fitted(model)
        except (NotFittedError, TypeError):
            return None
        return model
    inner = [getattr(model, name, None) for name in
             ("pipeline_", "calibrator_", "estimator_", "best_estimator_")]
    inner += list(getattr(model, "calibrated_classifiers_", None) or [])[:1]
    inner += [getattr(model, name, None) for name in ("estimator", "base_estimator", "model")]
    for candidate in inner:
        if candidate is not None and candidate is not model:
            found = find_pipeline(candidate, depth + 1)
            if found is not None:
                return found
    return None


def log_model(tracker, results: WorkflowResult | Mapping[str, Any], X_sample) -> dict[str, Any]:
    """Log the model as a LoggedModel of this run's experiment, then register it.

    Everything goes through this run's client: ``mlflow.sklearn.log_model``
    would create the LoggedModel in the process's *active* experiment
    (Default, unless something set one globally), where ``runs:/<run_id>/model``
    does not look, and would read the global tracking and registry URIs.
    """
    import mlflow.sklearn
    from mlflow.models import Model, infer_signature

    results = as_workflow_result(results)
    model = results.pipeline
    trusted, untrusted = trusted_model_types(model, tracker.spec.trusted_types)
    if untrusted:
        raise ModelLoggingError(
            "MLflow tracking: the model contains types that are not trusted for safe "
            f"(skops) loading: {', '.join(untrusted)}. If you trust them, list them in "
            "mlflow_spec.trusted_types (e.g. 'xgboost.*'); the model is not pickled instead.")
    sample = to_model_input(X_sample)
    signature = infer_signature(sample, model.predict(sample))
    if signature is None or signature.inputs is None:
        raise ModelLoggingError("MLflow tracking: no model signature could be inferred from "
                                f"the sample columns {list(sample.columns)}.")
    metadata = {"orchestrator_version": library_versions()["lib.orchestrator"],
                "task": str(results.task or "")}
    classes = getattr(model, "classes_", None)
    if classes is not None:
        metadata["classes"] = [yaml_safe(c) for c in classes]
        metadata["probability_method"] = "get_raw_model().predict_proba"
    client = tracker.client()
    logged_model = _create_logged_model(tracker, client)
    saved = False
    try:
        with tempfile.TemporaryDirectory(prefix="orchestrator-model-") as tmp:
            local_path = Path(tmp) / MODEL_NAME
            mlflow_model = Model(artifact_path=logged_model.artifact_location,
                                 model_uuid=logged_model.model_id, run_id=tracker.run_id,
                                 metadata=metadata, model_id=logged_model.model_id)
            # Writes MLmodel, the skops file, requirements, input_example.json and
            # serving_input_example.json (what `mlflow models serve` accepts).
            mlflow.sklearn.save_model(
                model, str(local_path), mlflow_model=mlflow_model,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                skops_trusted_types=trusted or None,
                signature=signature,
                input_example=sample.head(5),
                pip_requirements=_pip_requirements(trusted),
                pyfunc_predict_fn="predict",
            )
            if mlflow_model.signature is None or mlflow_model.signature.inputs is None:
                raise ModelLoggingError("MLflow tracking: the saved model has no signature; "
                                        "it was not logged.")
            client.log_model_artifacts(logged_model.model_id, str(local_path))
        saved = True
    finally:
        if not saved:  # failed or interrupted: not left PENDING
            with contextlib.suppress(*tracking_errors()):
                client.finalize_logged_model(logged_model.model_id, "FAILED")
    client.finalize_logged_model(logged_model.model_id, "READY")
    model_uri = f"models:/{logged_model.model_id}"
    logged: dict[str, Any] = {"model_uri": model_uri}
    if tracker.spec.registered_model_name:
        version = _register(tracker, client, logged_model)
        logged.update(model_version=version,
                      registered_model_name=tracker.spec.registered_model_name)
        if tracker.spec.model_alias:
            client.set_registered_model_alias(tracker.spec.registered_model_name,
                                              tracker.spec.model_alias, version)
            logged["model_alias"] = tracker.spec.model_alias
        client.set_tag(tracker.run_id, "orchestrator.model_version",
                       f"{tracker.spec.registered_model_name}/{version}")
    logger.info("MLflow: model logged to %s (runs:/%s/%s)%s", model_uri, tracker.run_id,
                MODEL_NAME, f" (registered {tracker.spec.registered_model_name} "
                f"v{logged['model_version']})" if logged.get("model_version") else "")
    return logged


def _create_logged_model(tracker, client):
    """A PENDING LoggedModel named ``model`` in this run's experiment, linked to the run.

    The experiment is the run's, explicitly: ``runs:/<run_id>/model`` is
    resolved by searching the run's experiment for a model of that name
    whose source run is this one. Like ``log_model``, the model carries the
    run's params (already redacted) and is recorded as the run's output.
    """
    from mlflow.entities import LoggedModelOutput

    params = client.get_run(tracker.run_id).data.params
    logged_model = client.create_logged_model(
        experiment_id=tracker.experiment_id, name=MODEL_NAME, source_run_id=tracker.run_id,
        params={key: str(value) for key, value in params.items()})
    client.log_outputs(tracker.run_id, [LoggedModelOutput(logged_model.model_id, step=0)])
    return logged_model


def _register(tracker, client, logged_model) -> str:
    """Register the logged model as a new version; wait until it is READY.

    The source is the model's artifact location, not ``models:/<model_id>``:
    MLflow's sqlite/file registry resolves a ``models:/`` source through the
    process's *global* tracking URI (MLflow 3.17, a TODO in its store), which
    this package never sets.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        ALREADY_EXISTS,
        RESOURCE_ALREADY_EXISTS,
        ErrorCode,
    )

    name = tracker.spec.registered_model_name
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        # Existing already (an earlier run, or a concurrent job): add a version to it.
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
                                  ErrorCode.Name(ALREADY_EXISTS)):
            raise
    version = client.create_model_version(
        name, source=logged_model.artifact_location, run_id=tracker.run_id,
        model_id=logged_model.model_id,
        await_creation_for=max(1, math.ceil(tracker.spec.timeout_s)))
    return str(version.version)
