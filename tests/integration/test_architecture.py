"""test_architecture.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole: tests/pure/test_architecture.py."""

from __future__ import annotations

import subprocess
import sys

from support.paths import ROOT

PACKAGE = ROOT / "fleetpy"


CORE = ("fleetpy.registry", "fleetpy.scheduler", "fleetpy.engine", "fleetpy.agent")


def test_core_pulls_in_neither_the_cli_libraries_nor_the_cluster_harness() -> None:
    code = (
        "import sys; import " + ", ".join(CORE) + "; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich') "
        "or m.startswith('fleetpy.cluster')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert result.stdout.strip() == "[]"


def test_the_daemons_load_neither_the_api_server_nor_metrics_unless_asked() -> None:
    code = (
        "import sys; import fleetpy.daemons; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prometheus_client', 'http') "
        "or m in ('fleetpy.api', 'fleetpy.client', 'fleetpy.view')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert result.stdout.strip() == "[]"
