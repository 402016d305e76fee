"""Train job: ``spark-submit jobs/train.py --config conf/demo.yml``.

Thin on purpose: the logic lives in the package (orchestrator.entrypoints.cli.train_main),
which the console script ``orchestrator-train`` and the bundle's wheel task call too.
"""

import sys

from orchestrator.entrypoints.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
