"""Step 7: tracking a workflow run in MLflow, never blocking and never fatal.

uri.py (where runs go, a bounded reachability check), params.py (params and
metrics as MLflow takes them), model_logging.py (skops model, signature,
registry), lineage.py (Delta inputs), plots.py (the run's plots), run.py
(start, log, end; child runs), run_reader.py (a finished run read back, for
report.py and reproduce.py) and promotion.py (the promotion gate). This
module re-exports what callers use.

Probabilities through pyfunc: the model is logged with
``pyfunc_predict_fn="predict"``, so ``pyfunc.predict`` returns the same labels
as the pipeline (what ``mlflow models serve`` and ``spark_udf`` return). Class
probabilities come from the same pyfunc object, as ``mlflow.evaluate`` does::

    model = mlflow.pyfunc.load_model(uri)
    proba = model.get_raw_model().predict_proba(to_model_input(X))
"""

from __future__ import annotations

from orchestrator.errors import ModelLoggingError, TrackingError, TrackingUnavailableError
from orchestrator.tracking.model_logging import MODEL_NAME, to_model_input, trusted_model_types
from orchestrator.tracking.params import flatten_params
from orchestrator.tracking.run import (
    ChildRun,
    RunContext,
    Tracker,
    child_run,
    ensure_run_ends,
    start_tracking,
)
from orchestrator.tracking.uri import (
    bounded_http_env,
    check_tracking_reachable,
    default_tracking_uri,
    resolve_tracking_uri,
)

__all__ = [
    "MODEL_NAME",
    "ChildRun",
    "ModelLoggingError",
    "RunContext",
    "Tracker",
    "TrackingError",
    "TrackingUnavailableError",
    "bounded_http_env",
    "check_tracking_reachable",
    "child_run",
    "default_tracking_uri",
    "ensure_run_ends",
    "flatten_params",
    "resolve_tracking_uri",
    "start_tracking",
    "to_model_input",
    "trusted_model_types",
]
