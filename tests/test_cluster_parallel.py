"""scikit-learn's n_jobs parallelism as Spark tasks (orchestrator.cluster.joblib_backend)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from orchestrator.cluster.joblib_backend import (SHARED_MIN_BYTES, cluster_parallel,
                                                 dumps_with_shared, loads_with_shared)
from orchestrator.errors import ClusterTaskError


def _rows(n: int = 20_000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"x{i}" for i in range(8)])
    y = (X["x0"] - X["x1"] + rng.normal(size=n) > 0).astype(int).to_numpy()
    return X, y


def test_big_objects_become_references_and_come_back_identical():
    X, y = _rows()
    assert X.memory_usage().sum() >= SHARED_MIN_BYTES
    payload, found = dumps_with_shared(("fold", X, y, X), {})
    assert set(found) == {id(X)}  # y (160 kB) stays inline; X is referenced twice, sent once
    assert len(payload) < 200_000
    name, X_back, y_back, X_again = loads_with_shared(payload, found)
    assert name == "fold" and X_back is X_again
    pd.testing.assert_frame_equal(X_back, X)
    np.testing.assert_array_equal(y_back, y)
    inline, none_found = dumps_with_shared(X, {}, extract=False)
    assert not none_found and len(inline) > SHARED_MIN_BYTES
    with pytest.raises(Exception, match="unknown shared object"):
        loads_with_shared(payload, {})


@pytest.mark.spark
def test_calibration_folds_run_as_tasks_and_equal_the_driver_fit(spark):
    from joblib import Parallel, delayed
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    X, y = _rows()
    folds = StratifiedKFold(4, shuffle=True, random_state=0)
    on_driver = CalibratedClassifierCV(LogisticRegression(), cv=folds).fit(X, y)
    with cluster_parallel(spark, 2, description="calibration fold") as backend:
        on_cluster = CalibratedClassifierCV(LogisticRegression(), cv=folds).fit(X, y)
        # Builtins: the workers import them (a test module's functions they cannot).
        pids = Parallel()(delayed(os.getpid)() for _ in range(2))
        rows = Parallel()(delayed(len)(X) for _ in range(2))
        shared_sets = len(backend._broadcasts) if backend._runner is None else 1
    np.testing.assert_allclose(on_cluster.predict_proba(X), on_driver.predict_proba(X),
                               rtol=1e-12)
    assert len(on_cluster.calibrated_classifiers_) == 4
    assert rows == [len(X), len(X)]
    assert os.getpid() not in pids  # ran in Spark's Python workers
    assert shared_sets == 1  # the rows travelled once for all 8 tasks


@pytest.mark.spark
def test_a_failing_task_raises_a_cluster_task_error_naming_it(spark):
    from joblib import Parallel, delayed

    with pytest.raises(ClusterTaskError, match="calibration fold .* failed: ValueError: .*'two'"):
        with cluster_parallel(spark, 2, description="calibration fold"):
            Parallel()(delayed(int)(text) for text in ("1", "two", "3"))


@pytest.mark.spark
def test_the_calibration_step_fits_its_folds_on_the_cluster_with_the_same_model(spark, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from orchestrator.specs.calibration import CalibrationSpec
    from orchestrator.steps.calibration import calibrate
    from orchestrator.steps.weights import request_sample_weight

    X, y = _rows(4000)
    pipeline = request_sample_weight(
        Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]))
    spec = CalibrationSpec(method="sigmoid", cv=3, keep_if_worse=True)
    weights = np.where(y == 1, 2.0, 1.0)
    driver = calibrate(pipeline, X, y, spec, output_dir=tmp_path / "driver",
                       sample_weight=weights)
    cluster = calibrate(pipeline, X, y, spec, output_dir=tmp_path / "cluster",
                        sample_weight=weights, session=spark)
    assert driver.summary["folds_placement"] == "on the driver: no SparkSession"
    assert cluster.summary["folds_placement"] == "on the cluster: 2 of the 3 folds at once"
    assert cluster.summary["metrics_after"] == pytest.approx(driver.summary["metrics_after"],
                                                             rel=1e-9)
    np.testing.assert_allclose(cluster.model.predict_proba(X), driver.model.predict_proba(X),
                               rtol=1e-9)


@pytest.mark.spark
def test_the_backend_works_again_after_a_failure_in_the_same_block(spark):
    from joblib import Parallel, delayed

    X, _ = _rows()
    with cluster_parallel(spark, 2, description="fold"):
        with pytest.raises(ClusterTaskError, match="fold .* failed: ValueError"):
            Parallel()(delayed(int)(text) for text in ("1", "two", "3", "4", "5"))
        # joblib aborted the first call: the next one in the same block runs in full.
        assert Parallel()(delayed(len)(X) for _ in range(3)) == [len(X)] * 3


def test_a_batch_that_cannot_be_prepared_fails_its_future_instead_of_raising():
    from orchestrator.cluster.joblib_backend import _backend_class

    import functools
    import threading

    backend = _backend_class()(None, 2, "fold")
    backend.configure(n_jobs=2)
    calls = []
    # A lock cannot be pickled: the batch fails in submit itself, before any task exists.
    future = backend.submit(functools.partial(len, threading.Lock()), callback=calls.append)
    assert future.done() and calls == [future]
    with pytest.raises(TypeError, match="pickle"):
        future.result()
    assert backend._submitted == 1 and backend._pool is not None
    backend.close()
