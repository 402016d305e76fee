"""Tuning: every backend on small real problems, stopping rules, degradation, value types.

The oracle for "better params than the defaults" is scikit-learn's own
``cross_val_score`` on the same folds, computed here, not by the tuning code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from orchestrator.specs.problems import Problems
from orchestrator.specs.model import parse_model_spec
from orchestrator.specs.tuning import parse_tuning_spec
from orchestrator.tuning import (
    TuningError,
    build_hyperopt_space,
    choose_backend,
    trials_without_improvement,
    tune,
)

METRIC = "neg_log_loss"
# A default that is clearly bad: C this small shrinks every coefficient to ~0 (log loss ~0.69).
BAD_DEFAULT = {"C": 1e-5, "max_iter": 300}
SPACE = {
    "C": {"dist": "loguniform", "low": 0.01, "high": 100},
    "max_iter": {"dist": "quniform", "low": 200, "high": 400, "q": 50},
    "fit_intercept": {"dist": "choice", "options": [True, False]},
    "preprocess__numeric_0__scaler__with_mean": {"dist": "choice", "options": [True, False]},
}


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=3)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]), pd.Series(y, name="label")


def _specs(tuning, estimator="logistic_regression", params=None):
    problems = Problems()
    model = parse_model_spec({"estimator": estimator,
                              "params": BAD_DEFAULT if params is None else params}, problems)
    spec = parse_tuning_spec(tuning, problems, model)
    assert problems.messages == []
    return model, spec


def _pipeline(model_spec, columns):
    numeric = Pipeline([("imputer", SimpleImputer()), ("scaler", StandardScaler())])
    return Pipeline([("preprocess", ColumnTransformer([("numeric_0", numeric, list(columns))])),
                     ("model", model_spec.make_estimator())])


def _cv_score(pipeline, X, y, params, seed=42, folds=3):
    """The independent oracle: sklearn's own CV score of the pipeline with ``params``."""
    from sklearn.base import clone

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    model = clone(pipeline).set_params(**params)
    return float(np.mean(cross_val_score(model, X, y, scoring=METRIC, cv=cv)))


def _check_value_types(outcome):
    best = outcome.best_params
    assert set(best) == {"model__C", "model__max_iter", "model__fit_intercept",
                         "preprocess__numeric_0__scaler__with_mean"}
    assert type(best["model__max_iter"]) is int and best["model__max_iter"] % 50 == 0
    assert type(best["model__C"]) is float and 0.01 <= best["model__C"] <= 100
    assert type(best["model__fit_intercept"]) is bool
    for trial in outcome.summary["trials"]:
        if trial["status"] == "cancelled":
            continue
        assert type(trial["params"]["max_iter"]) is int
        assert trial["params"]["fit_intercept"] in (True, False)
        assert type(trial["params"]["fit_intercept"]) is bool  # the value, never an index
    assert outcome.summary["best_params"]["C"] == best["model__C"]


def _tune_better_than_default(backend, data, spark=None, max_evals=8):
    X, y = data
    model, spec = _specs({"search_space": SPACE, "max_evals": max_evals, "backend": backend,
                          "parallelism": 2, "seed": 7})
    pipeline = _pipeline(model, X.columns)
    outcome = tune(pipeline, X, y, spec, model_spec=model, scoring=METRIC, spark=spark)

    default_score = _cv_score(pipeline, X, y, {}, seed=7)
    best_score = _cv_score(pipeline, X, y, outcome.best_params, seed=7)
    assert best_score > default_score + 0.1, (best_score, default_score)
    assert outcome.summary["best_score"] == pytest.approx(best_score, abs=1e-9)
    assert pipeline.get_params()["model__C"] == 1e-5  # the input pipeline is not modified
    summary = outcome.summary
    assert summary["backend"] == backend and summary["metric"] == METRIC
    assert summary["trials_run"] == summary["trials_ok"] == max_evals
    assert summary["stop_reason"] == "max_evals reached"
    _check_value_types(outcome)
    json.dumps(summary)  # the summary is plain data, ready to log
    return outcome


# ---------------------------------------------------------------- pure decisions


@pytest.mark.parametrize("scores, expected", [
    ([], 0), ([0.5], 0), ([0.5, 0.4, 0.3], 2), ([0.3, 0.4, 0.5], 0),
    ([None, None], 2), ([None, 0.2, None], 1), ([0.5, 0.5, 0.5], 2),
])
def test_trials_without_improvement_counts_completed_trials_after_the_best(scores, expected):
    assert trials_without_improvement(scores) == expected


@pytest.mark.parametrize("requested, spark_reason, hyperopt, optuna, expected", [
    ("auto", None, True, True, "spark"),
    ("auto", "no active SparkSession", True, True, "local"),
    ("auto", "no active SparkSession", False, True, "optuna"),
    ("local", None, True, False, "local"),
    ("spark", None, True, False, "spark"),
    ("optuna", None, False, True, "optuna"),
])
def test_choose_backend(requested, spark_reason, hyperopt, optuna, expected):
    backend, why = choose_backend(requested, spark_reason=spark_reason,
                                  hyperopt_installed=hyperopt, optuna_installed=optuna)
    assert backend == expected and why
    if expected == "local" and requested == "auto":
        assert spark_reason in why


@pytest.mark.parametrize("requested, spark_reason, hyperopt, optuna, match", [
    ("spark", "no active SparkSession", True, True, "needs a SparkContext and no active"),
    ("spark", None, False, True, "hyperopt is not installed"),
    ("optuna", None, True, False, "optuna is not installed"),
    ("auto", "no active SparkSession", False, False, "install hyperopt or optuna"),
])
def test_unavailable_backend_raises_a_tuning_error(requested, spark_reason, hyperopt, optuna,
                                                   match):
    with pytest.raises(TuningError, match=match):
        choose_backend(requested, spark_reason=spark_reason, hyperopt_installed=hyperopt,
                       optuna_installed=optuna)


def test_worker_spark_conf_only_for_local_masters():
    from orchestrator.cluster import worker_spark_conf

    conf = worker_spark_conf("local[2]")
    assert conf["spark.python.daemon.module"] == "orchestrator.cluster.worker"
    assert worker_spark_conf("yarn") == {} and worker_spark_conf(None) == {}


def test_hyperopt_space_yields_ints_and_choice_values_not_indices():
    from hyperopt.pyll.stochastic import sample

    _, spec = _specs({"search_space": {
        "max_iter": {"dist": "randint", "low": 100, "high": 103},
        "C": {"dist": "choice", "options": [0.5, {"dist": "quniform", "low": 2, "high": 8,
                                                  "q": 2}]},
        "penalty": {"dist": "choice", "options": ["l2", None]}}})
    space = build_hyperopt_space(spec.search_space)
    rng = np.random.default_rng(0)
    draws = [sample(space, rng=rng) for _ in range(60)]
    assert {type(d["model__max_iter"]) for d in draws} == {int}
    assert {d["model__max_iter"] for d in draws} == {100, 101, 102}
    nested = {d["model__C"] for d in draws} - {0.5}
    assert nested and nested <= {2, 4, 6, 8} and all(type(v) is int for v in nested)
    assert {d["model__penalty"] for d in draws} == {"l2", None}


# ---------------------------------------------------------------- backends on a real problem


def test_local_backend_finds_better_params_than_the_defaults(data):
    _tune_better_than_default("local", data)


def test_optuna_backend_finds_better_params_than_the_defaults(data):
    pytest.importorskip("optuna")
    _tune_better_than_default("optuna", data)


@pytest.mark.spark
def test_spark_backend_finds_better_params_than_the_defaults(spark, data):
    outcome = _tune_better_than_default("spark", data, spark=spark)
    assert outcome.summary["parallelism"] == 2
    assert all(t["duration_s"] > 0 and t["wall_s"] >= t["duration_s"] - 0.01
               for t in outcome.summary["trials"])


@pytest.mark.spark
def test_optuna_backend_runs_its_trials_on_executors_through_the_task_runner(spark, data):
    pytest.importorskip("optuna")
    import mlflow

    uri_before = mlflow.get_tracking_uri()
    outcome = _tune_better_than_default("optuna", data, spark=spark)
    summary = outcome.summary
    assert "asks and tells on the driver, trials run on executors" in summary["backend_reason"]
    assert summary["parallelism"] == 2
    assert sorted(t["number"] for t in summary["trials"]) == list(range(8))
    assert all(t["duration_s"] > 0 and t["wall_s"] >= t["duration_s"] - 0.01
               for t in summary["trials"])
    assert mlflow.get_tracking_uri() == uri_before  # the temporary sqlite store is not left set


@pytest.mark.spark
def test_auto_picks_spark_when_a_session_is_active(spark, data):
    X, y = data
    model, spec = _specs({"search_space": {"C": SPACE["C"]}, "max_evals": 2})
    outcome = tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC,
                   spark=spark)
    assert outcome.summary["backend"] == "spark"
    assert "SparkContext is usable" in outcome.summary["backend_reason"]


# ---------------------------------------------------------------- stopping rules


def _flat_space_specs(backend, rounds, max_evals=20, **extra):
    # Every trial scores the same: nothing ever improves on the first completed trial.
    return _specs({"search_space": {"fit_intercept": {"dist": "choice", "options": [True]}},
                   "max_evals": max_evals, "early_stopping_rounds": rounds, "backend": backend,
                   "parallelism": 2, **extra})


def test_early_stopping_stops_after_rounds_without_improvement_local(data):
    X, y = data
    model, spec = _flat_space_specs("local", rounds=3)
    progress = []
    outcome = tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC,
                   progress=progress.append)
    assert outcome.summary["stop_reason"] == "early stopping"
    assert outcome.summary["trials_run"] == 4  # the best one plus 3 without improvement
    assert [p.completed for p in progress] == [1, 2, 3, 4]
    assert progress[-1].best_score == pytest.approx(outcome.summary["best_score"])
    assert all(p.elapsed_s >= 0 and p.max_evals == 20 for p in progress)


@pytest.mark.spark
def test_early_stopping_counts_completed_trials_on_spark(spark, data):
    X, y = data
    model, spec = _flat_space_specs("spark", rounds=3)
    outcome = tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC,
                   spark=spark)
    summary = outcome.summary
    assert summary["stop_reason"] == "early stopping"
    # 4 completed trials trigger the stop; with 2 running at once one more may finish or be
    # cancelled, never the 20 asked for.
    assert 4 <= summary["trials_ok"] <= 5
    assert summary["trials_run"] <= 6


def _slow_specs(backend, timeout_s):
    # ~0.2 s per trial on an idle machine (several times that on a loaded one), so the
    # budget ends the run long before max_evals whatever the load.
    return _specs({"search_space": {"n_estimators": {"dist": "quniform", "low": 20,
                                                     "high": 40, "q": 10}},
                   "max_evals": 200, "timeout_s": timeout_s, "backend": backend,
                   "parallelism": 2}, estimator="random_forest", params={"random_state": 0})


@pytest.mark.parametrize("backend", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_timeout_keeps_finished_trials_and_stops(backend, data, request):
    spark = request.getfixturevalue("spark") if backend == "spark" else None
    X, y = data
    if spark is not None:
        # Warm the Python workers first: a cold daemon start alone can exceed the budget.
        warm_model, warm_spec = _specs({"search_space": {"C": SPACE["C"]}, "max_evals": 2,
                                        "backend": "spark", "parallelism": 2})
        tune(_pipeline(warm_model, X.columns), X, y, warm_spec, model_spec=warm_model,
             scoring=METRIC, spark=spark)
    model, spec = _slow_specs(backend, timeout_s=5)
    outcome = tune(_pipeline(model, X.columns), X, y, spec, model_spec=model,
                   scoring="roc_auc", spark=spark)
    summary = outcome.summary
    assert summary["stop_reason"] == "timeout"
    assert 1 <= summary["trials_ok"] < 200
    # Finished trials are kept, running ones cancelled: the run ends soon after the budget
    # (local: the running trial finishes first).
    assert summary["wall_time_s"] < 5 + 8
    assert type(outcome.best_params["model__n_estimators"]) is int
    if backend == "spark":
        assert summary["trials_ok"] + summary["trials_cancelled"] == summary["trials_run"]


# ---------------------------------------------------------------- degradation


@pytest.mark.parametrize("backend", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_all_trials_failing_raises_with_the_reason(backend, data, request):
    spark = request.getfixturevalue("spark") if backend == "spark" else None
    X, y = data
    model, spec = _specs({"search_space": {"C": {"dist": "uniform", "low": -2, "high": -1}},
                          "max_evals": 3, "backend": backend, "parallelism": 2})
    with pytest.raises(TuningError, match=r"all 3 trials failed.*'C' parameter") as info:
        tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC,
             spark=spark)
    summary = info.value.summary
    assert summary["trials_failed"] == 3 and summary["trials_ok"] == 0
    assert summary["best_params"] is None
    assert all("InvalidParameterError" in t["error"] for t in summary["trials"])


def test_unknown_preprocessing_param_is_named_with_a_suggestion(data):
    X, y = data
    model, spec = _specs({"search_space": {
        "preprocess__numeric_0__scaler__with_mea": {"dist": "choice", "options": [True]}}})
    with pytest.raises(TuningError, match=r"did you mean 'preprocess__numeric_0__scaler__with_mean'"):
        tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC)


def test_without_a_spark_context_spark_is_unavailable_and_auto_runs_locally(tmp_path):
    """A real process with no SparkSession: backend spark degrades, auto falls back to local."""
    script = tmp_path / "no_spark.py"
    script.write_text(textwrap.dedent("""
        import json
        import pandas as pd
        from sklearn.datasets import make_classification
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from orchestrator.specs.problems import Problems
        from orchestrator.specs.model import parse_model_spec
        from orchestrator.specs.tuning import parse_tuning_spec
        from orchestrator.tuning import TuningError, tune

        X, y = make_classification(n_samples=120, n_features=4, random_state=0)
        X = pd.DataFrame(X, columns=list("abcd"))
        problems = Problems()
        model = parse_model_spec({"estimator": "logistic_regression"}, problems)
        pipe = Pipeline([("preprocess", ColumnTransformer([("numeric_0", StandardScaler(),
                                                             list("abcd"))])),
                         ("model", LogisticRegression())])
        report = {}
        for backend in ("spark", "auto"):
            spec = parse_tuning_spec({"search_space": {"C": {"dist": "uniform", "low": 0.1,
                                      "high": 1}}, "max_evals": 2, "backend": backend},
                                     problems, model)
            try:
                out = tune(pipe, X, y, spec, model_spec=model, scoring="roc_auc")
                report[backend] = [out.summary["backend"], out.summary["backend_reason"]]
            except TuningError as exc:
                report[backend] = ["error", str(exc)]
        print(json.dumps(report))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, timeout=180, cwd=str(_repo_root()))
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["spark"][0] == "error"
    assert "backend 'spark' is unavailable" in report["spark"][1]
    assert "no active SparkSession" in report["spark"][1]
    assert report["auto"][0] == "local" and "no active SparkSession" in report["auto"][1]


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- MLflow child runs


def test_each_trial_is_logged_as_a_child_run(data, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from orchestrator.specs.mlflow import MLflowSpec
    from orchestrator.tracking import ensure_run_ends, start_tracking

    X, y = data
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model, spec = _specs({"search_space": {"C": SPACE["C"], "max_iter": SPACE["max_iter"]},
                          "max_evals": 3, "backend": "local"})
    outcome = tune(_pipeline(model, X.columns), X, y, spec, model_spec=model, scoring=METRIC)
    tracker = start_tracking(MLflowSpec(tracking_uri=uri, experiment_name="tuning-test"),
                             resolved_config={})
    with ensure_run_ends(tracker):
        assert tracker.log_trials(outcome.summary["trials"], metric=METRIC) is None
    children = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{tracker.run_id}'")
    assert len(children) == 3
    logged = sorted((float(r.data.params["C"]), int(r.data.params["max_iter"]),
                     r.data.metrics[METRIC]) for r in children)
    expected = sorted((t["params"]["C"], t["params"]["max_iter"], t["score"])
                      for t in outcome.summary["trials"])
    assert [(c, i) for c, i, _ in logged] == [(c, i) for c, i, _ in expected]
    assert [s for *_, s in logged] == pytest.approx([s for *_, s in expected])
    assert {r.info.start_time for r in children} == {t["start_ms"]
                                                     for t in outcome.summary["trials"]}
    assert all(r.info.status == "FINISHED" for r in children)


@pytest.mark.spark
def test_sigterm_during_spark_tuning_cancels_the_running_trials_and_exits_quickly(tmp_path):
    """A job stopped by its scheduler does not wait for its running trials to end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "tune.py"
    script.write_text(
        "import sys, time\n"
        "from hyperopt import fmin, hp, tpe\n"
        "from orchestrator.entrypoints.process import termination_signals_raise\n"
        "from orchestrator.io.session import get_spark\n"
        "from orchestrator.tuning.spark_trials import BroadcastSparkTrials\n"
        "spark = get_spark(master='local[2]', conf={'spark.ui.enabled': 'false'})\n"
        "def slow(params):\n"
        "    time.sleep(120)\n"
        "    return params['x']\n"
        "with termination_signals_raise():\n"
        "    print('tuning', flush=True)\n"
        "    fmin(slow, {'x': hp.uniform('x', 0, 1)}, tpe.suggest, 4,\n"
        "         trials=BroadcastSparkTrials(parallelism=2, spark_session=spark))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(_repo_root()), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    try:
        seen = []
        while not seen or seen[-1] != "tuning":
            line = process.stdout.readline()
            assert line, "".join(seen)[-3000:]
            seen.append(line.strip())
        time.sleep(8)  # both trials' Spark jobs are running their two-minute sleeps
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    output = "\n".join(seen) + process.stdout.read()
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert took < 20, f"SIGTERM took {took:.1f} s to stop the tuning job"
    assert "Cancelling all running jobs" in output or "cancel" in output.lower()
