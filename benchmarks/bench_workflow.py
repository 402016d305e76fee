"""Benchmark: run_ml_workflow (X given, no optional steps) next to the same work in plain scikit-learn.

The baseline fits the same pipeline on all rows and cross-validates it with
5 stratified folds, scoring roc_auc: what a user would write by hand. Both run
alternately, several times, in one process; the medians and their ratio are
printed (goal: at most 1.1x).

    .venv/bin/python benchmarks/bench_workflow.py [--rows 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, cross_val_score

from orchestrator import build_ml_pipeline, run_ml_workflow


def make_data(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, 12)), columns=[f"x{i}" for i in range(12)])
    X["plan"] = rng.choice(["basic", "pro", "team", "enterprise"], size=rows)
    X["region"] = rng.choice([f"r{i}" for i in range(20)], size=rows)
    logit = X["x0"] - 0.5 * X["x1"] + (X["plan"] == "pro") * 0.8 + rng.normal(size=rows)
    return X, (logit > 0).astype(int)


FEATURES = [{"columns": [f"x{i}" for i in range(12)], "type": "numeric"},
            {"columns": ["plan", "region"], "type": "categorical"}]


def run_plain(X, y, model_spec):
    pipeline = build_ml_pipeline(FEATURES, model_spec)
    pipeline.fit(X, y)
    scores = cross_val_score(build_ml_pipeline(FEATURES, model_spec), X, y, scoring="roc_auc",
                             cv=StratifiedKFold(5, shuffle=True, random_state=42))
    return scores.mean()


def run_ours(X, y, model_spec, output_dir):
    results = run_ml_workflow(FEATURES, model_spec, X=X, y=y, validation_params={"cv_folds": 5},
                              output_dir=output_dir)
    return results["cv_score"]


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    X, y = make_data(args.rows)
    output_dir = tempfile.mkdtemp(prefix="bench-workflow-")
    for name, model_spec in (
            ("logistic_regression", {"estimator": "logistic_regression",
                                     "params": {"max_iter": 500}}),
            ("random_forest", {"estimator": "random_forest",
                               "params": {"n_estimators": 50, "max_depth": 8,
                                          "random_state": 0}})):
        plain_times, our_times = [], []
        run_plain(X, y, model_spec)  # warm-up: imports, caches
        for _ in range(args.repeats):
            start = time.perf_counter()
            plain_score = run_plain(X, y, model_spec)
            plain_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            our_score = run_ours(X, y, model_spec, output_dir)
            our_times.append(time.perf_counter() - start)
        plain, ours = statistics.median(plain_times), statistics.median(our_times)
        print(f"{name:<20} rows={args.rows} plain sklearn {plain:7.3f} s   run_ml_workflow "
              f"{ours:7.3f} s   ratio {ours / plain:5.2f}x   (same cv roc_auc: "
              f"{plain_score:.4f} vs {our_score:.4f})")


if __name__ == "__main__":
    main()
