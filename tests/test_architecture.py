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

import pytest


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


def _documented_layout() -> set[str]:
    """Module paths (``tuning/space.py``, ``workflow.py``) in README's Layout tree, where a
    ``folder/`` line at two spaces holds the ``name.py`` lines indented below it."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    tree = section.split("```text\n", 1)[1].split("```", 1)[0]
    documented, folder = set(), None
    for line in tree.splitlines():
        indent, name = len(line) - len(line.lstrip()), (line.split() or [""])[0]
        if indent == 2 and name.endswith("/"):
            folder = name
        elif indent == 2 and name.endswith(".py"):
            documented.add(name)
        elif indent == 4 and name.endswith(".py") and folder is not None:
            documented.add(folder + name)
    return documented


def test_layout_names_every_module_in_its_folder():
    rooms = {p.name for p in (REPO / "orchestrator").iterdir() if p.is_dir()
             and (p / "__init__.py").exists()}
    assert {"specs", "io", "steps", "tuning", "tracking", "entrypoints", "cluster"} <= rooms
    root = REPO / "orchestrator"
    modules = {path.relative_to(root).as_posix() for path in root.rglob("*.py")
               if "__pycache__" not in path.parts
               and not (path.name == "__init__.py" and path.parent != root)}
    documented = _documented_layout()
    folders = {m.rpartition("/")[0] + "/" for m in documented}
    assert sorted(f"{room}/" for room in rooms if f"{room}/" not in folders) == [], \
        "README's Layout section has no modules under these folders"
    assert sorted(modules - documented) == [], (
        "README's Layout section does not name these modules (one line each, under their "
        "folder)")


# ---- other libraries' internals, each used in exactly one module of ours


def test_hyperopt_internals_used_by_the_hyperopt_backend():
    """hyperopt_backend.all_trials and spark_trials read Trials internals (hyperopt 0.3.0).

    spark_trials reads ``_dynamic_trials`` itself: importing all_trials from
    hyperopt_backend, which imports spark_trials, would be an import cycle.
    """
    import hyperopt
    from hyperopt import Trials
    from hyperopt.fmin import FMinIter

    trials = Trials()
    where = (f"hyperopt {hyperopt.__version__}: orchestrator/tuning/hyperopt_backend.py "
             "(all_trials, also used by connect_backend.py) and spark_trials.py")
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


def test_scikit_learn_helpers_used_by_calibration():
    """steps/calibration.py indexes rows and checks weights as scikit-learn's own
    estimators do (checked against scikit-learn 1.9)."""
    import numpy as np
    import pandas as pd
    import sklearn
    import sklearn.utils
    from sklearn.utils import _safe_indexing

    where = f"scikit-learn {sklearn.__version__}: orchestrator/steps/calibration.py"
    # Underscored but public: exported in sklearn.utils.__all__ and documented.
    assert "_safe_indexing" in sklearn.utils.__all__, f"{where}: sklearn.utils._safe_indexing"
    rows = _safe_indexing(pd.DataFrame({"a": [1, 2, 3]}), [2, 0])
    assert rows["a"].tolist() == [3, 1], where
    # Private, with no public equivalent: the validation CalibratedClassifierCV applies.
    from sklearn.utils.validation import _check_sample_weight

    weights = _check_sample_weight([1, 2, 3], np.zeros((3, 1)))
    assert isinstance(weights, np.ndarray) and weights.tolist() == [1.0, 2.0, 3.0], where


def test_mlflow_dataset_entity_used_for_lineage():
    """tracking/lineage.py turns a MetaDataset into the entity MlflowClient.log_inputs takes
    (mlflow 3.x has no public conversion outside the fluent, process-global API)."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset

    source = DeltaDatasetSource(path="/data/churn", delta_table_version=3)
    dataset = MetaDataset(source=source, name="churn", digest="0123abcd")
    where = f"mlflow {mlflow.__version__}: orchestrator/tracking/lineage.py"
    assert callable(getattr(dataset, "_to_mlflow_entity", None)), \
        f"{where}: MetaDataset._to_mlflow_entity is gone"
    entity = dataset._to_mlflow_entity()
    assert isinstance(entity, Dataset) and entity.name == "churn", where
    assert entity.source_type == "delta_table" and "/data/churn" in entity.source, where


def test_pyspark_worker_daemon_entry_point():
    """cluster/worker.py preloads modules, then hands over to PySpark's own worker daemon."""
    import pyspark
    from pyspark import daemon

    assert callable(getattr(daemon, "manager", None)), (
        f"pyspark {pyspark.__version__}: pyspark.daemon.manager is gone; "
        "orchestrator/cluster/worker.py starts it as spark.python.daemon.module")


@pytest.mark.spark
@pytest.mark.classic_only("py4j internals exist only on a classic SparkContext")
def test_py4j_internals_of_the_classic_session(spark):
    """io/session.py (SparkContext._gateway), tuning/backend.py (SparkContext._jsc) and
    tracking/reproduce.py (SparkSession._jvm, _jsc) reach the JVM of a classic session."""
    import pyspark
    from pyspark import SparkContext

    where = f"pyspark {pyspark.__version__}"
    assert SparkContext._gateway is not None, f"{where}: SparkContext._gateway (io/session.py)"
    assert spark.sparkContext._jsc is not None, f"{where}: SparkContext._jsc (tuning/backend.py)"
    path = spark._jvm.org.apache.hadoop.fs.Path("file:///")
    assert path.getFileSystem(spark._jsc.hadoopConfiguration()).exists(path), \
        f"{where}: SparkSession._jvm/_jsc (tracking/reproduce.py)"
