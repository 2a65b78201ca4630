"""test_architecture.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole: tests/pure/test_architecture.py."""

from __future__ import annotations

import ast
import subprocess
import sys

from support.paths import ROOT

PACKAGE = ROOT / "fleetpy"


CORE = ("fleetpy.registry", "fleetpy.scheduler", "fleetpy.engine", "fleetpy.agent")
MODEL = (
    "audit",
    "changes",
    "codecs",
    "cordons",
    "events",
    "failures",
    "global_rolls",
    "records",
    "trust",
)


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


# What the light paths must not load (README "Performance": the CLI's start-up, the agent's
# memory): etcd's client (gRPC, protobuf, pyetcd), templates, YAML, rich, cryptography,
# the HTTP server's and metrics' libraries, pydantic.
HEAVY = (
    "grpc",
    "google",
    "pyetcd",
    "jinja2",
    "yaml",
    "rich",
    "cryptography",
    "h11",
    "prometheus_client",
    "pydantic",
)


def heavy(extra: tuple[str, ...] = (), allowed: tuple[str, ...] = ()) -> str:
    """A `loaded_by` expression: a module of HEAVY (but ALLOWED) or one starting with EXTRA."""
    packages = tuple(p for p in HEAVY if p not in allowed)
    return f"m.split('.')[0] in {packages!r} or m.startswith({extra!r})"


def loaded_by_cli(argv: list[str], matching: str) -> list[str]:
    """As loaded_by, after the CLI ran ARGV in that interpreter (its output discarded)."""
    code = (
        "import contextlib, io, sys\n"
        "from fleetpy.cli import app\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n"
        f"        app(args={argv!r}, prog_name='fleetpy')\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in sys.modules if {matching}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    return list(ast.literal_eval(result.stdout.strip().splitlines()[-1]))


# Loaded by a verb when it runs, never by --help: the store, the model, unit files, the
# daemons, deployments, the API, the local cluster harness.
NOT_FOR_HELP = (
    "fleetpy.registry.",
    "fleetpy.model",
    "fleetpy.unitfile",
    "fleetpy.client.plans",
    "fleetpy.client.operations",
    "fleetpy.live_view",
    "fleetpy.scheduler",
    "fleetpy.engine",
    "fleetpy.agent",
    "fleetpy.deploy",
    "fleetpy.api",
    "fleetpy.cluster",
)


def test_help_loads_neither_the_etcd_client_nor_what_only_some_verbs_need() -> None:
    # `fleetpy --help` (and a verb's --help) is typer and fleetpy's CLI modules: the light
    # path that keeps the CLI's start-up short. fleetpy.registry itself is light (settings).
    matching = heavy(NOT_FOR_HELP) + " and m != 'fleetpy.registry.settings'"
    assert loaded_by_cli(["--help"], matching) == []
    assert loaded_by_cli(["start", "--help"], matching) == []
    assert loaded_by_cli(["list-units", "--help"], matching) == []
    # the other way round: the scan sees what a verb that talks to etcd loads
    assert "grpc" in loaded_by_cli(["list-units", "--endpoint", "http://127.0.0.1:1"], matching)


def test_the_etcd_verbs_load_no_templates_yaml_rich_or_daemons() -> None:
    # list-units and start need the etcd client and the model, nothing for templates,
    # deployments, a terminal's live display or the daemons. With nothing listening on
    # the endpoint they fail at their first etcd call, after everything they import.
    daemons: tuple[str, ...] = ("fleetpy.engine", "fleetpy.agent", "fleetpy.scheduler")
    daemons += ("fleetpy.deploy", "fleetpy.api", "fleetpy.cluster", "fleetpy.unitfile.template")
    daemons += ("pyetcd.client",)  # pyetcd's own client: fleetpy uses its generated stubs only
    matching = heavy(daemons, allowed=("grpc", "google", "pyetcd"))
    etcd = ["--endpoint", "http://127.0.0.1:1", "--request-timeout", "0.5"]
    assert loaded_by_cli(["list-units", *etcd], matching) == []
    unit = str(ROOT / "units" / "hello.service")
    assert loaded_by_cli(["start", unit, *etcd], matching) == []


def test_the_agent_loads_only_what_it_runs() -> None:
    # A host's agent: no CLI, no templates, no API server, no engine or scheduler (each
    # a few MiB of an agent's memory). PyYAML is loaded only to read a config file.
    matching = (
        heavy(
            (
                "fleetpy.engine",
                "fleetpy.scheduler",
                "fleetpy.cli",
                "fleetpy.client",
                "pyetcd.client",
            ),
            allowed=("grpc", "google", "pyetcd"),
        )
        + " or m.split('.')[0] in ('typer', 'click')"
    )
    code = "fleetpy.entrypoints, fleetpy.unitmanager"
    assert loaded_by(code, matching) == []
