"""Batch scoring against real Delta tables and a real MLflow sqlite store.

The oracle for every prediction is the scikit-learn model itself, loaded back
from the store with ``mlflow.sklearn.load_model``; the prediction table is read
by delta-rs (the ``deltalake`` package), not by Spark.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import MissingColumnError, MissingTableError
from orchestrator.scoring import (
    ModelNotFoundError,
    SchemaMismatchError,
    ScoringError,
    check_input_schema,
    scoring_app_id,
)

pytestmark = [pytest.mark.spark]


def _customers(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": np.arange(seed * 10_000, seed * 10_000 + n, dtype="int64"),
        "age": rng.integers(18, 80, n).astype("int64"),
        "income": rng.normal(50_000, 15_000, n).round(2),
        "plan": rng.choice(["basic", "plus", "pro"], n),
    })


def _labels(frame: pd.DataFrame) -> np.ndarray:
    score = (frame["age"] - 45) / 10 + (frame["plan"] == "pro") * 1.5 - (frame["income"] - 5e4) / 2e4
    return (score > 0).astype("int64").to_numpy()


def _classifier():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return Pipeline([
        ("preprocess", ColumnTransformer([
            ("numeric_0", StandardScaler(), ["age", "income"]),
            ("categorical_1", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ])),
        ("model", LogisticRegression(max_iter=500)),
    ])


def _log(model, X, name: str, *, alias: str | None = None) -> tuple[str, str]:
    """Log ``model`` the way orchestrator.tracking does (skops, signature); return (run_id, version)."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            model, name="model", serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted, signature=infer_signature(X, model.predict(X)),
            pyfunc_predict_fn="predict", registered_model_name=name)
    version = str(info.registered_model_version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return run.info.run_id, version


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real sqlite tracking/registry store with a classifier (two versions) and a regressor."""
    import mlflow
    from sklearn.linear_model import Ridge

    root = tmp_path_factory.mktemp("scoring_store")
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("scoring-tests")
    train = _customers(300, seed=1)
    X = train.drop(columns="customer_id")
    classifier = _classifier().fit(X, _labels(train))
    run_id, version = _log(classifier, X, "churn", alias="champion")
    classifier_v2 = _classifier().set_params(model__C=0.01).fit(X, _labels(train))
    _, version_2 = _log(classifier_v2, X, "churn")
    regressor = _classifier().set_params(model=Ridge()).fit(X, X["income"] / 1000)
    _, reg_version = _log(regressor, X, "income")
    yield {"uri": uri, "run_id": run_id, "version": version, "version_2": version_2,
           "reg_version": reg_version, "root": root}
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(None)
    # set_experiment exports MLFLOW_EXPERIMENT_ID; later tests' stores do not know that id.
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def _write_delta(spark, frame: pd.DataFrame, path, mode: str = "overwrite") -> None:
    spark.createDataFrame(frame).write.format("delta").mode(mode).save(str(path))


def _read_predictions(path) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pandas().sort_values("customer_id").reset_index(drop=True)


def _delta_version(path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version()


def _expected(model_uri: str, inputs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, list]:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_uri)
    X = inputs.drop(columns="customer_id")
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    classes = list(getattr(model, "classes_", []))
    return model.predict(X), proba, classes


def test_scoring_twice_writes_each_row_once_with_the_models_own_predictions(spark, store, tmp_path):
    from orchestrator.scoring import score_table

    inputs = _customers(120, seed=7)
    _write_delta(spark, inputs, tmp_path / "customers")
    output = tmp_path / "predictions"

    first = score_table(spark, "models:/churn@champion", str(tmp_path / "customers"), str(output))
    version_after_first = _delta_version(output)
    second = score_table(spark, "models:/churn@champion", str(tmp_path / "customers"), str(output))

    assert (first.rows_written, first.skipped) == (120, False)
    assert (second.rows_written, second.skipped) == (0, True)
    assert _delta_version(output) == version_after_first  # no second commit at all
    got = _read_predictions(output)
    assert len(got) == 120 and got["customer_id"].is_unique
    assert got["customer_id"].tolist() == sorted(inputs["customer_id"])

    labels, proba, classes = _expected(f"models:/churn/{store['version']}",
                                       inputs.sort_values("customer_id").reset_index(drop=True))
    np.testing.assert_array_equal(got["prediction"].to_numpy(), labels)
    got_proba = np.array([[dict(row)[str(c)] for c in classes] for row in got["probabilities"]])
    np.testing.assert_allclose(got_proba, proba, rtol=1e-9, atol=1e-12)
    assert set(got["model_version"]) == {store["version"]}
    assert set(got["model_name"]) == {"churn"}
    assert set(got["model_uri"]) == {"models:/churn@champion"}
    assert set(got["model_run_id"]) == {store["run_id"]}
    assert set(got["input_version"]) == {0}
    assert got["scored_at"].nunique() == 1
    assert first.model_version == store["version"] and first.input_version == 0
    # The passed-through columns are the input's, untouched.
    merged = got.merge(inputs, on="customer_id", suffixes=("", "_in"))
    np.testing.assert_array_equal(merged["income"], merged["income_in"])


def test_the_scoring_write_reports_progress_while_it_runs(spark, store, tmp_path, monkeypatch,
                                                         caplog):
    import logging

    import orchestrator.scoring as scoring
    from orchestrator.io.progress import spark_progress

    # Lines every 20 ms instead of 10 s, so even this small write logs some.
    monkeypatch.setattr(scoring, "spark_progress",
                        lambda spark, what: spark_progress(spark, what, interval_s=0.02))
    caplog.set_level(logging.INFO, logger="orchestrator.io.progress")
    _write_delta(spark, _customers(40, seed=3), tmp_path / "customers")
    result = scoring.score_table(spark, "models:/churn@champion", str(tmp_path / "customers"),
                                 str(tmp_path / "predictions"))
    assert result.rows_written == 40
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.io.progress"]
    assert any(f"(scoring {tmp_path / 'customers'})" in line
               or f"scoring {tmp_path / 'customers'} still running" in line
               for line in lines), lines


def test_a_new_input_version_or_model_version_appends_and_an_old_one_does_not(spark, store,
                                                                                tmp_path):
    from orchestrator.scoring import score_table

    source, output = tmp_path / "customers", tmp_path / "predictions"
    batch_1, batch_2 = _customers(40, seed=3), _customers(25, seed=4)
    _write_delta(spark, batch_1, source)
    score_table(spark, "models:/churn@champion", str(source), str(output))
    _write_delta(spark, batch_2, source, mode="append")                      # input version 1
    grown = score_table(spark, "models:/churn@champion", str(source), str(output))
    other_model = score_table(spark, f"models:/churn/{store['version_2']}", str(source),
                              str(output), input_version=0)
    old_again = score_table(spark, "models:/churn@champion", str(source), str(output),
                            input_version=0)

    assert grown.rows_written == 65 and grown.input_version == 1
    assert other_model.rows_written == 40 and other_model.model_version == store["version_2"]
    assert old_again.skipped  # Delta only moves a transaction's version forward
    got = _read_predictions(output)
    counts = got.groupby(["model_version", "input_version"]).size().to_dict()
    assert counts == {(store["version"], 0): 40, (store["version"], 1): 65,
                      (store["version_2"], 0): 40}


def test_regressor_predictions_have_no_probabilities(spark, store, tmp_path):
    from orchestrator.scoring import score_table

    inputs = _customers(30, seed=5)
    _write_delta(spark, inputs, tmp_path / "customers")
    score_table(spark, "models:/income/latest", str(tmp_path / "customers"),
                str(tmp_path / "predictions"), keep_columns=["customer_id"])
    got = _read_predictions(tmp_path / "predictions")
    expected, _, _ = _expected(f"models:/income/{store['reg_version']}",
                               inputs.sort_values("customer_id").reset_index(drop=True))
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, rtol=1e-9)
    assert got["probabilities"].isna().all()
    assert "age" not in got.columns  # only keep_columns are copied


def _table_with(frame: pd.DataFrame, spark, path):
    _write_delta(spark, frame, path)
    return str(path)


@pytest.mark.parametrize("case, error, match", [
    ("missing model", ModelNotFoundError, r"no registered model 'nochurn'"),
    ("missing alias", ModelNotFoundError, r"models:/churn@retired.*'churn' has versions 1, 2"),
    ("missing run", ModelNotFoundError, r"cannot download it"),
    ("missing column", MissingColumnError, r"'incme' \(did you mean 'income'\?\)|column 'income'"),
    ("schema mismatch", SchemaMismatchError, r"age: the model expects long, the table has string"),
    ("missing input table", MissingTableError, r"no Delta table there"),
])
def test_each_error_is_clear_and_writes_nothing(spark, store, tmp_path, case, error, match):
    from orchestrator.scoring import score_table

    inputs = _customers(20, seed=9)
    model_uri = "models:/churn@champion"
    if case == "missing model":
        model_uri = "models:/nochurn@champion"
    elif case == "missing alias":
        model_uri = "models:/churn@retired"
    elif case == "missing run":
        model_uri = "runs:/0123456789abcdef0123456789abcdef/model"
    elif case == "missing column":
        inputs = inputs.rename(columns={"income": "incme"})
    elif case == "schema mismatch":
        inputs = inputs.assign(age=inputs["age"].astype(str))
    source = tmp_path / "customers"
    if case != "missing input table":
        _write_delta(spark, inputs, source)
    output = tmp_path / "predictions"

    with pytest.raises(error, match=match):
        score_table(spark, model_uri, str(source), str(output))
    assert not output.exists()


def test_a_failure_on_the_executors_leaves_the_prediction_table_untouched(spark, store, tmp_path):
    """A null in an integer signature column fails pyfunc's schema enforcement inside the UDF."""
    from orchestrator.scoring import score_table

    source, output = tmp_path / "customers", tmp_path / "predictions"
    _write_delta(spark, _customers(10, seed=11), source)
    score_table(spark, "models:/churn@champion", str(source), str(output))
    before, version = _read_predictions(output), _delta_version(output)
    with_null = _customers(10, seed=12).astype({"age": "Int64"})
    with_null.loc[3, "age"] = None
    spark.createDataFrame(with_null.astype({"age": object}).where(with_null.notna(), None),
                          schema="customer_id long, age long, income double, plan string"
                          ).write.format("delta").mode("append").save(str(source))

    with pytest.raises(ScoringError, match="nothing was written"):
        score_table(spark, "models:/churn@champion", str(source), str(output))
    assert _delta_version(output) == version
    pd.testing.assert_frame_equal(_read_predictions(output), before)


def test_check_input_schema_accepts_lossless_casts_and_lists_every_mismatch():
    inputs = [("a", "long", True), ("b", "double", True), ("c", "string", True),
              ("d", "double", False)]
    assert check_input_schema([("a", "integer"), ("b", "integer"), ("c", "string")], inputs,
                              where="t") == ["a", "b", "c"]
    with pytest.raises(SchemaMismatchError) as caught:
        check_input_schema([("a", "double"), ("b", "string"), ("c", "string")], inputs, where="t")
    assert [m[0] for m in caught.value.mismatches] == ["a", "b"]
    # long values beyond 2**53 and decimals do not all survive a cast to double.
    for lossy in ("long", "decimal(38,10)"):
        with pytest.raises(SchemaMismatchError, match="'b'|b:"):
            check_input_schema([("a", "long"), ("b", lossy), ("c", "string")], inputs, where="t")
    with pytest.raises(MissingColumnError, match="'c' not found"):
        check_input_schema([("a", "long"), ("b", "double")], inputs, where="t")


def test_dotted_column_names_and_concurrent_jobs_write_each_row_once(spark, store, tmp_path):
    """Column names are taken literally; two jobs at once still give one copy of every row."""
    import threading

    from orchestrator.scoring import score_table

    inputs = _customers(60, seed=5).rename(columns={"customer_id": "customer.id"})
    _write_delta(spark, inputs, tmp_path / "customers")
    output = tmp_path / "predictions"
    results, errors = [], []

    def job():
        try:
            results.append(score_table(spark, "models:/churn@champion",
                                       str(tmp_path / "customers"), str(output),
                                       keep_columns=["customer.id"]))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.skipped for r in results) == [False, True]
    written = next(r for r in results if not r.skipped)
    assert written.rows_written == 60
    from deltalake import DeltaTable

    got = DeltaTable(str(output)).to_pandas()
    assert sorted(got["customer.id"]) == sorted(inputs["customer.id"])
    # The reported version is the commit this job made, read from the table's history.
    history = {h["version"]: h for h in DeltaTable(str(output)).history()}
    assert int(history[written.output_version]["operationMetrics"]["numOutputRows"]) == 60


def test_app_id_depends_on_input_and_pinned_model():
    ids = {scoring_app_id(i, m) for i in ("/a", "/b") for m in ("models:/m/1", "models:/m/2")}
    assert len(ids) == 4


def test_cli_score_prints_what_it_wrote_and_exits_1_on_a_missing_model(spark, store, tmp_path,
                                                                        capsys, monkeypatch):
    from orchestrator.entrypoints.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    _write_delta(spark, _customers(15, seed=13), tmp_path / "customers")
    args = ["score", "--model-uri", "models:/churn@champion", "--input",
            str(tmp_path / "customers"), "--output", str(tmp_path / "predictions")]
    assert main(args) == 0
    assert "wrote 15 predictions" in capsys.readouterr().out
    assert main(args) == 0
    assert "already scored" in capsys.readouterr().out
    assert len(_read_predictions(tmp_path / "predictions")) == 15
    bad = ["score", "--model-uri", "models:/churn@gone", "--input", str(tmp_path / "customers"),
           "--output", str(tmp_path / "other")]
    assert main(bad) == 1
    assert "models:/churn@gone" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "other")
