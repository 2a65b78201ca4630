"""Unit files as fleet users wrote them (tests/fleet_units/, see its README): shared by
the fleetpy CLI tests (tests/integration/test_fleet_units.py) and the fleetctl ones
(tests/system/test_api_server.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.paths import FLEET_UNITS

UNIT_FILES = sorted(p.name for p in FLEET_UNITS.iterdir() if p.suffix != ".md")
# What is started from them: plain units and instances of the templates.
STARTED = [
    "registry-data.service",
    "registry-web@1.service",
    "registry-web-announce@1.service",
    "snapshot.service",
    "snapshot.timer",
    "pinned.service",
]


def copy_unit_files(folder: Path) -> Path:
    for name in UNIT_FILES:
        shutil.copy(FLEET_UNITS / name, folder / name)
    return folder
