#!/bin/bash
# Wheels for provision.sh --wheels: fleetpy itself and its dependencies,
# built for Debian bookworm's python3 (3.11), on this machine (packer and
# vagrant run it before they boot anything; a VM needs no package index).
#
#   packer/wheels.sh DIR
#
# Needs python3 (3.11 or later) with pip and PyYAML (fleetpy's own dependencies will do).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: wheels.sh DIR" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$repo" exec "${PYTHON:-python3}" -c '
import sys, tomllib
from pathlib import Path
from fleetpy.cluster.nspawn import build_wheels
repo = Path(sys.argv[2])
with open(repo / "pyproject.toml", "rb") as f:
    requirements = tomllib.load(f)["project"]["dependencies"]
print(build_wheels(Path(sys.argv[1]).resolve(), requirements, project=repo))
' "$1" "$repo"
