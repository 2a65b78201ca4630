"""The real fleetctl v1.0.0 (--driver=API) against a `fleetpy api` unix socket."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support.paths import ROOT


def fleet_tool(name: str) -> str:
    """fleet's own NAME (fleetctl, fleetd) v1.0.0: $NAME in capitals, PATH, ../shared/tools;
    skips the test when there is none."""
    for candidate in (
        os.environ.get(name.upper()),
        shutil.which(name),
        str(ROOT.parent / "shared" / "tools" / name),
        f"/work/shared/tools/{name}",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(f"{name} v1.0.0 not found (${name.upper()}, PATH, ../shared/tools/{name})")


def fleetctl_binary() -> str:
    return fleet_tool("fleetctl")


def fleetctl_on(sock: str, cwd: Path) -> Callable[..., str]:
    """fleetctl --driver=API on a unix socket: fleetctl(*args, ok=True) -> its output."""
    binary = fleetctl_binary()

    def fleetctl(*args: str, ok: bool = True) -> str:
        result = subprocess.run(
            [binary, "--driver=API", f"--endpoint=unix://{sock}", *args],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=cwd,
        )
        assert (result.returncode == 0) == ok, (args, result.stdout, result.stderr)
        return result.stdout + result.stderr

    return fleetctl
