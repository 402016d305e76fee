"""The workflow: the eight steps users were promised, in order.

1 data loading, 2 pipeline construction, 3 tuning (optional), 4 training,
5 calibration (optional), 6 validation, 7 MLflow logging (optional), 8 results.

Optional steps degrade: when one raises, :func:`_degrade` (the one deliberate
broad catch) logs a warning, records the reason in ``results.warnings``
and the workflow goes on without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import (
    DataError,
    MissingColumnError,
    OrchestratorError,
    SpecError,
    StepError,
)
from orchestrator.results import WorkflowResult
from orchestrator.specs import WorkflowSpecs, parse_specs
from orchestrator.specs.features import feature_columns

logger = logging.getLogger(__name__)

_BINARY_ONLY_METRICS = ("roc_auc", "average_precision", "f1", "precision", "recall",
                        "neg_brier_score")


@contextlib.contextmanager
def _step(number: int, name: str, results: WorkflowResult) -> Iterator[None]:
    """Log one line when a step starts and one when it ends, with its duration."""
    logger.info("Step %d/8 %s: started", number, name)
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        results.timings[name] = round(elapsed, 3)
        logger.info("Step %d/8 %s: finished in %.2f s", number, name, elapsed)


def _degrade(step: str, results: WorkflowResult, action: Callable[[], Any]) -> tuple[bool, Any]:
    """Run an optional step: (True, its value), or on failure warn, record why, and
    return (False, the :class:`StepWarning`)."""
    try:
        return True, action()
    except Exception as exc:  # noqa: BLE001 - optional steps must never stop the workflow
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("%s failed; the workflow continues without it. Reason: %s", step, reason)
        return False, results.warn(step, reason)


def _check_in_memory_data(X, y, columns: list[str]):
    import numpy as np
    import pandas as pd

    if not isinstance(X, pd.DataFrame):
        raise SpecError([f"run_ml_workflow.X: expected a pandas DataFrame with the feature "
                         f"columns, got {type(X).__name__}."])
    if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
        y = y.iloc[:, 0]
    values = np.asarray(y) if isinstance(y, (pd.Series, list, tuple, np.ndarray)) else None
    if values is None or values.ndim != 1:
        raise SpecError([f"run_ml_workflow.y: expected one label per row (a pandas Series, "
                         f"list or 1-D array), got {type(y).__name__}"
                         f"{'' if values is None else f' with shape {values.shape}'}."])
    if len(values) != len(X):
        raise DataError(f"run_ml_workflow: X has {len(X)} rows but y has {len(values)}; they "
                        "must have one label per row.")
    if isinstance(y, pd.Series) and not y.index.equals(X.index):
        raise DataError("run_ml_workflow: y's index differs from X's, so labels cannot be "
                        "paired with rows safely; reset both (X.reset_index(drop=True), "
                        "y.reset_index(drop=True)) or align them first.")
    # Paired by position: a list or array has no index of its own.
    y = pd.Series(values, index=X.index, name=getattr(y, "name", None))
    missing = [c for c in columns if c not in X.columns]
    from orchestrator.steps.data_checks import string_named_integer_columns

    renamed = string_named_integer_columns(missing, X.columns)
    if renamed:
        raise DataError(f"X: feature_specs name the column{'s' if len(renamed) > 1 else ''} "
                        f"{', '.join(map(repr, renamed))} as text but X's columns of that name "
                        "are not strings (e.g. the integer 0); give X string column names: "
                        "X.columns = X.columns.astype(str).")
    if missing:
        raise MissingColumnError(missing, [str(c) for c in X.columns], where="X")
    return X.loc[:, columns], y


def _check_labels(y, specs: WorkflowSpecs) -> tuple[str, list]:
    from orchestrator.steps.metrics import target_kind

    if y.isna().any():
        raise DataError(f"labels: {int(y.isna().sum())} of {len(y)} labels are missing; drop or "
                        "fill those rows before training (data_spec.filter can drop them).")
    if len(y) < 4:
        raise DataError(f"labels: only {len(y)} rows; the workflow needs at least 4.")
    task = specs.model.task
    if task == "regression":
        import pandas as pd

        if not pd.api.types.is_numeric_dtype(y):
            raise DataError(f"labels: a regression target must be numeric, got dtype {y.dtype}; "
                            "use a classifier or convert the label column.")
        return "regression", []
    classes = sorted(y.unique().tolist(), key=lambda c: (str(type(c)), c))
    if len(classes) < 2:
        raise DataError(f"labels: only one class ({classes[0]!r}) in the training rows; a "
                        "classifier needs at least two.")
    kind = target_kind(task, y)
    metric = specs.model.metric
    if kind == "multiclass" and metric in _BINARY_ONLY_METRICS:
        raise DataError(f"model_spec.metric: {metric!r} is for binary targets but the labels have "
                        f"{len(classes)} classes; use e.g. f1_macro, accuracy or roc_auc_ovr.")
    if specs.model.pos_label is not None and specs.model.pos_label not in classes:
        raise DataError(f"model_spec.pos_label: {specs.model.pos_label!r} is not one of the "
                        f"classes {classes}.")
    return kind, classes


def _load_data(specs: WorkflowSpecs, X, y, spark, results: WorkflowResult, weights=None):
    """(X, y, side, sample_weight): ``side`` holds the validation's grouping/ordering
    columns (None when there are none) and ``sample_weight`` the rows' checked weights
    (None without weights), both loaded with the rows but never features. ``weights`` is
    an array given to ``run_ml_workflow``."""
    columns = feature_columns(specs.features)
    weight = specs.sample_weight
    column = weight.column if weight is not None else None
    extra = [c for c in dict.fromkeys([*specs.validation.side_columns, column])
             if c is not None and c not in columns]
    X, y = _load_rows(specs, X, y, spark, results, [*columns, *extra])
    side = X.loc[:, list(specs.validation.side_columns)] if specs.validation.side_columns \
        else None
    sample_weight = None
    if weight is not None:
        from orchestrator.steps.weights import check_sample_weight_values

        where = ("data_spec.sample_weight" if specs.data is not None
                 and specs.data.sample_weight else "sample_weight")
        if column is not None:
            sample_weight = check_sample_weight_values(
                X[column], where=f"{where} (column {column!r})")
        else:
            import pandas as pd

            if isinstance(weights, pd.Series) and not weights.index.equals(X.index):
                raise DataError("run_ml_workflow.sample_weight: its index differs from X's, so "
                                "weights cannot be paired with rows safely; reset both or "
                                "align them first.")
            sample_weight = check_sample_weight_values(
                weights.to_numpy() if isinstance(weights, pd.Series) else weights,
                where="run_ml_workflow.sample_weight", rows=len(X))
        results.data["sample_weight"] = weight.description
    return X.loc[:, columns], y, side, sample_weight


def _load_rows(specs: WorkflowSpecs, X, y, spark, results: WorkflowResult, columns: list[str]):
    if X is not None:
        X, y = _check_in_memory_data(X, y, columns)
        results.data = {"source": "in-memory", "row_count": len(X), "columns": list(X.columns)}
        return X, y
    if specs.data is not None:
        from orchestrator.io.training_data import load_training_data

        loaded = load_training_data(_require_spark(spark, "data_spec"), specs.data,
                                    feature_columns=columns)
        results.data = dict(loaded.lineage)
        return loaded.X.loc[:, columns], loaded.y
    from orchestrator.io.feature_store import build_training_set

    loaded = build_training_set(_require_spark(spark, "feature_store_spec"), specs.feature_store,
                                feature_columns=columns,
                                extra_columns=specs.validation.side_columns)
    results.data = dict(loaded.lineage)
    return loaded.X.loc[:, columns], loaded.y


def _require_spark(spark, why: str):
    from orchestrator.io.session import active_session

    session, reason = active_session(spark)
    if session is None:
        raise StepError(f"{why} needs a SparkSession ({reason}): pass spark=..., create "
                        "one with orchestrator.io.session.get_spark(), or run the job with "
                        "`orchestrator run CONFIG`.")
    return session


def _active_spark(spark):
    """The given or active SparkSession, or None (tuning then runs on the driver)."""
    from orchestrator.io.session import active_session

    return active_session(spark)[0]


def _fit(estimator, X, y, what: str, sample_weight=None):
    from orchestrator.steps.weights import fit_weighted

    try:
        return fit_weighted(estimator, X, y, sample_weight)
    except OrchestratorError:
        raise  # already ours and explained (our errors are ValueErrors too)
    except (ValueError, TypeError) as exc:
        message = str(exc).replace("\n", " ")
        if "Unknown label type" in message:
            hint = ("The labels look continuous: set model_spec.task: regression with a "
                    "regressor, or use class labels.")
        else:
            hint = ("Check that each column's feature type in feature_specs matches its values "
                    "(numbers for numeric, dates for datetime).")
        raise StepError(f"{what} failed: {message}. {hint}") from exc


def _specs_as_dicts(value: Any) -> Any:
    """Specs as plain dicts and lists (for the results, the summary and MLflow)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _specs_as_dicts(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _specs_as_dicts(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_specs_as_dicts(v) for v in value]
    return value


def run_ml_workflow(feature_specs: Any, model_spec: Any, X: Any = None, y: Any = None, *,
                    validation_strategy: str = "cross_validation",
                    validation_params: dict | None = None, tuning_spec: Any = None,
                    calibration_spec: Any = None, mlflow_spec: Any = None,
                    feature_store_spec: Any = None, data_spec: Any = None, spark: Any = None,
                    promotion_spec: Any = None,
                    output_dir: str | Path | None = None,
                    resolved_config: dict | None = None, threshold_spec: Any = None,
                    explain_spec: Any = None, sample_weight: Any = None) -> WorkflowResult:
    """Run the whole training workflow described by the specs.

    Parameters
    ----------
    feature_specs, model_spec
        Feature specs (list) and the model spec, as dicts or spec objects.
    X, y : pandas DataFrame and Series, optional
        The training data; leave both None to load it from ``data_spec`` or
        ``feature_store_spec``.
    validation_strategy : {"cross_validation", "train_test", "none"}
    validation_params : dict, optional
        ``{"cv_folds": 5}`` or ``{"test_size": 0.2, "random_state": 42}``.
    tuning_spec, calibration_spec, mlflow_spec, feature_store_spec, data_spec : dict, optional
        Optional steps and data sources; see the README.
    spark : SparkSession, optional
        Defaults to the active session; only needed to read Delta tables or to
        tune on the cluster.
    output_dir : path, optional
        Where plots and other artifacts go; a new temporary directory when None.
    resolved_config : dict, optional
        The job's whole configuration, for MLflow to keep (the CLI passes it).
    threshold_spec : dict, optional
        ``{"objective": "f1"}`` or ``{"cost": {"false_positive": 1, "false_negative": 5}}``:
        the binary classifier's decision threshold, chosen by cross-validation.
    explain_spec : dict or True, optional
        Permutation importance on held-out rows, and ``{"shap": True}`` a SHAP plot.
    sample_weight : str or array-like, optional
        Row weights: the name of a column of ``X`` (or of the data source; the same as
        ``data_spec.sample_weight``), or one weight per row of ``X``. Never a feature;
        every fit (training, tuning trials, validation folds, calibration, the
        threshold) is weighted and every validation score weights the scored rows.
        The estimator's ``fit`` must take ``sample_weight``.

    Returns
    -------
    WorkflowResult
        ``pipeline``, ``cv_score``, ``tuning_summary``, ``calibration_summary``,
        ``mlflow_run_id``, ``metrics``, ``data``, ``warnings``, ``timings``,
        ``artifacts`` and more, as attributes or by key (``results["pipeline"]``).

    Raises
    ------
    SpecError
        Before anything runs, listing every problem in the specs.
    DataError
        When the data does not fit the specs (missing columns, missing labels...).
    StepError
        When a required step (loading, training, validation) fails.

    Examples
    --------
    >>> results = run_ml_workflow(  # doctest: +SKIP
    ...     [{"name": "age", "type": "numeric"}], {"estimator": "logistic_regression"},
    ...     X=frame, y=labels, validation_params={"cv_folds": 5})
    >>> results["cv_score"]  # doctest: +SKIP
    0.83
    """
    if isinstance(sample_weight, bool):
        raise SpecError(["run_ml_workflow.sample_weight: expected a column name or an array "
                         f"of one weight per row, got {sample_weight!r}."])
    weights_array = None if sample_weight is None or isinstance(sample_weight, str) \
        else sample_weight
    if (X is None) != (y is None):
        given, missing = ("X", "y") if X is not None else ("y", "X")
        raise SpecError([f"run_ml_workflow: {given} was given without {missing}; pass both, or "
                         "neither with a data_spec or feature_store_spec."])
    specs = parse_specs(feature_specs=feature_specs, model_spec=model_spec,
                        validation_strategy=validation_strategy,
                        validation_params=validation_params, data_spec=data_spec,
                        tuning_spec=tuning_spec, calibration_spec=calibration_spec,
                        mlflow_spec=mlflow_spec, feature_store_spec=feature_store_spec,
                        promotion_spec=promotion_spec,
                        data_given=X is not None or y is not None,
                        threshold_spec=threshold_spec, explain_spec=explain_spec,
                        sample_weight=True if weights_array is not None else sample_weight)
    output = Path(output_dir) if output_dir is not None else Path(
        tempfile.mkdtemp(prefix="orchestrator-run-"))
    _check_output_space(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StepError(f"output_dir: cannot create {str(output)!r}: {exc}; choose a writable "
                        "directory.") from exc
    results = WorkflowResult(output_dir=str(output), specs=_specs_as_dicts(specs),
                             validation_strategy=specs.validation.strategy)
    config = resolved_config if resolved_config is not None else {
        k: v for k, v in results.specs.items() if v is not None}

    with _tracking(specs, config, results) as tracker:
        _run_steps(specs, X, y, spark, output, results, tracker, weights_array)
    if "local_model" in results.artifacts:
        # Logging failed: the summary (with why, and how to end the run) is kept beside it.
        from orchestrator.summary import get_workflow_summary

        results.summary_text = get_workflow_summary(results)
        _degrade("local_save", results, lambda: _write_text(
            output / "summary.txt", results.summary_text, results, "local_summary"))
    return results


#: Below this, a full disk would fail the run after training (plots, the model): refuse first.
_MIN_FREE_BYTES = 1 << 20


def _check_output_space(output: Path) -> None:
    import shutil

    existing = output.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # checked before anything is created
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return  # not a local file system (a FUSE or object-store mount): nothing to tell
    if free < _MIN_FREE_BYTES:
        raise StepError(f"output_dir: {str(output)!r} has only {free // 1024} KiB free (the "
                        "disk is full); plots and the model are written there, so free some "
                        "space or choose another output_dir. Nothing was trained.")


def _write_text(path: Path, text: str, results: WorkflowResult, key: str) -> None:
    path.write_text(text)
    results.artifacts[key] = str(path)


def _save_model_locally(results: WorkflowResult, output: Path, X_sample,
                        trusted_types: tuple[str, ...] = ()) -> None:
    """When MLflow logging failed, keep the fitted model under ``output/model`` (MLflow's
    sklearn format with skops, as it would have been logged, loadable with
    ``mlflow.pyfunc.load_model``), so nothing trained is lost."""
    def save():
        import mlflow.sklearn

        from orchestrator.tracking.model_logging import to_model_input, trusted_model_types

        trusted, untrusted = trusted_model_types(results.pipeline, tuple(trusted_types))
        if untrusted:
            raise StepError(f"the model holds types not trusted for skops loading "
                            f"({', '.join(untrusted)}); list them in mlflow_spec.trusted_types")

        target = output / "model"
        if target.exists():  # a previous run's fallback: keep it under a new name
            target = Path(tempfile.mkdtemp(prefix="model-", dir=output))
            target.rmdir()
        mlflow.sklearn.save_model(
            results.pipeline, str(target), input_example=to_model_input(X_sample),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted or None)
        results.artifacts["local_model"] = str(target)
        results.warn("mlflow_logging", f"the model was not logged to MLflow; it is saved "
                     f"locally at {target} and the summary at {output / 'summary.txt'}")
        logger.warning("MLflow logging failed: model saved locally at %s", target)

    _degrade("local_save", results, save)


@contextlib.contextmanager
def _tracking(specs: WorkflowSpecs, config: dict, results: WorkflowResult) -> Iterator[Any]:
    """Start the MLflow run before step 1 (so trials can be child runs) and always end it."""
    if specs.mlflow is None:
        yield None
        return
    from orchestrator.tracking import start_tracking

    ok, tracker = _degrade("mlflow_tracking", results, lambda: start_tracking(
        specs.mlflow, resolved_config=config))
    if not ok:
        yield None
        return
    results.mlflow_run_id = tracker.run_id
    with tracker.guard():
        yield tracker
    if tracker.end_error:
        results.warn("mlflow_tracking", tracker.end_error)


def _run_steps(specs: WorkflowSpecs, X, y, spark, output: Path, results: WorkflowResult,
               tracker, weights=None) -> None:
    from sklearn.base import clone

    from orchestrator.steps.metrics import (MetricScorer, WorkflowScorer, default_pos_label,
                                      primary_metric)
    from orchestrator.steps.pipeline import build_ml_pipeline
    from orchestrator.steps.validation import (cross_validate_procedure, holdout_positions,
                                               score_holdout)
    from orchestrator.steps.weights import (drop_routing_requests, request_sample_weight,
                                            rows_of)

    with _step(1, "data_loading", results):
        X, y, side, w = _load_data(specs, X, y, spark, results, weights)
        _warn_random_folds_on_time(specs, results)
        from orchestrator.steps.data_checks import check_feature_values

        for reason in check_feature_values(X, specs.features):
            results.warn("data_loading", reason)
        kind, classes = _check_labels(y, specs)
        primary = primary_metric(specs.model, kind)
        pos_label = default_pos_label(classes, specs.model.pos_label) if kind == "binary" else None
        results.update(task=specs.model.task, target_kind=kind, classes=classes,
                       primary_metric=primary, pos_label=pos_label)
        scorer = WorkflowScorer(kind, primary, pos_label)
        _check_class_balance(y, kind, primary, specs, results)
        X_test = y_test = w_test = None
        if specs.validation.strategy == "train_test":
            train, test = holdout_positions(X, y, specs.validation, kind, side)
            X, X_test, y, y_test = X.iloc[train], X.iloc[test], y.iloc[train], y.iloc[test]
            side = side.iloc[train] if side is not None else None
            w, w_test = rows_of(w, train), rows_of(w, test)
            results.data["holdout_rows"] = len(y_test)
        results.data["training_rows"] = len(y)

    with _step(2, "pipeline_construction", results):
        pipeline = build_ml_pipeline(specs.features, specs.model)
        if w is not None:  # the model step asks for the rows' weights in every fit
            pipeline = request_sample_weight(pipeline)
        # Nested CV tunes inside each outer fold, starting from the model spec's params.
        pipeline_before_tuning = clone(pipeline)

    if specs.tuning is not None:
        with _step(3, "tuning", results):
            from orchestrator.tuning import tune

            tuning_metric = MetricScorer(kind, specs.tuning.metric or primary, pos_label)
            ok, outcome = _degrade("tuning", results, lambda: tune(
                pipeline, X, y, specs.tuning, model_spec=specs.model,
                scoring=tuning_metric, spark=_active_spark(spark),
                cv=_tuning_folds(specs, kind, X, y, side), sample_weight=w))
            if ok:
                pipeline.set_params(**outcome.best_params)
                results.tuning_summary = outcome.summary
                if tracker is not None:
                    warning = tracker.log_trials(outcome.summary.get("trials") or [],
                                                 metric=str(outcome.summary.get("metric")))
                    if warning:
                        results.warn("mlflow_logging", warning)
                _plot_tuning_history(outcome.summary, output, results)
                if specs.validation.strategy in ("cross_validation", "group_k_fold",
                                                 "time_series"):
                    results.validation_note = (
                        "tuning chose the params on the same rows cross-validation scores, so "
                        "cv_score is optimistic; nested_cross_validation or train_test gives "
                        "an unbiased score")
            else:
                results.tuning_summary = {"status": "degraded", "reason": outcome.reason,
                                          "params_used": dict(specs.model.params)}

    with _step(4, "training", results):
        model = _fit(clone(pipeline), X, y, "training", w)
        procedure = pipeline

    if specs.calibration is not None:
        with _step(5, "calibration", results):
            ok, outcome = _calibrate(specs, pipeline, X, y, output, results, w,
                                     session=_active_spark(spark))
            if ok:
                results.calibration_summary = {**outcome.summary,
                                               "calibrated": outcome.calibrated}
                plot = outcome.summary.get("plot_path")
                if plot:
                    results.artifacts["reliability_diagram"] = plot
                model = outcome.model
                # Exactly the procedure whose model is returned (method already resolved), so
                # cross-validation refits calibration inside each fold the same way.
                procedure = outcome.procedure
            else:
                results.calibration_summary = {"status": "degraded", "calibrated": False,
                                               "reason": outcome.reason}

    if specs.threshold is not None:
        with _step(5, "threshold", results):
            from orchestrator.steps.threshold import with_threshold

            # Wraps the procedure: cross-validation below refits the threshold in each fold.
            procedure = with_threshold(procedure, specs.threshold, pos_label,
                                       weighted=w is not None)
            model = _fit(clone(procedure), X, y, "choosing the decision threshold", w)
            _summarise_threshold(model, specs, output, results)

    # Routing requests are fit-time state that skops cannot serialise; predict needs none.
    results.pipeline = drop_routing_requests(model) if w is not None else model
    # Held-out predictions are only needed for MLflow's plots.
    keep_predictions = tracker is not None and specs.mlflow.log_plots
    with _step(6, "validation", results):
        if specs.validation.strategy == "nested_cross_validation":
            outcome = _validate(lambda: _nested_cv(specs, pipeline_before_tuning, X, y, side,
                                                   scorer, kind, primary, pos_label, spark,
                                                   keep_predictions, w))
        elif specs.validation.is_cross_validation:
            outcome = _validate(lambda: cross_validate_procedure(
                clone(procedure), X, y, specs.validation, scorer, kind,
                keep_predictions=keep_predictions, side=side, session=_active_spark(spark),
                sample_weight=w))
        elif specs.validation.strategy == "train_test":
            outcome = _validate(lambda: score_holdout(model, X_test, y_test, scorer,
                                                      train_rows=len(y),
                                                      keep_predictions=keep_predictions,
                                                      sample_weight=w_test))
        else:
            outcome = None
        if outcome is not None:
            results.cv_score = outcome.cv_score
            results.metrics = outcome.metrics
            results.validation_rows = outcome.rows
            results.validation_details = {"split": specs.validation.settings(),
                                          **outcome.details}
            if outcome.predictions is not None:
                results.evaluation = outcome.predictions

    if specs.explain is not None:
        with _step(6, "explanations", results):
            _degrade("explanations", results, lambda: _explain(
                specs, procedure, model, X, y, X_test, y_test, kind, primary, pos_label, output,
                results, w))

    from orchestrator.summary import get_workflow_summary

    if tracker is not None:
        with _step(7, "mlflow_logging", results):
            results.summary_text = get_workflow_summary(results)
            ok, logged = _degrade("mlflow_logging", results, lambda: tracker.log_results(
                results, X_sample=X.head(200), y_sample=y.head(200), output_dir=output))
            if not ok:
                _save_model_locally(results, output, X.head(200), specs.mlflow.trusted_types)
                tracker.end("FAILED")  # the run lacks its model: never FINISHED
            if ok and logged:
                results.mlflow_model = logged
                for reason in logged.get("warnings", []):
                    results.warn("mlflow_logging", reason)
            if specs.promotion is not None:
                _promote(specs, spark, results, tracker, scorer, X_test, y_test)
            results.summary_text = get_workflow_summary(results)
            _degrade("mlflow_report", results, lambda: tracker.log_report(results))
    results.summary_text = get_workflow_summary(results)


def _promote(specs: WorkflowSpecs, spark, results: WorkflowResult, tracker, scorer, X_test,
             y_test) -> None:
    """The promotion gate (in step 7): the alias moves only when this model beats the one
    holding it, both scored here on the same rows; any failure keeps the alias (fail closed)."""
    from orchestrator.steps.calibration import probability_metrics
    from orchestrator.tracking.promotion import REJECTED, log_promotion, run_promotion_gate

    def score(model, X, y):
        values = dict(scorer(model, X, y))
        if results.task != "regression" and hasattr(model, "predict_proba"):
            values.update(probability_metrics(y, model.predict_proba(X), model.classes_))
        return values

    def gate():
        if specs.promotion.uses_holdout:
            X_eval, y_eval = X_test, y_test
            rows = f"train_test hold-out, {len(y_test)} rows"
        else:  # read once the champion's columns are known
            X_eval, y_eval, rows = (lambda needed: _promotion_rows(specs, spark, needed)), None, ""
        return run_promotion_gate(
            tracker, specs.promotion, candidate_model=results.pipeline,
            candidate_version=(results.mlflow_model or {}).get("model_version"), X=X_eval,
            y=y_eval, score=score, metric=specs.promotion.metric or results.primary_metric,
            rows_description=rows)

    ok, outcome = _degrade("promotion", results, gate)
    if not ok:
        outcome = {"decision": REJECTED, "rule": "the gate ran", "alias_moved": False,
                   "alias": specs.promotion.alias, "reason": "fail closed: the gate could not "
                   f"run ({outcome.reason}); the alias was not moved"}
        log_promotion(tracker, outcome)
    results.promotion = outcome


def _promotion_rows(specs: WorkflowSpecs, spark, champion_columns):
    """The promotion section's Delta table of evaluation rows, read like ``data``."""
    from orchestrator.io.training_data import load_training_data
    from orchestrator.specs.data import DataSpec

    rows = specs.promotion.rows
    label = rows.label or (specs.data.label if specs.data is not None
                           else specs.feature_store.labels.label)
    columns = list(dict.fromkeys([*feature_columns(specs.features), *champion_columns]))
    loaded = load_training_data(_require_spark(spark, "promotion.rows"), DataSpec(
        path=rows.path, table=rows.table, version=rows.version, label=label,
        filter=rows.filter), feature_columns=columns)
    described = (f"{rows.location} @ version {loaded.lineage.get('delta_version')}, "
                 f"{len(loaded.y)} rows")
    return loaded.X.loc[:, columns], loaded.y, described


def _plot_tuning_history(summary: dict, output: Path, results: WorkflowResult) -> None:
    from orchestrator.plots import plot_tuning_history

    ok, path = _degrade("tuning_plot", results, lambda: plot_tuning_history(
        summary.get("trials") or [], output / "tuning_history.png",
        metric=str(summary.get("metric"))))
    if ok:
        results.artifacts["tuning_history"] = str(path)


def _check_class_balance(y, kind: str, primary: str, specs: WorkflowSpecs,
                         results: WorkflowResult) -> None:
    """Record rows per class; warn when a rare class meets the accuracy metric."""
    if kind not in ("binary", "multiclass"):
        if specs.threshold is not None:
            raise DataError("threshold: a decision threshold applies to binary classifiers "
                            f"only, but the labels are {kind}; remove the threshold section.")
        return
    counts = y.value_counts()
    shares = counts / counts.sum()
    results.class_balance = {"counts": {_python_value(k): int(v) for k, v in counts.items()},
                             "shares": {_python_value(k): round(float(v), 4)
                                        for k, v in shares.items()},
                             "minority_share": round(float(shares.min()), 4)}
    if shares.min() < 0.10 and primary == "accuracy":
        results.warn("data_loading", (
            f"class {_python_value(shares.idxmin())!r} is only {shares.min():.1%} of the rows and "
            "the metric is accuracy, which a model predicting the majority class always scores "
            "well on; prefer average_precision, balanced_accuracy or f1 (model.metric), and "
            "consider model.class_weight: balanced or a threshold section."))
    if specs.threshold is not None and kind != "binary":
        raise DataError(f"threshold: a decision threshold applies to binary classifiers only, "
                        f"but the labels have {len(counts)} classes; remove the threshold "
                        "section.")


def _python_value(value: Any) -> Any:
    """A numpy scalar label as the Python value (for YAML/JSON and the summary)."""
    return value.item() if hasattr(value, "item") else value


def _summarise_threshold(model, specs: WorkflowSpecs, output: Path,
                         results: WorkflowResult) -> None:
    from orchestrator.plots import plot_threshold_curve
    from orchestrator.steps.threshold import threshold_summary

    summary = threshold_summary(model, specs.threshold)
    curve = summary.pop("curve", None)
    results.threshold_summary = summary
    if curve is not None:
        ok, path = _degrade("threshold_plot", results, lambda: plot_threshold_curve(
            curve["thresholds"], curve["scores"], summary["threshold"],
            output / "threshold_curve.png", score_label=summary["score_kind"],
            title=f"Decision threshold: {summary['objective']}"))
        if ok:
            results.artifacts["threshold_curve"] = str(path)


def _explain(specs: WorkflowSpecs, procedure, model, X, y, X_test, y_test, kind: str,
             primary: str, pos_label: Any, output: Path, results: WorkflowResult,
             sample_weight=None) -> None:
    """Permutation importance (and SHAP) on held-out rows: the train_test hold-out with the
    returned model, else one extra split of the training rows with a model refit on the rest
    (with its rows' weights; the importances count rows unweighted)."""
    from sklearn.base import clone

    from orchestrator.plots import plot_feature_importance, plot_shap_summary
    from orchestrator.steps.explain import (
        explanation_split,
        permutation_importance_table,
        shap_values,
    )
    from orchestrator.steps.metrics import MetricScorer
    from orchestrator.tracking.model_logging import find_pipeline

    spec = specs.explain
    if X_test is not None:
        explained, X_held, y_held = model, X_test, y_test
        description = f"the train_test hold-out ({len(y_held)} rows), the returned model"
    else:
        X_fit, X_held, y_fit, y_held, *w_fit = explanation_split(
            X, y, kind, random_state=specs.validation.random_state or 0,
            sample_weight=sample_weight)
        w_fit = w_fit[0] if w_fit else None
        explained = _fit(clone(procedure), X_fit, y_fit, "explanations", w_fit)
        description = (f"an extra 20% split of the training rows ({len(y_held)} rows), a model "
                       f"refit on the other {len(y_fit)}")
    explanations: dict[str, Any] = {"rows": description}
    if spec.permutation:
        found = permutation_importance_table(explained, X_held, y_held,
                                             MetricScorer(kind, primary, pos_label), spec,
                                             metric=primary, description=description)
        # Plain records, so the results stay YAML/JSON-friendly.
        explanations.update(metric=primary,
                            permutation_importance=found.table.to_dict("records"),
                            top_features=found.top(spec.top))
        table = found.table
        path = plot_feature_importance(
            table["feature"].to_numpy(dtype=object), table["importance_mean"].to_numpy(),
            f"permutation importance (drop in {primary}, held-out rows)",
            output / "permutation_importance.png")
        results.artifacts["permutation_importance"] = str(path)
    results.explanations = explanations
    if spec.shap:
        pipeline = find_pipeline(explained)
        if pipeline is None:
            raise StepError("explain.shap: no fitted pipeline inside the model to explain.")
        values = shap_values(pipeline, X_held, spec)
        path = plot_shap_summary(values.values, values.features, values.names,
                                 output / "shap_summary.png",
                                 title=f"SHAP summary ({len(values.values)} held-out rows)")
        results.artifacts["shap_summary"] = str(path)
        explanations["shap"] = "shap_summary.png"


def _calibrate(specs: WorkflowSpecs, pipeline, X, y, output: Path, results: WorkflowResult,
               sample_weight=None, session=None):
    from orchestrator.steps.calibration import calibrate

    return _degrade("calibration", results, lambda: calibrate(
        pipeline, X, y, specs.calibration, output_dir=output,
        random_state=specs.validation.random_state, sample_weight=sample_weight,
        session=session))


def _warn_random_folds_on_time(specs: WorkflowSpecs, results: WorkflowResult) -> None:
    """Random folds on feature-store rows with a label timestamp train on the future."""
    labels = getattr(specs.feature_store, "labels", None)
    timestamp = getattr(labels, "timestamp", None)
    if timestamp is None or specs.validation.split_kind != "k_fold" \
            or specs.validation.strategy in ("train_test", "none"):
        return
    reason = (f"random {specs.validation.strategy} folds on feature-store rows with a label "
              f"timestamp ({timestamp!r}) let the model train on the future of its test rows; "
              f"use validation strategy time_series with order_by: {timestamp} (or train_test "
              f"with order_by: {timestamp}) for an honest score")
    logger.warning("Validation: %s", reason)
    results.warn("validation", reason)


def _tuning_folds(specs: WorkflowSpecs, kind: str, X, y, side):
    """Tuning's inner folds of the same kind as the validation's (None: tuning's own K-fold)."""
    from orchestrator.steps.validation import inner_split_settings, inner_splits

    inner = inner_split_settings(specs.validation, specs.tuning.cv_folds, specs.tuning.seed)
    return inner_splits(inner, kind, X, y, side)


def _nested_cv(specs: WorkflowSpecs, pipeline, X, y, side, scorer, kind: str, primary: str,
               pos_label, spark, keep_predictions: bool, sample_weight=None):
    """Nested CV: each outer fold tunes with the tuning spec (its trials one after another,
    inside the fold's task), so the outer folds are what runs concurrently on the cluster."""
    import functools

    from orchestrator.steps.metrics import MetricScorer
    from orchestrator.steps.validation import nested_cross_validate
    from orchestrator.tuning import tune

    # Each outer fold's trials run where the fold runs (in its task, or on the driver).
    inner_spec = dataclasses.replace(specs.tuning, backend="optuna"
                                     if specs.tuning.backend == "optuna" else "local")
    tune_fold = functools.partial(tune, spec=inner_spec, model_spec=specs.model,
                                  scoring=MetricScorer(kind, specs.tuning.metric or primary,
                                                       pos_label), spark=None)
    return nested_cross_validate(pipeline, X, y, specs.validation, scorer, kind,
                                 tune_fold=tune_fold, inner_folds=specs.tuning.cv_folds,
                                 inner_seed=specs.tuning.seed, side=side,
                                 keep_predictions=keep_predictions, session=_active_spark(spark),
                                 sample_weight=sample_weight)


def _validate(action: Callable[[], Any]):
    try:
        return action()
    except OrchestratorError:
        raise  # e.g. DataError for a class smaller than the folds: keep its own message
    except (ValueError, TypeError, AttributeError) as exc:
        raise StepError(f"validation failed: {exc}") from exc
