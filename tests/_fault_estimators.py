"""An estimator that kills its own process when told to: a Python worker dying mid-trial.

Shipped to Spark's Python workers by value (tests register this module with
pyspark's cloudpickle), so the workers need not import the tests package.
"""

from __future__ import annotations

import os
import signal

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
