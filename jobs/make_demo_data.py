"""Write the demo Delta tables: ``spark-submit jobs/make_demo_data.py --output data/demo``.

Thin on purpose: the same as ``orchestrator demo-data`` (orchestrator.entrypoints.cli).
"""

import sys

from orchestrator.entrypoints import cli


def main(argv=None) -> int:
    """``orchestrator demo-data`` with these arguments (default: the command line's)."""
    return cli.main(["demo-data", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
