"""Test-only estimators that misbehave on purpose.

* :class:`WorkerKillingClassifier` kills its own process when told to: a Python
  worker dying mid-trial. Shipped to Spark's Python workers by value (tests
  register this module with pyspark's cloudpickle), so the workers need not
  import the tests package.
* :class:`SlowScoringClassifier` takes seconds per prediction call and leaves a
  marker file when a call starts and ends, so a fault can be injected while a
  scoring job's tasks are running. Logged to MLflow with this file as a
  ``code_paths`` entry, so drivers and executors import it from the model.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

from sklearn.linear_model import LogisticRegression


class WorkerKillingClassifier(LogisticRegression):
    """LogisticRegression whose ``fit`` SIGKILLs the process when ``kill_worker`` is set
    and it runs outside the driver (the driver's pid is given)."""

    def __init__(self, C=1.0, kill_worker=0, driver_pid=0, max_iter=200):
        super().__init__(C=C, max_iter=max_iter)
        self.kill_worker = kill_worker
        self.driver_pid = driver_pid

    def fit(self, X, y, sample_weight=None):
        if self.kill_worker and os.getpid() != self.driver_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(X, y, sample_weight=sample_weight)


class SlowScoringClassifier(LogisticRegression):
    """LogisticRegression whose ``predict`` and ``predict_proba`` each sleep ``delay_s``
    seconds, writing ``<marker_dir>/<pid>-<call id>.started`` before and
    ``<pid>-<call id>.done`` after (when ``marker_dir`` is set)."""

    def __init__(self, C=1.0, delay_s=0.0, marker_dir="", max_iter=200):
        super().__init__(C=C, max_iter=max_iter)
        self.delay_s = delay_s
        self.marker_dir = marker_dir

    def _slowly(self, method, X):
        call = os.path.join(self.marker_dir, f"{os.getpid()}-{uuid.uuid4().hex}") \
            if self.marker_dir else None
        if call:
            open(call + ".started", "w").close()
        time.sleep(self.delay_s)
        result = method(X)
        if call:
            open(call + ".done", "w").close()
        return result

    def predict(self, X):
        return self._slowly(super().predict, X)

    def predict_proba(self, X):
        return self._slowly(super().predict_proba, X)
