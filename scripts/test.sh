#!/usr/bin/env bash
# Set up (if needed) and run the test suite, real etcd/systemd/docker included.
#   scripts/test.sh            everything: tests/pure, tests/integration, tests/system (CI)
#   scripts/test.sh --fast     tests/pure and tests/integration: the edit loop
# Both in pytest-xdist workers (FLEETPY_TEST_WORKERS, default 4; most tests wait on hosts,
# etcd and TTLs rather than compute, so more workers than cores), a module whole in one
# worker, the longest of the last run first (tests/support/parallel.py).
# Other arguments go to pytest, after these (scripts/test.sh --fast -x -k unit; `-n 0`
# runs in one process: scripts/test.sh -n 0 tests/system/test_e2e.py::test_x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
args=(-n "${FLEETPY_TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder)
for arg in "$@"; do
    if [ "$arg" = "--fast" ]; then
        args+=(-m "pure or integration")
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
