"""test_architecture.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole: tests/pure/test_architecture.py."""

from __future__ import annotations

import ast
import subprocess
import sys

from support.paths import ROOT

PACKAGE = ROOT / "fleetpy"


CORE = ("fleetpy.registry", "fleetpy.scheduler", "fleetpy.engine", "fleetpy.agent")
MODEL = ("changes", "codecs", "events", "records")


def loaded_by(modules: str, matching: str) -> list[str]:
    """The modules a fresh interpreter has loaded after importing MODULES (comma-separated)
    for which the expression MATCHING, over `m` (a module's name), is true."""
    code = f"import sys; import {modules}; print(sorted(m for m in sys.modules if {matching}))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    return list(ast.literal_eval(result.stdout.strip()))


def test_core_pulls_in_neither_the_cli_libraries_nor_the_cluster_harness() -> None:
    matching = "m.split('.')[0] in ('typer', 'rich') or m.startswith('fleetpy.cluster')"
    assert loaded_by(", ".join(CORE), matching) == []


def test_the_daemons_load_neither_the_api_server_nor_metrics_unless_asked() -> None:
    matching = (
        "m.split('.')[0] in ('prometheus_client', 'http') "
        "or m in ('fleetpy.api', 'fleetpy.client', 'fleetpy.live_view')"
    )
    assert loaded_by("fleetpy.entrypoints", matching) == []


def test_the_model_loads_neither_the_store_nor_its_client_libraries() -> None:
    # The model (records, codecs, events, writes as data) is usable without etcd: a
    # fresh interpreter importing it gets neither grpc, pyetcd nor the registry.
    model = ", ".join(f"fleetpy.model.{name}" for name in MODEL)
    matching = "m.split('.')[0] in ('grpc', 'pyetcd') or m.startswith('fleetpy.registry')"
    assert loaded_by(model, matching) == []
    assert loaded_by(model, "m.startswith('fleetpy.model.')") == sorted(
        f"fleetpy.model.{name}" for name in MODEL
    )
