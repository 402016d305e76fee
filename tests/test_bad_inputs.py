"""Issue 15: a table of bad inputs, each answered by one clear message and the right exit code.

Different from the cases of test_specs.py and test_config_cli.py: these are the
classes a new user's campaign found (encodings, YAML construction, duplicate
keys, unchecked types, malformed master URLs, data that does not fit its
feature type, names MLflow would refuse, litter left behind). Every CLI case
checks the exit code, that stderr is one message naming the problem (no
Python or Java trace), and that the working directory is left as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from orchestrator import run_ml_workflow
from orchestrator.entrypoints.cli import main
from orchestrator.errors import DataError, TrackingError, TrackingUnavailableError

GOOD = """\
features:
  - {name: age, type: numeric}
model: {estimator: random_forest, params: {n_estimators: 5}}
data: {path: data/churn, label: churned}
"""
TRACE_MARKS = ("Traceback", "py4j", "at org.apache", "java.lang.")


def _cli_case(tmp_path, monkeypatch, capsys, argv_or_config, *, raw: bytes | None = None):
    """Run the CLI in ``tmp_path`` (the cwd); return (code, stderr, files left)."""
    monkeypatch.chdir(tmp_path)
    if raw is not None:
        (tmp_path / "job.yml").write_bytes(raw)
    before = set(tmp_path.iterdir())
    try:
        code = main(argv_or_config)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    left = sorted(p.name for p in set(tmp_path.iterdir()) - before)
    return code, err, left


# (id, config text or bytes, argv after "validate"/"run", exit code, what stderr must name)
CONFIG_CASES = [
    ("latin-1 bytes", GOOD.encode() + "name: caf\u00e9\n".encode("latin-1"), ["validate", "job.yml"], 2,
     "not UTF-8 text (byte"),
    ("impossible date", GOOD.replace("data/churn", "2024-02-30").encode(), ["validate", "job.yml"], 2,
     "'2024-02-30' is not a valid date"),
    ("duplicate key in a nested mapping",
     GOOD.replace("params: {n_estimators: 5}", "params: {n_estimators: 5, n_estimators: 9}"
                  ).encode(), ["validate", "job.yml"], 2, "found key 'n_estimators' twice"),
    ("duplicate top-level key", (GOOD + "model: {estimator: logistic_regression}\n").encode(),
     ["validate", "job.yml"], 2, "found key 'model' twice (first on line 3)"),
    ("number where a path belongs", GOOD.replace("data/churn", "42").encode(), ["validate", "job.yml"], 2,
     "config.data.path: expected a path (a non-empty string), got 42"),
    ("list as output_dir", (GOOD + "output_dir: [a, b]\n").encode(), ["validate", "job.yml"], 2,
     "config.output_dir: expected a path"),
    ("malformed master in the config", (GOOD + "spark: {master: 'local[two]'}\n").encode(),
     ["validate", "job.yml"], 2, "config.spark.master: expected a Spark master URL"),
    ("nested value in spark.conf", (GOOD + "spark: {conf: {spark.ui.enabled: {a: 1}}}\n"
                                    ).encode(), ["validate", "job.yml"], 2,
     "config.spark.conf.spark.ui.enabled: expected a string, number or boolean"),
    ("clusterer with task classification",
     GOOD.replace("{estimator: random_forest, params: {n_estimators: 5}}",
                  "{estimator: sklearn.cluster.KMeans, task: classification}").encode(),
     ["validate", "job.yml"], 2, "KMeans is a clustering estimator"),
    ("run name beyond MLflow's limit", (GOOD + f"mlflow: {{run_name: {'r' * 300}}}\n").encode(),
     ["validate", "job.yml"], 2, "mlflow_spec.run_name: 300 characters, but MLflow allows at most 250"),
    ("search-space name the pipeline lacks",
     (GOOD + "tuning:\n  max_evals: 2\n  search_space:\n"
             "    preprocess__numeric_0__imputer__strategy: {dist: choice, options: [mean]}\n"
             "    preprocess__numeric_0__scaler__with_meen: {dist: choice, options: [true]}\n"
      ).encode(), ["validate", "job.yml"], 2,
     "'preprocess__numeric_0__scaler__with_meen' is not a parameter of the pipeline (did you "
     "mean 'preprocess__numeric_0__scaler__with_mean'?)"),
    ("malformed --master on the command line", GOOD.encode(),
     ["run", "job.yml", "--master", "spark//host:7077"], 2, "--master: expected a Spark master URL"),
    ("config given as a directory", None, ["validate", "."], 2, "'.' is a directory"),
]


@pytest.mark.parametrize("raw, argv, code, needle",
                         [case[1:] for case in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_or_argument_is_one_clear_message(raw, argv, code, needle, tmp_path,
                                                      monkeypatch, capsys):
    got, err, left = _cli_case(tmp_path, monkeypatch, capsys, argv, raw=raw)
    assert got == code, err
    assert needle in err, err
    assert not any(mark in err for mark in TRACE_MARKS), err
    assert err.count("error:") == 1, err
    assert left == [], left


def test_tilde_in_a_path_is_the_home_directory(tmp_path, monkeypatch):
    from orchestrator.config import load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "job.yml"
    config.write_text(GOOD.replace("data/churn", "~/tables/churn") + "output_dir: ~/out\n")
    loaded = load_config(config)
    assert loaded.resolved["data"]["path"] == str(tmp_path / "home" / "tables" / "churn")
    assert loaded.resolved["output_dir"] == str(tmp_path / "home" / "out")


# ---- the Python API with data that does not fit its feature specs (no Spark)

def _frame(n=40):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(40, 5, n), "income": rng.normal(1e4, 1e3, n),
                      "signup": pd.date_range("2024-01-01", periods=n).astype(str)})
    y = pd.Series(rng.integers(0, 2, n))
    return X, y


DATA_CASES = [
    ("blanks in a numeric column", lambda X: X.assign(income=X["income"].astype(object).where(
        X.index % 3 != 0, " ")), [{"columns": ["age", "income"], "type": "numeric"}],
     r"column 'income' is declared numeric but 14 of 40 rows hold non-numbers: ' '"),
    ("all-null feature column", lambda X: X.assign(income=np.nan),
     [{"columns": ["age", "income"], "type": "numeric"}],
     r"column 'income' \(numeric\) has no values: all 40 rows are null"),
    ("datetime column with no parseable value", lambda X: X.assign(signup="someday"),
     [{"name": "age", "type": "numeric"}, {"name": "signup", "type": "datetime"}],
     r"column 'signup' is declared datetime but none of its values parse as a date: "
     r"'someday'"),
    ("integer column names asked for as text", lambda X: X.set_axis(range(3), axis=1),
     [{"columns": ["0", "1"], "type": "numeric"}],
     r"name the columns '0', '1' as text but X's columns of that name are not strings"),
]


@pytest.mark.parametrize("mutate, features, message", [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
def test_data_that_does_not_fit_the_specs_names_column_and_values(mutate, features, message,
                                                                  tmp_path):
    X, y = _frame()
    with pytest.raises(DataError, match=message) as caught:
        run_ml_workflow(features, {"estimator": "logistic_regression"}, X=mutate(X), y=y,
                        validation_strategy="none", output_dir=tmp_path / "out")
    assert "did you mean '0'" not in str(caught.value)


def test_partly_unparsable_datetime_column_trains_with_a_warning(tmp_path):
    X, y = _frame()
    X.loc[:4, "signup"] = "not a date"
    results = run_ml_workflow([{"name": "age", "type": "numeric"},
                               {"name": "signup", "type": "datetime"}],
                              {"estimator": "logistic_regression"}, X=X, y=y,
                              validation_strategy="none", output_dir=tmp_path)
    reasons = [w.reason for w in results.warnings if w.step == "data_loading"]
    assert reasons and "5 of 40 values do not parse as dates" in reasons[0]


# ---- MLflow: names and stores

def test_unusable_local_tracking_store_leaves_no_directory(tmp_path, monkeypatch):
    from orchestrator.tracking.uri import check_tracking_reachable

    import mlflow
    from packaging.version import Version

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    left = []
    # MLflow 3.17 (the pinned version) refuses plain file stores: nothing may be left behind.
    # Older in-range releases (3.9, the lowest tested) still accept them, and then "my store"
    # is a usable store that MLflow itself created, not litter.
    try:
        check_tracking_reachable("my store", 5)
    except TrackingUnavailableError as exc:
        assert "cannot use my store" in str(exc)
    else:
        assert Version(mlflow.__version__) < Version("3.17"), "a file store was accepted"
        left.append("my store")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(TrackingUnavailableError, match="is a file"):
        check_tracking_reachable(f"sqlite:///{tmp_path}/a_file/sub/mlflow.db", 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a_file", *left])


def test_credential_in_an_mlflow_name_is_refused_before_anything_is_sent(tmp_path):
    from orchestrator.specs import parse_specs
    from orchestrator.tracking import start_tracking

    specs = parse_specs(feature_specs=[{"name": "age", "type": "numeric"}],
                        model_spec={"estimator": "logistic_regression"},
                        mlflow_spec={"tracking_uri": f"sqlite:///{tmp_path}/store/m.db",
                                     "experiment_name": "churn password=hunter2"},
                        data_given=True)
    with pytest.raises(TrackingError, match="experiment_name looks like it contains a "
                       "credential") as caught:
        start_tracking(specs.mlflow, resolved_config={})
    assert "hunter2" not in str(caught.value)
    assert not (tmp_path / "store").exists()


# ---- Spark: library errors become one message, Spark's own log stays off the console

@pytest.mark.spark
def test_delta_file_and_bad_filter_are_one_message(spark, tmp_path, monkeypatch, capsys):
    (tmp_path / "t").mkdir()
    spark.createDataFrame(pd.DataFrame({"age": [1.0, 2.0, 3.0, 4.0] * 3,
                                        "churned": [0, 1] * 6})) \
        .write.format("delta").save(str(tmp_path / "t" / "churn"))
    a_file = tmp_path / "t" / "churn.csv"
    a_file.write_text("age,churned\n1,0\n")
    cases = [(GOOD.replace("data/churn", str(a_file)),
              f"{str(a_file)!r} is a file, not a Delta table"),
             (GOOD.replace("data/churn", "t/churn").replace(
                 "label: churned", "label: churned, filter: 'no_such_column > 1'"),
              "no_such_column")]
    for config, needle in cases:
        (tmp_path / "job.yml").write_text(config)
        code, err, _ = _cli_case(tmp_path, monkeypatch, capsys, ["run", "job.yml"])
        err_lines = [line for line in err.splitlines() if " INFO " not in line
                     and " WARNING " not in line]
        assert code in (1, 2), err
        assert needle in err, err
        assert not any(mark in err for mark in TRACE_MARKS), err
        assert not any(line.lstrip().startswith("{") for line in err_lines), err
        assert "did you mean" not in err or str(a_file) not in err.split("did you mean")[1]


@pytest.mark.spark
def test_missing_metastore_table_leaves_no_spark_warehouse(tmp_path):
    """A fresh process (its own session): the warehouse is not made in the working directory."""
    (tmp_path / "job.yml").write_text(GOOD.replace("path: data/churn", "table: no_such_table"))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "run", "job.yml",
                           "--master", "local[1]"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode in (1, 2), done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_table" in errors[0], done.stderr[-3000:]
    assert not any(mark in done.stderr for mark in TRACE_MARKS), done.stderr[-3000:]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "spark-warehouse" not in left and "metastore_db" not in left, left


def test_library_error_message_keeps_the_first_line_only():
    from orchestrator.entrypoints.cli import library_error_message

    exc = RuntimeError("Spark said no\n\tat org.apache.spark.Foo(Foo.scala:1)\n")
    assert library_error_message(exc) == "Spark said no (RuntimeError)"
    assert "Permission denied" in library_error_message(
        PermissionError(13, "Permission denied", "/nope"))
