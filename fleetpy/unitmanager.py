"""The unit manager contract: what an agent needs from its host's init system.

fleet kept its unit-manager interface apart from its agent; so does fleetpy. The real
agent gets systemd over D-Bus (`systemd`), the simulated host the `SimulatedUnitManager`
below; nothing else differs, so scale tests exercise the real agent.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from .errors import UnitNameError
from .model.records import UnitState
from .states import JOB_PENDING, ActiveState, LoadState, SubState
from .unitfile.unit import parse_name

# ExecStart=/bin/false (or /usr/bin/false): what a simulated host fails to start.
_FAILS = re.compile(r"^ExecStart=\S*/false\b", re.MULTILINE)


@dataclass(frozen=True)
class ObservedUnit:
    """A unit this agent owns on the host, as its unit manager sees it."""

    name: str
    hash: str
    # Text: systemd's states (fleetpy.states names those fleetpy compares or writes).
    load: str = LoadState.LOADED
    active: str = ActiveState.INACTIVE
    sub: str = SubState.DEAD
    launched: bool = False  # the agent started it (or adopted it running): don't restart
    message: str = ""
    job: str = ""  # the agent's last start of these contents: fleetpy.states JOB_*

    def state(self, machine: str) -> UnitState:
        return UnitState(
            self.name, machine, self.load, self.active, self.sub, self.hash, self.message, self.job
        )


@dataclass(frozen=True)
class WriteUnit:
    name: str
    hash: str
    text: str


@dataclass(frozen=True)
class StartUnit:
    name: str


@dataclass(frozen=True)
class RestartUnit:
    """Stop and start again in one job (systemd's RestartUnit): never planned, asked for
    by the agent's health monitor (fleetpy.health)."""

    name: str


@dataclass(frozen=True)
class StopUnit:
    name: str


@dataclass(frozen=True)
class RemoveUnit:
    name: str


Action = WriteUnit | StartUnit | StopUnit | RemoveUnit | RestartUnit
StateListener = Callable[[ObservedUnit], None]


def check_unit_file_name(name: str) -> str:
    """`name` if it is a valid unit name, fit to be a file name; else UnitNameError.

    Names an agent acts on come from etcd, where anyone with write access can put any
    key: they are checked again here, whatever the registry checked on reading, before
    one becomes a file name or a D-Bus argument.
    """
    if parse_name(name).name != name:  # parse_name raises on anything invalid
        raise UnitNameError(f"invalid unit name {name!r}")
    return name


def unit_file_path(directory: str | os.PathLike[str], name: str) -> Path:
    """DIRECTORY/NAME for a valid unit name, and never a path outside DIRECTORY."""
    base = Path(directory)
    path = base / check_unit_file_name(name)
    # By construction a unit name has no '/' or NUL and is not '.' or '..' (it needs a
    # type suffix); checked anyway, so a future change of the name rules cannot open a
    # way out of the unit directory.
    if path.parent != base or path.name != name:
        raise UnitNameError(f"unit name {name!r} is not a plain file name")
    return path


class UnitManager(Protocol):
    """What the agent needs from the host's init system (systemd, or a simulation)."""

    def observe(self) -> dict[str, ObservedUnit]:
        """Units this agent owns on the host right now (adopted after a restart too)."""

    def execute(self, actions: Sequence[Action]) -> None:
        """Carry out actions in order; errors are reported as unit states, not raised."""

    def set_listener(self, listener: StateListener) -> None:
        """Call listener (from any thread) whenever an owned unit's state changes."""

    def close(self) -> None: ...


def _running(name: str, content_hash: str) -> ObservedUnit:
    """A unit the simulated host started: running, its start job done."""
    return ObservedUnit(
        name,
        content_hash,
        LoadState.LOADED,
        ActiveState.ACTIVE,
        SubState.RUNNING,
        True,
        "",
        "done",
    )


SIMULATED_MEMORY_PER_UNIT = 16 * 1024**2


class SimulatedUnitManager:
    """Keeps unit states in memory; behaves like systemd for started/stopped units, start
    jobs included. A unit whose ExecStart= runs `false` fails its start (its start job
    fails, as a oneshot's or an exec's whose program cannot run does on a host)."""

    def __init__(self, start_seconds: float = 0.0) -> None:
        # start_seconds > 0: a started unit is "activating" that long before it is
        # active, as a real service's start-up takes time (rolling updates can see it).
        self.start_seconds = start_seconds
        self._units: dict[str, ObservedUnit] = {}
        self._failing: set[str] = set()  # units whose current contents fail to start
        # Contents that fail to start on this host only (a test's machine-specific fault).
        self.failing_hashes: set[str] = set()
        self._lock = threading.Lock()
        self._listener: StateListener | None = None
        # A simulated figure of what systemd would account to the units: this much memory
        # per active unit, and CPU time a test may advance (cpu_ns).
        self.memory_per_unit = SIMULATED_MEMORY_PER_UNIT
        self.cpu_ns = 0

    def observe(self) -> dict[str, ObservedUnit]:
        with self._lock:
            return dict(self._units)

    def usage(self) -> tuple[int, int]:
        """Memory and CPU time of its units, simulated (fleetpy.capacity.AccountsUsage)."""
        with self._lock:
            active = sum(unit.active == ActiveState.ACTIVE for unit in self._units.values())
        return active * self.memory_per_unit, self.cpu_ns

    def set_listener(self, listener: StateListener) -> None:
        self._listener = listener

    def execute(self, actions: Sequence[Action]) -> None:
        # Changes made here are reported by the agent after execute(); the listener is
        # only for asynchronous changes (see fail()).
        with self._lock:
            for action in actions:
                unit = self._units.get(action.name)
                if isinstance(action, WriteUnit):
                    new = ObservedUnit(action.name, action.hash)
                    if _FAILS.search(action.text) or action.hash in self.failing_hashes:
                        self._failing.add(action.name)
                    else:
                        self._failing.discard(action.name)
                elif isinstance(action, StartUnit | RestartUnit) and unit is not None:
                    if action.name in self._failing:
                        new = ObservedUnit(
                            unit.name,
                            unit.hash,
                            LoadState.LOADED,
                            ActiveState.FAILED,
                            SubState.FAILED,
                            True,
                            "exit code 1",
                            "failed",
                        )
                    elif self.start_seconds > 0:
                        new = ObservedUnit(
                            unit.name,
                            unit.hash,
                            LoadState.LOADED,
                            ActiveState.ACTIVATING,
                            SubState.START,
                            True,
                            "",
                            JOB_PENDING,
                        )
                        timer = threading.Timer(
                            self.start_seconds, self._started, (unit.name, unit.hash)
                        )
                        timer.daemon = True
                        timer.start()
                    else:
                        new = _running(unit.name, unit.hash)
                elif isinstance(action, StopUnit) and unit is not None:
                    new = ObservedUnit(unit.name, unit.hash)
                elif isinstance(action, RemoveUnit) and unit is not None:
                    del self._units[action.name]
                    continue
                else:
                    continue
                self._units[action.name] = new

    def _started(self, name: str, content_hash: str) -> None:
        with self._lock:
            unit = self._units.get(name)
            if unit is None or unit.hash != content_hash or unit.active != ActiveState.ACTIVATING:
                return  # stopped or rewritten meanwhile
            new = _running(name, content_hash)
            self._units[name] = new
        if self._listener:
            self._listener(new)

    def fail(self, name: str) -> None:
        """Test hook: the unit's process died."""
        with self._lock:
            unit = self._units[name]
            self._units[name] = ObservedUnit(
                name,
                unit.hash,
                LoadState.LOADED,
                ActiveState.FAILED,
                SubState.FAILED,
                unit.launched,
                job=unit.job,
            )
            new = self._units[name]
        if self._listener:
            self._listener(new)

    def restarted(self, name: str) -> None:
        """Test hook: the unit's process died and systemd's Restart= started it again
        (activating/auto-restart, then active/running, each signalled)."""
        for active, sub in (("activating", "auto-restart"), ("active", "running")):
            with self._lock:
                new = replace(self._units[name], active=active, sub=sub)
                self._units[name] = new
            if self._listener:
                self._listener(new)

    def close(self) -> None:
        pass
