#!/usr/bin/env bash
# Set up (if needed) and run the main job: a local cluster of three real hosts with the
# example units. Pass --keep to leave the cluster up until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
