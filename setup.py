import re
from pathlib import Path

from setuptools import find_packages, setup


# A cluster brings its own Spark (Databricks runtimes, spark-submit installs): installing the
# wheel there must not replace it, so pyspark and delta-spark are the "spark" extra
# (`pip install orchestrator[spark]` for a laptop; dev.sh installs requirements.txt in full).
_CLUSTER_PROVIDED = ("pyspark", "delta-spark")


def _requirements() -> list[str]:
    # requirements.txt holds ranges; the exact tested set is constraints.txt, which the wheel
    # never carries: on a runtime, pip keeps whatever in-range versions are already installed.
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines
            if line.split("#")[0].strip() and not line.startswith("-")]


def _version() -> str:
    # One place for the version: orchestrator/_version.py (what --version prints). Read, not
    # imported, so building the wheel needs none of the package's dependencies.
    text = Path(__file__).with_name("orchestrator").joinpath("_version.py").read_text()
    return re.search(r"^__version__ = [\"']([^\"']+)[\"']", text, re.M).group(1)


def _name(requirement: str) -> str:
    for separator in ("=", "<", ">", "!", "~", "[", ";"):
        requirement = requirement.split(separator)[0]
    return requirement.strip().lower()


setup(
    name="orchestrator",
    version=_version(),
    description="Spark-native ML training workflows driven by declarative specs",
    long_description=Path(__file__).with_name("README.md").read_text()
    if Path(__file__).with_name("README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["orchestrator", "orchestrator.*"]),
    # scikit-learn 1.8 needs 3.11. Tested: 3.11 (lowest versions and the pinned set), 3.13 (a
    # runtime's versions, tests/test_packaging.py).
    python_requires=">=3.11",
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    install_requires=[r for r in _requirements() if _name(r) not in _CLUSTER_PROVIDED],
    extras_require={"spark": [r for r in _requirements() if _name(r) in _CLUSTER_PROVIDED]},
    entry_points={
        "console_scripts": [
            "orchestrator = orchestrator.entrypoints.cli:console_main",
            "orchestrator-train = orchestrator.entrypoints.cli:console_train_main",
            "orchestrator-score = orchestrator.entrypoints.cli:console_score_main",
        ],
    },
)
