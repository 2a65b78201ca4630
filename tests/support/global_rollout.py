"""A deployment with a global unit, for the tests of rolling updates of global units on
simulated hosts (test_global_rollout, test_global_rollout_faults): the monitor's versions,
what each machine runs, and the most machines seen without it active at once."""

from __future__ import annotations

import threading
from pathlib import Path

from fleetpy.model.events import StateEvent, WatchBatch
from fleetpy.registry import Registry

from support.rollout import Cluster, apply, deployment, render
from support.waiting import until

MONITOR = """\
[Unit]
Description=monitor version {{ version }}

[Service]
ExecStart={{ '/bin/false' if version == 'bad' else '/bin/sleep 1000' }}

[X-Fleet]
Global=true
"""

UNIT = "mon.service"


def monitor(tmp_path: Path, version: str) -> Path:
    """A deployment of one app instance and the global monitor (version "bad" fails)."""
    directory = deployment(
        tmp_path,
        version=version,
        instances=1,
        extra="  - {name: mon.service, template: mon.service.j2}",
    )
    (directory / "mon.service.j2").write_text(MONITOR)
    return directory


def monitor_hash(directory: Path) -> str:
    return next(u.hash for u in render(directory)[1] if u.name == UNIT)


def running(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """machine -> (content hash, ACTIVE) of the monitor."""
    states = cluster.registry.list_states().get(UNIT, {})
    return {m: (s.hash, s.active) for m, s in states.items()}


class Downtime:
    """The most machines seen not running the monitor active at once, from state events.
    Its watch is its own: it can lag behind the roll's (which ends on their view of the
    states), so `caught_up` is waited for before its figures are read."""

    def __init__(self, registry: Registry) -> None:
        self.down: set[str] = set()
        self.worst = 0
        self.last: dict[str, tuple[str, str]] = {}  # machine -> (hash, ACTIVE) last seen
        self.lock = threading.Lock()
        self.cancel = registry.watch_states(self.on_states, registry.read_view().revision + 1)

    def on_states(self, batch: WatchBatch[StateEvent]) -> None:
        with self.lock:
            for event in batch.events:
                if event.unit != UNIT:
                    continue
                if event.state is not None and event.state.active == "active":
                    self.down.discard(event.machine)
                else:
                    self.down.add(event.machine)
                state = event.state
                self.last[event.machine] = ("", "") if state is None else (state.hash, state.active)
            self.worst = max(self.worst, len(self.down))

    def caught_up(self, directory: Path, machines: int = 3) -> None:
        """Wait until this watch has seen the monitor's version in DIRECTORY active on
        MACHINES machines (and so every event before: a watch delivers in order)."""
        want = [(monitor_hash(directory), "active")] * machines

        def seen() -> bool:
            with self.lock:
                return sorted(self.last.values()) == want

        until(seen, what="the downtime watch to see the monitor active everywhere")


def started_everywhere(cluster: Cluster, directory: Path, machines: int = 3) -> None:
    want = monitor_hash(directory)
    until(
        lambda: sorted(running(cluster).values()) == [(want, "active")] * machines,
        what=f"the monitor's version active on {machines} machines",
    )


def first_version(cluster: Cluster, tmp_path: Path) -> tuple[Registry, Path]:
    """The deployment's version 1 applied, the monitor active on every machine."""
    directory = monitor(tmp_path, "1")
    apply(cluster.registry, directory)
    started_everywhere(cluster, directory)
    return cluster.registry, directory
