from pathlib import Path

from setuptools import find_packages, setup


def _requirements() -> list[str]:
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="orchestrator",
    version="0.1.0",
    description="Spark-native ML training workflows driven by declarative specs",
    long_description=Path(__file__).with_name("README.md").read_text()
    if Path(__file__).with_name("README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["orchestrator", "orchestrator.*"]),
    python_requires=">=3.10",
    install_requires=_requirements(),
    entry_points={
        "console_scripts": [
            "orchestrator = orchestrator.cli:console_main",
            "orchestrator-train = orchestrator.cli:console_train_main",
        ],
    },
)
