"""orchestrator: a Spark-native ML workflow driven by declarative specs."""

from __future__ import annotations

__all__ = ["build_ml_pipeline", "run_ml_workflow", "get_workflow_summary", "__version__"]

from orchestrator._version import __version__


def __getattr__(name: str):
    # Lazy so that `import orchestrator` and spec validation stay fast (no sklearn/pandas import).
    if name == "build_ml_pipeline":
        from orchestrator.steps.pipeline import build_ml_pipeline

        return build_ml_pipeline
    if name == "run_ml_workflow":
        from orchestrator.workflow import run_ml_workflow

        return run_ml_workflow
    if name == "get_workflow_summary":
        from orchestrator.summary import get_workflow_summary

        return get_workflow_summary
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
