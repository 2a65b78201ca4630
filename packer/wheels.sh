#!/bin/bash
# Wheels for packer/provision.sh --wheels: fleetpy itself and its dependencies,
# built for Debian bookworm's python3 (3.11), on this machine (packer and
# vagrant run it before they boot anything; a VM needs no package index).
#
#   packer/wheels.sh DIR
#
# Needs python3 with pip and PyYAML (fleetpy's own dependencies will do).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: wheels.sh DIR" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$repo" exec "${PYTHON:-python3}" -c '
import sys
from pathlib import Path
from fleetpy.cluster.nspawn import build_wheels
print(build_wheels(Path(sys.argv[1]).resolve(), include_fleetpy=True))
' "$1"
