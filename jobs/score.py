"""Batch scoring job: ``spark-submit jobs/score.py --model-uri models:/churn@champion \\
--input data/demo/churn --output data/demo/churn_predictions``.

Thin on purpose: the logic lives in the package (orchestrator.entrypoints.cli.score_main),
which the console script ``orchestrator-score`` and the bundle's wheel task call too.
"""

import sys

from orchestrator.entrypoints.cli import score_main

if __name__ == "__main__":
    sys.exit(score_main())
