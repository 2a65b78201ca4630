"""The suite's tiers (README "Tests"), each a folder under tests/ whose conftest calls
`collect` (at collection) and `guard_processes` (around each test) from here:

- pure: no etcd, no processes of any kind; the code under test and the file system.
- integration: the session's etcd, the CLI in process (typer's runner, or
  support/inprocess.py: the console script's entry point with its argv, environment and
  fds), the engine, agents and the API server in threads; short-lived helper processes that end by themselves
  (the template sandbox's bounded render, `python -c` import checks, `systemd --test` and
  `systemd-analyze verify`, etcdctl reads, `ruby -c`, provision.sh on a scratch root), never
  fleetpy itself, a daemon, etcd, or the machine's network, containers or hosts.
- system: fleetpy's CLI or daemons as processes, the real fleetctl, git hooks running
  fleetpy, etcd clusters or members of the test's own (TLS, killed, paused), nspawn hosts,
  docker, Chromium, `fleetpy cluster up`, pip and wheel installs.

Each tier's tests get its marker (`-m pure`, `-m "not system"`); what a tier must not use
fails the test at collection (a fixture) or when it starts (a process).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

TIERS = ("pure", "integration", "system")

# Fixtures a tier may not request, directly or through other fixtures.
FORBIDDEN: Mapping[str, Mapping[str, str]] = {
    "pure": {
        "etcd": "pure tests use no etcd",
        "hosts": "pure tests boot no hosts",
        "host_rootfs": "pure tests boot no hosts",
        "host_docker": "pure tests use no docker",
        "fleet": "pure tests start no fleetpy processes",
    },
    "integration": {
        "hosts": "integration tests boot no hosts",
        "host_rootfs": "integration tests boot no hosts",
        "host_docker": "integration tests use no docker",
        "fleet": "integration tests run fleetpy in process, not as processes",
    },
}
WHERE = {"pure": "tests/integration or tests/system", "integration": "tests/system"}

# Programs an integration test may not start: they are the system tier's.
SYSTEM_PROGRAMS = frozenset(
    {
        "fleetpy",
        "fleetpy-agent",
        "fleetctl",
        "etcd",
        "docker",
        "dockerd",
        "systemd-nspawn",
        "nsenter",
        "debootstrap",
        "ip",
        "chromium",
        "chromedriver",
        "pip",
        "vagrant",
        "packer",
        "ssh",
    }
)
PYTHON_MODULES = frozenset({"fleetpy", "pip", "venv", "build"})


def requested_through(item: pytest.Item, fixture: str) -> list[str]:
    """The chain of fixtures by which ITEM gets FIXTURE (["registry", "registry_config",
    "etcd"]), or [] if it does not."""
    if fixture not in getattr(item, "fixturenames", ()):
        return []
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return [fixture]
    came_from: dict[str, str | None] = dict.fromkeys(info.initialnames)
    queue = list(info.initialnames)
    while queue:
        name = queue.pop(0)
        if name == fixture:
            chain = [name]
            while (parent := came_from[chain[0]]) is not None:
                chain.insert(0, parent)
            return chain
        for definition in info.name2fixturedefs.get(name, ())[-1:]:
            for argname in definition.argnames:
                if argname not in came_from:
                    came_from[argname] = name
                    queue.append(argname)
    return [fixture]


def collect(items: Sequence[pytest.Item], folder: Path, tier: str) -> None:
    """Mark the items under FOLDER with TIER; refuse those requesting what TIER may not."""
    assert tier in TIERS, tier
    refused = []
    for item in items:
        if folder not in item.path.parents:
            continue
        item.add_marker(getattr(pytest.mark, tier))
        for fixture, why in FORBIDDEN.get(tier, {}).items():
            chain = requested_through(item, fixture)
            if chain:
                how = " -> ".join(chain)
                refused.append(f"{item.nodeid} requests `{fixture}` ({how}): {why}")
    if refused:
        raise pytest.UsageError(
            f"tests in tests/{tier} use what the tier does not allow (README 'Tests'); "
            f"move them to {WHERE[tier]}:\n  " + "\n  ".join(refused)
        )


def require_tier(items: Sequence[pytest.Item], tests: Path) -> None:
    """Every test module lives in one tier's folder."""
    outside = sorted(
        {
            str(item.path.relative_to(tests))
            for item in items
            if tests in item.path.parents
            and not any(tests / tier in item.path.parents for tier in TIERS)
        }
    )
    if outside:
        raise pytest.UsageError(
            "test modules outside tests/pure, tests/integration and tests/system (README "
            "'Tests'): " + ", ".join(outside)
        )


def system_program(argv: Sequence[str]) -> str | None:
    """What in ARGV belongs to the system tier, or None."""
    program = os.path.basename(str(argv[0])) if argv else ""
    if program in SYSTEM_PROGRAMS or program.startswith("chromium"):
        return program
    args = [str(a) for a in argv[1:]]
    if "-m" in args[:-1]:
        module = args[args.index("-m") + 1]
        if module.split(".")[0] in PYTHON_MODULES:
            return f"{program} -m {module}"
    return None


def guard_processes(monkeypatch: pytest.MonkeyPatch, tier: str) -> None:
    """For the current test: a pure test starts no process at all, an integration test
    none of the system tier's programs."""

    def refuse(what: str) -> None:
        raise AssertionError(
            f"{'an' if tier[0] in 'aeiou' else 'a'} {tier} test started {what}: "
            + (
                "pure tests start no processes"
                if tier == "pure"
                else "fleetpy as a process, daemons and the machine's tools are the system tier's"
            )
            + f" (README 'Tests'); move it to {WHERE[tier]}"
        )

    original: Callable[..., Any] = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> Any:
        words = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        argv = [os.fsdecode(word) for word in words]
        if tier == "pure":
            refuse(f"{argv[:4]}")
        elif (program := system_program(argv)) is not None:
            refuse(f"{program} ({argv[:4]})")
        return original(self, args, *rest, **kw)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    if tier == "pure":
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            if hasattr(os, name):
                monkeypatch.setattr(os, name, lambda *a, _name=name, **k: refuse(f"os.{_name}"))
