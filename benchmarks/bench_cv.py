"""Benchmark of cross-validation folds as cluster tasks, and of nested CV (a measurement, not a test).

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_cv.py [--rows 200000] [--skip-nested]

Part 1, three ways in one run on the same folds (a random forest of ``--trees``
trees, ``n_jobs=1``, on ``--rows`` rows x 20 features, 5 folds):

* the folds as Spark tasks on local[2] (:func:`orchestrator.steps.validation.cross_validate_procedure`
  with the session): goal <= 0.6x the sequential time and <= 1.1x joblib;
* the same folds on the driver one after another (``on_driver: true``);
* scikit-learn's ``cross_validate(..., n_jobs=2)`` on the driver (joblib).

Part 2: nested CV, 5 outer folds x 8 trials, wall time next to the plain tuned
run (tuning + 5-fold CV of the tuned model), and the optimistic (tuned then
cross-validated on the same rows) versus the nested score on a small, noisy
dataset with many features where choosing on the same rows shows.

The machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd


def _session():
    from orchestrator.cluster import worker_spark_conf
    from orchestrator.io.session import get_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = get_spark("bench-cv", master="local[2]", conf={
        "spark.ui.enabled": "false", "spark.default.parallelism": "2",
        "spark.sql.shuffle.partitions": "2", "spark.driver.memory": "6g",
        **worker_spark_conf("local[2]")})
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def part_folds(spark, rows: int, trees: int) -> None:
    from sklearn.base import clone
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_validate

    from orchestrator.specs.validation import ValidationSpec
    from orchestrator.steps.metrics import WorkflowScorer
    from orchestrator.steps.validation import cross_validate_procedure, make_folds

    X, y = make_classification(n_samples=rows, n_features=20, n_informative=8, random_state=0)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
    y = pd.Series(y)
    model = RandomForestClassifier(n_estimators=trees, n_jobs=1, random_state=0,
                                   max_samples=None)
    scorer = WorkflowScorer("binary", "roc_auc", 1)
    spec = ValidationSpec(cv_folds=5)
    folds = make_folds(spec, "binary", X, y, None)

    started = time.perf_counter()
    cluster = cross_validate_procedure(clone(model), X, y, spec, scorer, "binary", session=spark)
    t_cluster = time.perf_counter() - started
    started = time.perf_counter()
    driver = cross_validate_procedure(clone(model), X, y, ValidationSpec(cv_folds=5,
                                      on_driver=True), scorer, "binary", session=spark)
    t_driver = time.perf_counter() - started
    started = time.perf_counter()
    joblib = cross_validate(clone(model), X, y, cv=folds, scoring="roc_auc", n_jobs=2)
    t_joblib = time.perf_counter() - started

    same = np.allclose(cluster.metrics["roc_auc"]["folds"], joblib["test_score"], rtol=1e-9) \
        and np.allclose(driver.metrics["roc_auc"]["folds"], joblib["test_score"], rtol=1e-9)
    print(f"\n== 5-fold CV, random forest {trees} trees n_jobs=1, {rows} rows x 20 features")
    print(f"  cluster (local[2], {cluster.details['placement']}): {t_cluster:8.1f} s")
    print(f"  driver, one fold after another:                    {t_driver:8.1f} s")
    print(f"  scikit-learn cross_validate(n_jobs=2):             {t_joblib:8.1f} s")
    print(f"  cluster / sequential = {t_cluster / t_driver:.2f}x (goal <= 0.6x)")
    print(f"  cluster / joblib     = {t_cluster / t_joblib:.2f}x (goal <= 1.1x)")
    print(f"  same fold scores on all three paths: {same}")


def part_nested(spark, rows: int) -> None:
    from sklearn.datasets import make_classification

    from orchestrator.workflow import run_ml_workflow

    # Few rows, many noise features, a wide space: choosing on the same rows flatters.
    X, y = make_classification(n_samples=rows, n_features=40, n_informative=3,
                               n_redundant=0, flip_y=0.2, random_state=1)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(40)])
    y = pd.Series(y)
    features = [{"name": c, "type": "numeric"} for c in X.columns]
    model = {"estimator": "random_forest", "params": {"n_estimators": 50, "n_jobs": 1},
             "metric": "roc_auc"}
    tuning = {"search_space": {"max_depth": {"dist": "randint", "low": 1, "high": 20},
                               "min_samples_leaf": {"dist": "randint", "low": 1, "high": 30},
                               "max_features": {"dist": "uniform", "low": 0.05, "high": 1.0}},
              "max_evals": 8, "cv_folds": 3, "seed": 3, "algo": "random"}
    started = time.perf_counter()
    plain = run_ml_workflow(features, model, X, y, tuning_spec=tuning, spark=spark,
                            validation_params={"cv_folds": 5})
    t_plain = time.perf_counter() - started
    started = time.perf_counter()
    nested = run_ml_workflow(features, model, X, y, tuning_spec=tuning, spark=spark,
                             validation_strategy="nested_cross_validation",
                             validation_params={"outer_folds": 5})
    t_nested = time.perf_counter() - started
    print(f"\n== nested CV, 5 outer folds x 8 trials (inner 3-fold), {rows} rows x 40 features")
    print(f"  plain tuned run (tuning + 5-fold CV): {t_plain:7.1f} s, "
          f"cv_score {plain.cv_score:.4f} (optimistic: tuned on the same rows)")
    print(f"  nested run (+ final tuning):          {t_nested:7.1f} s, "
          f"cv_score {nested.cv_score:.4f} ({nested.validation_details['placement']})")
    print(f"  nested / plain wall time = {t_nested / t_plain:.2f}x")
    print(f"  optimistic - nested score = {plain.cv_score - nested.cv_score:+.4f} "
          f"(inner best {plain.tuning_summary['best_score']:.4f})")
    for fold in nested.validation_details["nested"]:
        print(f"    outer fold {fold['fold']}: {fold['outer_score']:.4f} "
              f"(inner {fold['inner_score']:.4f}) {fold['best_params']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the CV part")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--nested-rows", type=int, default=300)
    parser.add_argument("--skip-nested", action="store_true")
    parser.add_argument("--skip-folds", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    spark = _session()
    try:
        if not args.skip_folds:
            part_folds(spark, args.rows, args.trees)
        if not args.skip_nested:
            part_nested(spark, args.nested_rows)
    finally:
        spark.stop()
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
