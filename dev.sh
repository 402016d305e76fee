#!/usr/bin/env bash
# One entry point for people and CI. Each command sets up what it needs first:
#   bash dev.sh demo    venv + packages, demo Delta tables, train conf/demo.yml, print the summary
#   bash dev.sh test    venv + packages, then the whole test suite
#   bash dev.sh fast    only the tests that need no Spark, MLflow server or cluster (seconds)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
  fi
  # Re-install only when the requirements changed since the last install.
  local stamp="$VENV/.installed-$(cat requirements.txt requirements-dev.txt setup.py | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "==> installing packages (requirements-dev.txt and this project, editable)"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -r requirements-dev.txt -e .
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
  # Spark's Python workers and spark-submit must use the venv's interpreter.
  export PYSPARK_PYTHON="$PWD/$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$PWD/$VENV/bin/python"
  export PATH="$PWD/$VENV/bin:$PATH"
}

case "${1:-}" in
  demo)
    setup
    echo "==> writing the demo Delta tables to data/demo"
    orchestrator demo-data --output data/demo
    echo "==> training conf/demo.yml"
    orchestrator run conf/demo.yml
    ;;
  test)
    setup
    shift
    # pytest exits 5 when it collects no tests: that is a failure here, like any other non-zero code.
    python -m pytest "$@"
    ;;
  fast)
    setup
    shift
    python -m pytest -m "not spark and not mlflow_server and not cluster" "$@"
    ;;
  *)
    echo "usage: bash dev.sh demo|test|fast [pytest args]" >&2
    exit 2
    ;;
esac
