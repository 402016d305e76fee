"""The wheel on a cluster: declared ranges, tested bounds, and an install that replaces nothing.

requirements.txt declares the ranges the wheel installs with; constraints.txt pins the set .venv
is tested with and constraints-lowest.txt the lowest set, which ``bash dev.sh test`` installs in
.venv-lowest (Python 3.11) for the fast tests and an end-to-end training job. The fast tests here
check that those files agree; the ``packaging`` test plays a cluster: a Python 3.13 venv that
already holds its own in-range scikit-learn and MLflow (constraints-runtime.txt), then ``pip
install`` of the built wheel, ``pip list`` before and after, and a training job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# Where a runtime keeps its own versions of these, our wheel must accept them as they are.
RUNTIME_OWNED = ("scikit-learn", "mlflow")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for requirement in _requirements(path):
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{path.name}: {requirement} is not an exact pin"
        pins[_canonical(requirement.name)] = Version(spec.version)
    return pins


def _lower_bound(requirement: Requirement) -> Version:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    assert bounds, f"requirements.txt: {requirement} declares no lower bound"
    return max(bounds)


DECLARED = _requirements(ROOT / "requirements.txt")


@pytest.mark.parametrize("requirement", DECLARED, ids=lambda r: r.name)
def test_declared_lower_bound_is_the_version_the_lowest_stage_installs(requirement):
    lowest = _pins(ROOT / "constraints-lowest.txt")
    assert lowest[_canonical(requirement.name)] == _lower_bound(requirement)


@pytest.mark.parametrize("requirement", DECLARED, ids=lambda r: r.name)
def test_pinned_test_set_is_inside_the_declared_range(requirement):
    pinned = _pins(ROOT / "constraints.txt")
    assert requirement.specifier.contains(pinned[_canonical(requirement.name)])


@pytest.mark.parametrize("name", RUNTIME_OWNED)
def test_runtime_versions_are_in_range_and_differ_from_the_lowest_and_pinned(name):
    declared = next(r for r in DECLARED if _canonical(r.name) == name)
    runtime = _pins(ROOT / "constraints-runtime.txt")[name]
    assert declared.specifier.contains(runtime)
    assert runtime not in (_pins(ROOT / "constraints.txt")[name],
                           _pins(ROOT / "constraints-lowest.txt")[name])


def test_the_wheel_takes_its_version_from_the_package():
    from orchestrator._version import __version__

    # The lowest stage's uv venv has no setuptools (uv installs the package without it).
    pytest.importorskip("setuptools", reason="setup.py needs setuptools in this interpreter")
    # setup.py --version evaluates setup() without building anything.
    out = _run(sys.executable, "setup.py", "--version", cwd=ROOT)
    assert out.strip().splitlines()[-1] == __version__


def _runtime_python() -> str:
    candidate = os.environ.get("ORCHESTRATOR_RUNTIME_PYTHON", "python3.13")
    found = shutil.which(candidate)
    # A pyenv shim is on PATH even for a version it cannot run.
    if found is not None and subprocess.run([found, "--version"], capture_output=True).returncode:
        found = None
    if found is None:
        message = (f"no Python for the runtime venv: {candidate!r} not found; set "
                   "ORCHESTRATOR_RUNTIME_PYTHON to a Python 3.13 interpreter")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _uv() -> str:
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.fail(f"uv not found next to {sys.executable}: install requirements-dev.txt")
    return str(uv)


def _run(*args: str, cwd: Path | None = None, env: dict | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _freeze(python: Path) -> dict[str, str]:
    # pip list, not pip freeze: freeze names a wheel installed from a file by its path.
    listed = json.loads(_run(str(python), "-m", "pip", "list", "--format=json"))
    return {_canonical(package["name"]): package["version"] for package in listed}


def _build_wheel(out: Path) -> Path:
    # Built from a copy so no build/ or egg-info lands in the shared work tree.
    source = out / "source"
    source.mkdir()
    for name in ("setup.py", "README.md", "requirements.txt"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "orchestrator", source / "orchestrator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(out / "dist"), str(source))
    (wheel,) = (out / "dist").glob("orchestrator-*.whl")
    return wheel


TRAINING_JOB = """
import json, sys
from pathlib import Path
import mlflow, pandas as pd, sklearn
from sklearn.datasets import make_classification
import orchestrator
from orchestrator import run_ml_workflow

work = Path(sys.argv[1])
X, y = make_classification(n_samples=400, n_features=6, n_informative=4, random_state=0)
X = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
y = pd.Series(y, name="label")
results = run_ml_workflow(
    feature_specs=[{"columns": list(X.columns), "type": "numeric"}],
    model_spec={"estimator": "random_forest", "params": {"n_estimators": 30, "random_state": 0}},
    X=X, y=y, validation_strategy="cross_validation", validation_params={"cv_folds": 3},
    tuning_spec={"search_space": {"max_depth": {"dist": "choice", "options": [3, 6]}},
                 "max_evals": 3, "cv_folds": 2, "backend": "optuna", "seed": 1},
    mlflow_spec={"tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "experiment_name": "runtime"},
    output_dir=work / "out")
model = mlflow.pyfunc.load_model(f"runs:/{results['mlflow_run_id']}/model")
print(json.dumps({
    "orchestrator_file": orchestrator.__file__, "sklearn": sklearn.__version__,
    "mlflow": mlflow.__version__, "cv_score": results["cv_score"],
    "tuning_backend": results["tuning_summary"]["backend"],
    "predictions": [int(p) for p in model.predict(X.head(20))],
    "labels": [int(v) for v in y.head(20)]}))
"""


@pytest.mark.packaging
def test_wheel_installs_on_a_runtime_without_replacing_its_packages_and_trains(tmp_path):
    runtime_python, uv = _runtime_python(), _uv()
    wheel = _build_wheel(tmp_path)

    metadata = Parser().parsestr(zipfile.ZipFile(wheel).read(
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/METADATA").decode())
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    core = {_canonical(r.name): r for r in requires if r.marker is None}
    assert not {"pyspark", "delta-spark"} & core.keys(), "a cluster's own Spark must not be required"
    for name in RUNTIME_OWNED:
        assert not any(s.operator == "==" for s in core[name].specifier), core[name]

    venv = tmp_path / "runtime"
    _run(uv, "venv", "--quiet", "--seed", "--python", runtime_python, str(venv))
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--quiet", "--python", str(python),
         "-r", str(ROOT / "constraints-runtime.txt"))
    before = _freeze(python)
    assert "orchestrator" not in before

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run(str(python), "-m", "pip", "install", "--quiet", str(wheel), env=env)
    after = _freeze(python)

    changed = {name: (version, after.get(name)) for name, version in before.items()
               if after.get(name) != version}
    assert changed == {}, f"pip replaced or removed the runtime's packages: {changed}"
    added = after.keys() - before.keys()
    from orchestrator._version import __version__

    assert after["orchestrator"] == metadata["Version"] == __version__
    # What the runtime lacked comes in (optuna, deltalake and their dependencies), nothing else.
    assert {"optuna", "deltalake"} <= added

    work = tmp_path / "job"
    work.mkdir()
    out = _run(str(python), "-c", TRAINING_JOB, str(work), cwd=work, env=env)
    report = json.loads(out.strip().splitlines()[-1])
    assert str(venv) in report["orchestrator_file"], "the job must run the installed wheel"
    assert (report["sklearn"], report["mlflow"]) == (before["scikit-learn"], before["mlflow"])
    assert report["tuning_backend"] == "optuna"
    assert 0.7 < report["cv_score"] <= 1.0
    assert sum(p == t for p, t in zip(report["predictions"], report["labels"])) >= 14
