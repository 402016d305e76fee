"""Batch scoring: a Delta table in, a Delta table of predictions out, idempotently.

:func:`score_table` loads an MLflow model (a run/artifact URI, ``models:/name/N``
or ``models:/name@alias``), scores a Delta table on the cluster with
:func:`mlflow.pyfunc.spark_udf`, and appends the predictions to a Delta table
together with the model's URI, name and version, the input table's version and
the scoring time.

What is checked before anything is read or written
-------------------------------------------------
* the model exists and loads (a missing model or version is a :class:`ModelNotFoundError`);
* it has an input signature;
* every required signature column is in the table (:class:`~orchestrator.errors.MissingColumnError`,
  with did-you-mean);
* every column's Spark type can be safely cast to its signature type
  (:class:`SchemaMismatchError`, listing every mismatch at once).

Any of these failures writes nothing. A failure while the write runs (an
executor error in the model) writes nothing either: a Delta commit is atomic.

Idempotency
-----------
The append uses Delta's idempotent writes: ``txnAppId`` names the pair
(input table, pinned model) and ``txnVersion`` is the input table's version.
Re-running the same job for the same input version is a no-op (Delta skips
the commit); a new input version, or a different model version, appends new
rows. Scoring an *older* input version than one already scored with the same
model is skipped too (Delta only moves a transaction's version forward).

Probabilities
-------------
The logged models predict labels through pyfunc (``pyfunc_predict_fn="predict"``,
see :mod:`orchestrator.tracking`). For a classifier the job also asks pyfunc
for ``predict_proba`` through a second ``spark_udf`` over the same downloaded
model, whose ``MLmodel`` file names ``predict_proba`` as the pyfunc method
(MLflow's sklearn flavor supports it; the skops file and its trusted types are
untouched). The probabilities are written as a ``map<string, double>`` keyed by
class label, so the table's schema does not depend on the classes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from orchestrator.errors import (
    DataError,
    MissingColumnError,
    MissingTableError,
    ModelNotFoundError,
    SchemaMismatchError,
    ScoringError,
)
from orchestrator.io.delta import (
    column,
    delta_table_for_name,
    delta_table_for_path,
    is_delta_table,
    latest_version,
    read_version,
    spark_error_message,
    spark_errors,
)
from orchestrator.io.progress import spark_progress
from orchestrator.specs.source import TableSource

logger = logging.getLogger(__name__)

__all__ = [
    "ScoringError",
    "ModelNotFoundError",
    "SchemaMismatchError",
    "ScoringModel",
    "ScoringResult",
    "TableSource",
    "score_table",
    "read_predictions",
    "load_scoring_model",
    "resolve_model_uri",
    "check_input_schema",
    "scoring_app_id",
    "OUTPUT_COLUMNS",
]

#: Columns the job adds to the kept input columns, in this order.
OUTPUT_COLUMNS = ("prediction", "probabilities", "model_uri", "model_name", "model_version",
                  "model_run_id", "input_table", "input_version", "scored_at")

_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[^/]+)$")

# Signature type -> Spark types that cast to it without losing information.
_SAFE_CASTS = {
    "long": {"long", "integer", "short", "byte"},
    "integer": {"integer", "short", "byte"},
    # long (beyond 2**53) and decimal values do not all fit a double exactly.
    "double": {"double", "float", "integer", "short", "byte"},
    "float": {"float", "short", "byte"},
    "string": {"string", "varchar", "char"},
    "boolean": {"boolean"},
    "datetime": {"timestamp", "timestamp_ntz", "date"},
    "binary": {"binary"},
}
_SPARK_TARGET = {"long": "bigint", "integer": "int", "double": "double", "float": "float",
                 "string": "string", "boolean": "boolean", "datetime": "timestamp",
                 "binary": "binary"}


@dataclass(frozen=True)
class ScoringModel:
    """A model pinned for scoring and downloaded to the driver.

    Attributes
    ----------
    uri : str
        The URI as given (``models:/churn@champion``).
    pinned_uri : str
        What is scored: ``models:/name/<version>`` for registry URIs (an alias is
        resolved once, so a moving alias cannot change the model mid-job), else ``uri``.
    name, version, run_id : str or None
        Registry name and version, and the run that logged the model, when known.
    local_path : str
        The downloaded model directory.
    input_columns : list of (name, type, required)
        The signature's inputs.
    label_type : str
        Spark type of the ``prediction`` column.
    classes : list or None
        Class labels in ``predict_proba`` column order (classifiers only).
    """

    uri: str
    pinned_uri: str
    name: str | None
    version: str | None
    run_id: str | None
    local_path: str
    input_columns: tuple[tuple[str, str, bool], ...]
    label_type: str
    classes: tuple | None = None
    proba_path: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ScoringResult:
    """What a scoring run did.

    Attributes
    ----------
    output : str
        The prediction table (path or name).
    input : str
        The scored table.
    input_version : int
        The Delta version of the input that was scored.
    model_uri, model_name, model_version : str or None
        The pinned model.
    scored_at : datetime
        The scoring timestamp written to every row (UTC).
    rows_written : int
        Rows appended; 0 when skipped.
    skipped : bool
        True when this input version had already been scored with this model.
    output_version : int or None
        The prediction table's Delta version after the run.
    app_id : str
        The Delta ``txnAppId`` used.
    """

    output: str
    input: str
    input_version: int
    model_uri: str
    model_name: str | None
    model_version: str | None
    scored_at: datetime
    rows_written: int
    skipped: bool
    output_version: int | None
    app_id: str


# ----------------------------------------------------------------------------- model


def resolve_model_uri(uri: str, client) -> tuple[str, str | None, str | None]:
    """Pin a model URI: ``(pinned_uri, registered name, version)``.

    ``models:/name@alias`` and ``models:/name/N`` are looked up in the
    registry (``latest`` is the highest version); other URIs are returned as they are.

    Raises
    ------
    ModelNotFoundError
        The registered model, version or alias does not exist.
    """
    from mlflow.exceptions import MlflowException

    alias = _MODELS_ALIAS.match(uri)
    numbered = _MODELS_VERSION.match(uri)
    if not alias and not numbered:
        return uri, None, None
    name = (alias or numbered)["name"]
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias["alias"]).version
        elif numbered["version"] == "latest":
            versions = client.search_model_versions(_name_filter(name))
            if not versions:
                raise ModelNotFoundError(f"model {uri!r}: the registered model {name!r} has "
                                         "no versions.")
            version = max(int(v.version) for v in versions)
        else:
            version = client.get_model_version(name, numbered["version"]).version
    except MlflowException as exc:
        raise ModelNotFoundError(_registry_message(uri, name, client, exc)) from exc
    return f"models:/{name}/{version}", name, str(version)


def _name_filter(name: str) -> str:
    """An MLflow search filter for one registered model name, quoted for any name."""
    if "'" not in name:
        return f"name = '{name}'"
    if '"' not in name:
        return f'name = "{name}"'
    raise ModelNotFoundError(f"registered model name {name!r}: a name with both kinds of "
                             "quotes cannot be searched in the MLflow registry; rename it.")


def _registry_message(uri: str, name: str, client, exc) -> str:
    from mlflow.exceptions import MlflowException

    try:
        versions = sorted(int(v.version) for v in client.search_model_versions(_name_filter(name)))
    except MlflowException:
        versions = []
    if not versions:
        return (f"model {uri!r}: no registered model {name!r} in the registry at "
                f"{_registry_uri()} ({exc.message.splitlines()[0]}).")
    return (f"model {uri!r}: not found in the registry at {_registry_uri()}; {name!r} has "
            f"versions {', '.join(map(str, versions))} ({exc.message.splitlines()[0]}).")


def _registry_uri() -> str:
    import mlflow

    return mlflow.get_registry_uri()


def load_scoring_model(uri: str, *, workdir: str | None = None) -> ScoringModel:
    """Resolve, download and check a model for :func:`score_table`.

    Parameters
    ----------
    uri : str
        ``runs:/<id>/model``, ``models:/name/N``, ``models:/name@alias``, a local
        path or any artifact URI MLflow can download.
    workdir : str, optional
        Where to download it (default: a new temporary directory).

    Returns
    -------
    ScoringModel

    Raises
    ------
    ModelNotFoundError
        Nothing at the URI, or the registry has no such model/version/alias.
    ScoringError
        The model has no pyfunc flavor, no input signature, or does not load.

    Examples
    --------
    >>> model = load_scoring_model("models:/churn@champion")  # doctest: +SKIP
    >>> model.version, model.classes  # doctest: +SKIP
    ('3', (0, 1))
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    pinned, name, version = resolve_model_uri(uri, mlflow.MlflowClient())
    target = workdir or tempfile.mkdtemp(prefix="orchestrator-score-")
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=os.path.join(
            target, "model"))
    except (MlflowException, OSError) as exc:
        raise ModelNotFoundError(f"model {uri!r}: cannot download it ({_first_line(exc)}). "
                                 "Check the URI (runs:/<run_id>/model, models:/name/<version>, "
                                 "models:/name@alias) and the tracking/registry URI "
                                 f"({mlflow.get_tracking_uri()}).") from exc
    if not os.path.isfile(os.path.join(local, "MLmodel")):
        raise ModelNotFoundError(f"model {uri!r}: {local} has no MLmodel file; it is not an "
                                 "MLflow model (point to the model directory, e.g. runs:/<id>/model).")
    meta = Model.load(local)
    if "python_function" not in meta.flavors:
        raise ScoringError(f"model {uri!r}: no python_function flavor, so spark_udf cannot "
                           "score it.")
    signature = meta.signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        raise ScoringError(f"model {uri!r}: the model has no named input signature; batch "
                           "scoring needs one to pick and check the table's columns. Log the "
                           "model with a signature (orchestrator's tracking step always does).")
    inputs = tuple((spec.name, _signature_type(spec), bool(getattr(spec, "required", True)))
                   for spec in signature.inputs.inputs)
    try:
        raw = mlflow.pyfunc.load_model(local).get_raw_model()
    except (MlflowException, OSError, ValueError, TypeError, ImportError) as exc:
        raise ScoringError(f"model {uri!r}: it does not load ({_first_line(exc)}).") from exc
    classes = getattr(raw, "classes_", None) if hasattr(raw, "predict_proba") else None
    label_type = _label_spark_type(signature, classes)
    proba_path = None
    if classes is not None:
        proba_path = _proba_copy(local, os.path.join(target, "model_proba"))
    return ScoringModel(uri=uri, pinned_uri=pinned, name=name, version=version,
                        run_id=meta.run_id, local_path=local, input_columns=inputs,
                        label_type=label_type,
                        classes=tuple(_python_scalar(c) for c in classes) if classes is not None else None,
                        proba_path=proba_path)


def _signature_type(spec) -> str:
    dtype = getattr(spec, "type", None)
    name = getattr(dtype, "name", None)
    return str(name) if name else str(dtype)


def _label_spark_type(signature, classes) -> str:
    outputs = signature.outputs
    if outputs is not None and len(outputs.inputs) == 1:
        kind = _signature_type(outputs.inputs[0])
        if kind in _SPARK_TARGET:
            return _SPARK_TARGET[kind]
    if classes is not None:
        import numpy as np

        values = np.asarray(classes)
        if values.dtype.kind in "iu":
            return "bigint"
        if values.dtype.kind == "b":
            return "boolean"
        if values.dtype.kind == "f":
            return "double"
        return "string"
    return "double"


def _proba_copy(local: str, target: str) -> str:
    """A copy of the model directory whose pyfunc method is ``predict_proba``."""
    from mlflow.models import Model

    shutil.copytree(local, target)
    meta = Model.load(target)
    meta.flavors["python_function"]["predict_fn"] = "predict_proba"
    meta.signature = None  # the label signature does not describe probabilities' output
    meta.save(os.path.join(target, "MLmodel"))
    # The input signature still guards the inputs: the columns are cast to it before scoring.
    return target


def _python_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


# ----------------------------------------------------------------------------- input


def check_input_schema(columns: Sequence[tuple[str, str]],
                       inputs: Sequence[tuple[str, str, bool]], *, where: str) -> list[str]:
    """Check a table's ``(column, spark type)`` list against a signature's inputs.

    Pure: no Spark. Spark types are simple type names (``df.schema[c].dataType.typeName()``).

    Returns
    -------
    list of str
        The signature columns present in the table, in signature order.

    Raises
    ------
    MissingColumnError
        A required signature column is not in the table.
    SchemaMismatchError
        A column's type cannot be cast to the signature's without loss.

    Examples
    --------
    >>> check_input_schema([("age", "integer")], [("age", "long", True)], where="t")
    ['age']
    """
    types = dict(columns)
    missing = [name for name, _, required in inputs if required and name not in types]
    if missing:
        raise MissingColumnError(missing, [name for name, _ in columns], where=where)
    mismatches = []
    present = []
    for name, expected, _ in inputs:
        if name not in types:
            continue
        present.append(name)
        actual = types[name]
        allowed = _SAFE_CASTS.get(expected)
        if allowed is None or actual.split("(")[0] not in allowed:
            mismatches.append((name, expected, actual))
    if mismatches:
        raise SchemaMismatchError(mismatches, where=where)
    return present


def scoring_app_id(input_location: str, pinned_model_uri: str) -> str:
    """The Delta ``txnAppId`` of scoring ``input_location`` with one pinned model.

    Examples
    --------
    >>> scoring_app_id("/data/x", "models:/m/1") == scoring_app_id("/data/x", "models:/m/1")
    True
    """
    digest = hashlib.sha256(f"{input_location}\n{pinned_model_uri}".encode()).hexdigest()[:24]
    return f"orchestrator-score-{digest}"


def _open_delta(spark, ref: TableSource, *, what: str):
    """The DeltaTable at ``ref`` (its SQL stand-in on Spark Connect), or None when nothing is there."""
    try:
        if ref.path is not None:
            if not is_delta_table(spark, ref.path):
                return None
            return delta_table_for_path(spark, ref.path)
        if not spark.catalog.tableExists(ref.table):
            return None
        return delta_table_for_name(spark, ref.table)
    except spark_errors() as exc:
        raise DataError(f"{what} {ref.location!r}: cannot open it as a Delta table: "
                        f"{spark_error_message(exc)}") from exc


# ----------------------------------------------------------------------------- scoring


def score_table(spark, model_uri: str, input_table: str | TableSource,
                output_table: str | TableSource,
                *, input_version: int | None = None,
                keep_columns: Sequence[str] | str | None = None,
                model: ScoringModel | None = None) -> ScoringResult:
    """Score a Delta table with an MLflow model and append the predictions to a Delta table.

    Parameters
    ----------
    spark : SparkSession
    model_uri : str
        ``runs:/<id>/model``, ``models:/name/N``, ``models:/name@alias`` or a path.
    input_table, output_table : str or TableSource
        A path (contains ``/``) or a metastore table name. The output is created
        on the first run.
    input_version : int, optional
        The input's Delta version to score (default: the latest).
    keep_columns : sequence of str or str, optional
        Input columns copied to the output (default: all of them); keep the
        row key here. A string is split on commas.
    model : ScoringModel, optional
        An already loaded model (from :func:`load_scoring_model`) for ``model_uri``.

    Returns
    -------
    ScoringResult
        ``skipped`` is True when this input version was already scored with
        this model (nothing appended).

    Raises
    ------
    ModelNotFoundError, ScoringError
        The model is missing, unsigned or does not load; or the scoring write failed.
    MissingTableError
        The input table does not exist.
    MissingColumnError
        A required signature column (or a ``keep_columns`` entry) is not in the input.
    SchemaMismatchError
        Input types cannot be cast to the signature's without loss.

    Examples
    --------
    >>> result = score_table(spark, "models:/churn@champion", "/data/customers",  # doctest: +SKIP
    ...                      "/data/churn_predictions", keep_columns=["customer_id"])
    >>> result.rows_written, result.model_version  # doctest: +SKIP
    (5000, '3')
    """
    source = (input_table if isinstance(input_table, TableSource)
           else TableSource.from_text(input_table, where='input_table'))
    target = (output_table if isinstance(output_table, TableSource)
           else TableSource.from_text(output_table, where='output_table'))
    if model is not None:
        return _score(spark, model, source, target, input_version, keep_columns)
    model = load_scoring_model(model_uri)
    try:
        return _score(spark, model, source, target, input_version, keep_columns)
    finally:
        # spark_udf keeps its own copy; the download is ours to remove.
        shutil.rmtree(os.path.dirname(model.local_path), ignore_errors=True)


def _score(spark, model: ScoringModel, source: TableSource, target: TableSource,
           input_version: int | None, keep_columns) -> ScoringResult:
    from pyspark.sql import functions as F

    where = f"score input {source.location!r}"

    table = _open_delta(spark, source, what="score input")
    if table is None:
        raise MissingTableError(f"{where}: no Delta table there; write the table first or "
                                "check the path/name.")
    latest = latest_version(table)
    version = latest if input_version is None else int(input_version)
    if version < 0 or version > latest:
        raise DataError(f"{where}: version {version} does not exist; the latest is {latest}.")
    frame = read_version(spark, source, version)
    fields = [(f.name, f.dataType.typeName()) for f in frame.schema.fields]
    present = check_input_schema(fields, model.input_columns, where=where)
    if isinstance(keep_columns, str):
        keep_columns = [c.strip() for c in keep_columns.split(",") if c.strip()]
    kept = list(frame.columns) if not keep_columns else list(keep_columns)
    absent = [c for c in kept if c not in frame.columns]
    if absent:
        raise MissingColumnError(absent, frame.columns, where=f"{where} (keep_columns)")
    clashes = [c for c in kept if c in OUTPUT_COLUMNS]
    if clashes:
        raise DataError(f"{where}: input column(s) {', '.join(clashes)} would clash with the "
                        f"prediction table's own columns; leave them out of keep_columns.")

    scored_at = datetime.now(timezone.utc).replace(microsecond=0)
    app_id = scoring_app_id(source.location, model.pinned_uri)
    scored = _scored_frame(spark, frame, model, present, kept, source, version, scored_at)

    # A token unique to this write finds our own commit in the history afterwards, even
    # when another writer commits to the table at the same time.
    token = f"{app_id}:{version}:{uuid.uuid4().hex}"
    writer = (scored.write.format("delta").mode("append")
              .option("txnAppId", app_id).option("txnVersion", version)
              .option("userMetadata", token))
    logger.info("Scoring %s (version %d) with %s into %s", source.location, version,
                model.pinned_uri, target.location)
    for attempt in (1, 2):
        try:
            # The model runs on every row here, in one action: on a large table, minutes.
            with spark_progress(spark, f"scoring {source.location}"):
                if target.path is not None:
                    writer.save(target.path)
                else:
                    writer.saveAsTable(target.table)
            break
        except spark_errors() as exc:
            # Another job committed first (e.g. the same input and model scored at the same
            # time): write again, and Delta's transaction check skips what is already there.
            if attempt == 1 and _is_write_conflict(exc):
                logger.info("Concurrent commit to %s; retrying once", target.location)
                continue
            raise ScoringError(f"scoring {source.location!r} into {target.location!r} failed; "
                               f"nothing was written: {spark_error_message(exc)}") from exc
    after = _open_delta(spark, target, what="prediction table")
    commit = None if after is None else (
        after.history().where(F.col("userMetadata") == F.lit(token))
        .select("version", "operationMetrics").first())
    skipped = commit is None
    rows = 0 if skipped else int((commit["operationMetrics"] or {}).get("numOutputRows", 0))
    version_after = (latest_version(after) if after is not None else None) if skipped \
        else int(commit["version"])
    if skipped:
        logger.info("Skipped: %s version %d was already scored with %s (txnAppId %s)",
                    source.location, version, model.pinned_uri, app_id)
    else:
        logger.info("Wrote %d predictions to %s (version %s)", rows, target.location,
                    version_after)
    return ScoringResult(output=target.location, input=source.location, input_version=version,
                         model_uri=model.pinned_uri, model_name=model.name,
                         model_version=model.version, scored_at=scored_at, rows_written=rows,
                         skipped=skipped, output_version=version_after, app_id=app_id)


def _is_write_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in ("DELTA_CONCURRENT", "ConcurrentTransaction",
                                             "ConcurrentAppend", "ProtocolChanged",
                                             "MetadataChanged"))


def read_predictions(spark, output_table: str | TableSource, *, input_version: int | None = None,
                     model_version: str | None = None):
    """The prediction table as a Spark DataFrame, optionally one scoring run's rows.

    Parameters
    ----------
    spark : SparkSession
    output_table : str or TableSource
        The prediction table (path or name).
    input_version : int, optional
        Only rows scored from this input version.
    model_version : str, optional
        Only rows scored by this registered model version.

    Returns
    -------
    pyspark.sql.DataFrame

    Raises
    ------
    MissingTableError
        No Delta table there.
    """
    from pyspark.sql import functions as F

    ref = (output_table if isinstance(output_table, TableSource)
           else TableSource.from_text(output_table, where='output_table'))
    if _open_delta(spark, ref, what="prediction table") is None:
        raise MissingTableError(f"prediction table {ref.location!r}: no Delta table there.")
    frame = (spark.read.format("delta").load(ref.path) if ref.path is not None
             else spark.read.table(ref.table))
    if input_version is not None:
        frame = frame.where(F.col("input_version") == int(input_version))
    if model_version is not None:
        frame = frame.where(F.col("model_version") == str(model_version))
    return frame


def _scored_frame(spark, frame, model: ScoringModel, present: list[str], kept: list[str],
                  source: TableSource, version: int, scored_at: datetime):
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    types = {name: kind for name, kind, _ in model.input_columns}
    # Lossless casts to the signature's types, so pyfunc's schema enforcement sees exact dtypes.
    features = F.struct(*[column(name).cast(_SPARK_TARGET[types[name]]).alias(name)
                          for name in present])
    predict = mlflow.pyfunc.spark_udf(spark, model.local_path, result_type=model.label_type,
                                      env_manager="local")
    columns = [column(c) for c in kept] + [predict(features).alias("prediction")]
    if model.classes is not None:
        predict_proba = mlflow.pyfunc.spark_udf(spark, model.proba_path,
                                                result_type="array<double>", env_manager="local")
        labels = F.array(*[F.lit(str(c)) for c in model.classes])
        columns.append(F.map_from_arrays(labels, predict_proba(features)).alias("probabilities"))
    else:
        columns.append(F.lit(None).cast("map<string,double>").alias("probabilities"))
    columns += [
        F.lit(model.uri).alias("model_uri"),
        F.lit(model.name).cast("string").alias("model_name"),
        F.lit(model.version).cast("string").alias("model_version"),
        F.lit(model.run_id).cast("string").alias("model_run_id"),
        F.lit(source.location).alias("input_table"),
        F.lit(version).cast("bigint").alias("input_version"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    ]
    return frame.select(*columns)
