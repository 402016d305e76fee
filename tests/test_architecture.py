"""The package's shape: import layers, one error family, and the other libraries' internals we use.

Each private internal of another library that the package relies on is named
here with the version it was checked against, so an upgrade that removes it
fails loudly in one obvious place instead of somewhere deep in a run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def test_import_layers_and_no_cycles_hold():
    """`lint-imports` with the contracts in .importlinter (layers, no sibling cycles)."""
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([str(lint), "--config", str(REPO / ".importlinter")], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "2 kept, 0 broken" in run.stdout


def _package_modules():
    import orchestrator

    for info in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
        if info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_exception_class_is_in_errors_all():
    import orchestrator.errors as errors

    defined = {}
    for module in _package_modules():
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__.startswith("orchestrator") and not name.startswith("_")):
                defined[name] = value.__module__
    assert defined, "no exception classes found"
    assert {name: where for name, where in defined.items() if where != "orchestrator.errors"} \
        == {}, "exception classes must live in orchestrator/errors.py"
    assert set(defined) <= set(errors.__all__)
    for name in defined:
        assert issubclass(getattr(errors, name), errors.OrchestratorError)


def test_layout_has_the_documented_rooms():
    rooms = {p.name for p in (REPO / "orchestrator").iterdir() if p.is_dir()
             and (p / "__init__.py").exists()}
    assert {"specs", "io", "steps", "tuning", "tracking", "entrypoints", "cluster"} <= rooms
    readme = (REPO / "README.md").read_text()
    for room in ("specs/", "io/", "steps/", "tuning/", "tracking/", "entrypoints/", "cluster/"):
        assert room in readme, f"README's Layout section does not mention {room}"


# ---- other libraries' internals, each used in exactly one module of ours


def test_hyperopt_internals_used_by_the_hyperopt_backend():
    """hyperopt_backend.all_trials and spark_trials read Trials internals (hyperopt 0.3.0)."""
    import hyperopt
    from hyperopt import Trials
    from hyperopt.fmin import FMinIter

    trials = Trials()
    where = f"hyperopt {hyperopt.__version__}: orchestrator/tuning/hyperopt_backend.py"
    assert isinstance(getattr(trials, "_dynamic_trials", None), list), where
    assert "poll_interval_secs" in inspect.signature(FMinIter).parameters, where
    from hyperopt.spark import SparkTrials

    for name in ("_fmin_cancelled", "_fmin_cancelled_reason", "_spark_supports_job_cancelling"):
        assert name in inspect.getsource(SparkTrials), f"{where}: SparkTrials.{name} is gone"


def test_scikit_learn_scorer_internals_used_for_pos_label():
    """metrics._scorer_with_pos_label rebuilds a scorer with pos_label (scikit-learn 1.9)."""
    import sklearn
    from sklearn.metrics import get_scorer

    scorer = get_scorer("f1")
    where = f"scikit-learn {sklearn.__version__}: orchestrator/steps/metrics.py"
    for name in ("_score_func", "_kwargs", "_sign", "_response_method"):
        assert hasattr(scorer, name), f"{where}: scorer.{name} is gone"
    from sklearn.utils.validation import _check_feature_names_in  # noqa: F401 - transformers.py


def test_mlflow_default_experiment_resolution():
    """tracking.run._experiment_id asks MLflow which experiment a run without one gets."""
    import mlflow

    from mlflow.tracking import fluent

    assert callable(getattr(fluent, "_get_experiment_id", None)), (
        f"mlflow {mlflow.__version__}: mlflow.tracking.fluent._get_experiment_id is gone; "
        "orchestrator/tracking/run.py must find the default experiment another way")
