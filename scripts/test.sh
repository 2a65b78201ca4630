#!/usr/bin/env bash
# Set up (if needed) and run the test suite, real etcd/systemd/docker included.
#   scripts/test.sh            everything: tests/pure, tests/integration, tests/system (CI)
#   scripts/test.sh --fast     tests/pure and tests/integration: the edit loop, in two
#                              pytest-xdist workers (each starts its own session etcd)
# Other arguments go to pytest (scripts/test.sh --fast -x -k unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
args=()
for arg in "$@"; do
    if [ "$arg" = "--fast" ]; then
        args+=(-m "pure or integration" -n 2)
    else
        args+=("$arg")
    fi
done
set +e
.venv/bin/python -m pytest -ra "${args[@]}"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$status"
