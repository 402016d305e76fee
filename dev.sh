#!/usr/bin/env bash
# One entry point for people and CI. Each command sets up what it needs first:
#   bash dev.sh demo    venv + packages, demo Delta tables, train conf/demo.yml, print the summary
#   bash dev.sh test    venv + packages, the whole test suite, a Spark Connect pass, the lowest stage
#   bash dev.sh fast    only the tests that need no Spark, MLflow server or cluster (seconds)
#   bash dev.sh lowest  only the lowest-versions stage (see below)
#   bash dev.sh lock    regenerate constraints.txt and constraints-lowest.txt (a maintainer's step)
#
# requirements.txt declares ranges (the wheel's install_requires); constraints.txt pins the set
# .venv is tested with, constraints-lowest.txt the lowest set requirements.txt allows, which
# .venv-lowest installs on the lowest Python we support (LOWEST_PYTHON, 3.11).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
LOWEST_VENV=.venv-lowest
# The lowest Python we support (scikit-learn 1.8 needs 3.11); the packaging test's runtime venv
# uses the highest, 3.13, which pyenv on the machine image carries beside the system's 3.11.
LOWEST_PYTHON=${LOWEST_PYTHON:-python3.11}
RUNTIME_PYTHON=${RUNTIME_PYTHON:-$(ls -d /root/.pyenv/versions/3.13.*/bin/python 2>/dev/null | tail -1 || true)}
export ORCHESTRATOR_RUNTIME_PYTHON=${RUNTIME_PYTHON:-python3.13}
FAST_MARKERS="not spark and not mlflow_server and not cluster and not packaging and not browser"

venv_stamp() {
  echo "$VENV/.installed-$(cat requirements.txt requirements-dev.txt constraints.txt setup.py | sha1sum | cut -c1-12)"
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
  fi
  # Re-install only when the requirements or the pinned set changed since the last install.
  local stamp
  stamp=$(venv_stamp)
  if [ ! -f "$stamp" ]; then
    echo "==> installing packages (requirements-dev.txt pinned by constraints.txt, this project editable)"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -r requirements-dev.txt -c constraints.txt -e .
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
  # Spark's Python workers and spark-submit must use the venv's interpreter.
  export PYSPARK_PYTHON="$PWD/$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$PWD/$VENV/bin/python"
  export PATH="$PWD/$VENV/bin:$PATH"
}

setup_lowest() {
  local stamp="$LOWEST_VENV/.installed-$(cat constraints-lowest.txt setup.py | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "==> installing constraints-lowest.txt into $LOWEST_VENV ($("$LOWEST_PYTHON" --version))"
    local started=$SECONDS
    rm -rf "$LOWEST_VENV"
    "$VENV/bin/uv" venv --quiet --python "$LOWEST_PYTHON" "$LOWEST_VENV"
    "$VENV/bin/uv" pip sync --quiet --python "$LOWEST_VENV/bin/python" constraints-lowest.txt
    "$VENV/bin/uv" pip install --quiet --python "$LOWEST_VENV/bin/python" --no-deps -e .
    touch "$stamp"
    echo "==> $LOWEST_VENV installed in $((SECONDS - started)) s"
  fi
}

# The Spark tests of the workflow's steps (Delta reads, feature store, scoring, the notebooks:
# a whole job from config to MLflow to batch scoring, tuning) again on a Spark Connect session
# (tests/conftest.py --spark-mode=connect: a local[2] Connect server in the pytest process).
# The classic run above covers the rest; README "Spark Connect" says which tests run where.
# tests/test_tuning_connect.py is not repeated here: the classic run already drives it (and the
# validation and calibration folds on Connect) against a Connect server process of its own.
CONNECT_TESTS="tests/test_training_data.py tests/test_feature_store.py tests/test_scoring.py
  tests/test_notebooks.py"
connect_stage() {
  echo "==> Spark Connect pass: $(echo $CONNECT_TESTS | wc -w) test files"
  local started=$SECONDS status=0
  # shellcheck disable=SC2086  # one word per path
  ORCHESTRATOR_TEST_SPARK=connect python -m pytest -m spark -q \
    -p no:cacheprovider $CONNECT_TESTS || status=$?
  echo "==> Spark Connect pass took $((SECONDS - started)) s"
  return "$status"
}

# The fast tests and one end-to-end training job (demo tables written by Spark, then tuning on
# Spark with hyperopt, calibration and MLflow logging to a sqlite store) on the lowest versions.
lowest_stage() {
  setup_lowest
  local py="$PWD/$LOWEST_VENV/bin/python" work versions
  # A separate assignment, so a failing import stops the stage (set -e ignores it inside echo).
  versions=$("$py" -c 'import sklearn, mlflow, hyperopt, optuna, pandas, numpy, sys
print(f"Python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, mlflow {mlflow.__version__}, hyperopt {hyperopt.__version__}, optuna {optuna.__version__}, pandas {pandas.__version__}, numpy {numpy.__version__}")')
  echo "==> lowest versions: $versions"
  work=$(mktemp -d)
  # The import contracts (tests/test_architecture.py, import-linter: a dev tool the lowest set
  # does not install) do not depend on library versions; the main run checks them.
  PYSPARK_PYTHON="$py" PYSPARK_DRIVER_PYTHON="$py" "$py" -m pytest -m "$FAST_MARKERS" -q -p no:cacheprovider \
    --ignore=tests/test_architecture.py
  echo "==> lowest versions: end-to-end training job (conf/demo_full.yml)"
  PYSPARK_PYTHON="$py" PYSPARK_DRIVER_PYTHON="$py" "$LOWEST_VENV/bin/orchestrator" demo-data --output "$work/demo"
  PYSPARK_PYTHON="$py" PYSPARK_DRIVER_PYTHON="$py" DEMO_DATA="$work/demo" \
    MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" \
    "$LOWEST_VENV/bin/orchestrator" run conf/demo_full.yml --output-dir "$work/out"
  rm -rf "$work"
}

# Tests that start Spark processes of their own (a standalone master and workers, a Connect
# server, a runtime venv, jobs stopped by signals and dead servers) and spend most of their time
# waiting on them. test_faults.py (about 250 s) moved here to balance the lanes: beside it the
# classic suite took 1060 s and this lane 650 s.
APART_TESTS="tests/test_cluster.py tests/test_thin_client.py tests/test_packaging.py
  tests/test_faults.py"

# start_apart NAME COMMAND...: run a command (a function works) in the background, its output in
# a file; finish_apart waits for it, prints the output and fails the run if it failed.
start_apart() {
  apart_name=$1
  shift
  apart_log=$(mktemp)
  ( "$@" ) >"$apart_log" 2>&1 &
  apart_pid=$!
}
finish_apart() {
  local status=0
  wait "$apart_pid" || status=$?
  echo "==> $apart_name (ran beside the stage above) exited with $status:"
  cat "$apart_log"
  rm -f "$apart_log"
  if [ "$status" -ne 0 ]; then echo "==> $apart_name failed"; exit "$status"; fi
}

apart_tests() {
  setup_lowest
  # shellcheck disable=SC2086  # one word per path
  python -m pytest -p no:cacheprovider --durations=10 $APART_TESTS
}

# The whole run, as CI calls it: two stages of two runs side by side (much of every run waits on
# JVMs, servers and subprocesses, so the 2 cores do more of both):
#   1. the classic suite       |  .venv-lowest built, then the APART_TESTS
#   2. the Spark Connect pass  |  the lowest-versions stage
whole_run() {
  local started=$SECONDS path ignore=() status=0
  for path in $APART_TESTS; do ignore+=("--ignore=$path"); done
  # The first Delta session fetches the jars through Ivy; on a clean machine two runs fetching the
  # same jars at once can trip over each other's downloads, so one session fetches them first.
  python -c 'from orchestrator.io.session import get_spark
get_spark("fetch-delta-jars", master="local[1]", conf={"spark.ui.enabled": "false"}).stop()' \
    >"$PWD/.fetch-delta-jars.log" 2>&1 || { cat .fetch-delta-jars.log; exit 1; }
  start_apart "the cluster, thin-client and packaging tests" apart_tests
  python -m pytest --durations=30 "${ignore[@]}" || status=$?
  finish_apart
  [ "$status" -eq 0 ] || exit "$status"
  echo "==> stage 1 took $((SECONDS - started)) s"
  start_apart "the lowest-versions stage" lowest_stage
  connect_stage || status=$?
  finish_apart
  [ "$status" -eq 0 ] || exit "$status"
  echo "==> the whole run took $((SECONDS - started)) s"
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
    # The report test renders a run's HTML in Debian's Chromium (tests/test_report.py).
    if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    fi
    # pytest exits 5 when it collects no tests: that is a failure here, like any other non-zero code.
    if [ $# -gt 0 ]; then python -m pytest "$@"; exit; fi
    # The whole run (no pytest arguments, as CI calls it) also tests Connect and the lowest versions.
    whole_run
    ;;
  fast)
    setup
    shift
    python -m pytest -m "$FAST_MARKERS" "$@"
    ;;
  lowest)
    setup
    lowest_stage
    ;;
  lock)
    setup
    { echo "# The set .venv is tested with (pip freeze of it, less this project). Regenerate: bash dev.sh lock"
      pip freeze --exclude-editable | grep -iv "^orchestrator=="; } > constraints.txt
    rm -f "$VENV"/.installed-*
    touch "$(venv_stamp)"  # .venv is the set constraints.txt now pins
    printf -- '-r requirements.txt\npytest>=8\njsonschema>=4\n' > .lowest.in
    { echo "# The lowest versions requirements.txt allows (uv --resolution lowest-direct) on Python 3.11,"
      echo "# with pytest; .venv-lowest installs exactly this set. Regenerate: bash dev.sh lock"
      uv pip compile --quiet --no-header --no-annotate --python "$LOWEST_PYTHON" \
        --resolution lowest-direct .lowest.in; } > constraints-lowest.txt
    printf 'scikit-learn==1.9.0\nmlflow==3.12.0\npyspark==4.2.0\ndelta-spark==4.4.0\npandas>=2.2,<3\nnumpy\npyarrow\nmatplotlib\nPyYAML\nhyperopt\n' > .runtime.in
    { sed -n '1,4p' constraints-runtime.txt
      uv pip compile --quiet --no-header --no-annotate --python "$ORCHESTRATOR_RUNTIME_PYTHON" .runtime.in; } > .runtime.txt
    mv .runtime.txt constraints-runtime.txt
    rm -f .lowest.in .runtime.in
    ;;
  *)
    echo "usage: bash dev.sh demo|test|fast|lowest|lock [pytest args]" >&2
    exit 2
    ;;
esac
