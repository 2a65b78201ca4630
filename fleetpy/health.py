"""Container health over time: an agent follows the health docker reports for its units'
containers that have a `HealthCmd=`, reports it with their state, and restarts a unit in
place (its unit manager asks systemd) when its running container turns unhealthy, unless
the unit says `HealthOnFailure=none`.

At start the unit's own ExecStartPost= waits for healthy (fleetpy.unitfile.container);
this module takes over once the unit is active. Health comes from docker's events
(`docker events`, health_status, start and die of containers), not from polling each
container: one process per agent, started when the first unit to follow appears (an agent
without one never runs docker), and one `docker inspect` of the containers it starts
following (what happened before it listened).

  check_of(name, text, machine) -> Check | None    the health check of a desired unit
  parse_event(line) -> (container, Health) | None  one line of `docker events`
  unit_health(observed, seen) -> Health            what the agent reports
  due_restarts(checks, observed, seen, acted)      which units to restart now (pure)
  HealthMonitor                                    the agent's side: checks, events, restarts
  DockerHealth, SimulatedHealth                    where events come from
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from .errors import FleetpyError
from .log import log_event
from .model.records import UnitState
from .states import ActiveState
from .unitfile.container import DOCKER, HealthOnFailure, is_container_unit, parse_spec
from .unitfile.unit import EXPANDED_CONTAINER_SECTION, parse_name, parse_unit
from .unitmanager import ObservedUnit, RestartUnit, UnitManager


class Health(StrEnum):
    """docker's health statuses; NONE: no check, or no container running."""

    NONE = ""
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class Check:
    """A unit whose container has a health check, as it runs on this machine."""

    unit: str
    hash: str
    container: str  # its specifiers resolved
    on_failure: HealthOnFailure


@dataclass(frozen=True)
class Seen:
    """A container's last health docker told; `turn` counts the changes seen, so one
    turn to unhealthy is acted on once."""

    health: Health
    turn: int


def container_name(template: str, unit: str, machine: str) -> str:
    """A ContainerName= as systemd expands it for UNIT on MACHINE (%p %i %m only: the
    container module allows no other specifier, and %% cannot occur)."""
    parsed = parse_name(unit)
    return (
        template.replace("%p", parsed.prefix)
        .replace("%i", parsed.instance or "")
        .replace("%m", machine)
    )


def check_of(name: str, text: str, content_hash: str, machine: str) -> Check | None:
    """The health check of unit NAME (its stored, expanded text), or None: not a container
    unit, or no HealthCmd=. A unit that does not parse has none (the agent reports it
    failing to load anyway)."""
    if "HealthCmd=" not in text:
        return None  # most units: nothing to parse
    try:
        unit = parse_unit(text, name)
        if not is_container_unit(unit):
            return None
        spec = parse_spec(unit.options(EXPANDED_CONTAINER_SECTION), name)
    except FleetpyError:
        return None
    if spec.health_cmd is None:
        return None
    return Check(
        name,
        content_hash,
        container_name(spec.container_name, name, machine),
        spec.health_on_failure,
    )


_ACTIONS = {
    "start": Health.STARTING,  # a new container: checks not passed yet
    "die": Health.NONE,
    "health_status: starting": Health.STARTING,
    "health_status: healthy": Health.HEALTHY,
    "health_status: unhealthy": Health.UNHEALTHY,
}


def parse_event(line: str) -> tuple[str, Health] | None:
    """(container name, its health now) from one line of `docker events --format
    '{{json .}}'`; None for anything else."""
    try:
        event = json.loads(line)
        health = _ACTIONS[event["Action"]]
        name = event["Actor"]["Attributes"]["name"]
    except (ValueError, KeyError, TypeError):
        return None
    return (name, health) if isinstance(name, str) else None


def unit_health(observed: ObservedUnit | None, seen: Seen | None) -> Health:
    """A followed unit's health: none unless it runs; starting while systemd still
    starts it (its health wait); then what docker said last."""
    if observed is None or observed.active not in (ActiveState.ACTIVE, ActiveState.ACTIVATING):
        return Health.NONE
    if observed.active == ActiveState.ACTIVATING:
        return Health.STARTING
    return seen.health if seen is not None else Health.NONE


def due_restarts(
    checks: Mapping[str, Check],
    observed: Mapping[str, ObservedUnit],
    seen: Mapping[str, Seen],
    acted: Mapping[str, int],
) -> list[str]:
    """The units to restart for being unhealthy: active (a unit still starting is its
    health wait's business), started by the agent, HealthOnFailure=restart, unhealthy in a
    turn not yet acted on (ACTED: unit -> the turn its last restart answered)."""
    due = []
    for name, check in sorted(checks.items()):
        unit, last = observed.get(name), seen.get(check.container)
        if (
            check.on_failure is HealthOnFailure.RESTART
            and unit is not None
            and unit.hash == check.hash
            and unit.launched
            and unit.active == ActiveState.ACTIVE
            and last is not None
            and last.health is Health.UNHEALTHY
            and acted.get(name) != last.turn
        ):
            due.append(name)
    return due


# ----------------------------------------------------------------------------- sources

HealthListener = Callable[[str, Health], None]


class HealthSource(Protocol):
    """Where containers' health comes from (docker, or a simulation)."""

    def follow(self, containers: Set[str], listener: HealthListener) -> None:
        """From now on, tell LISTENER (any thread) each change of these containers' health,
        and, once, the health of those not followed before."""

    def close(self) -> None: ...


class SimulatedHealth:
    """A simulated host's docker: tests set a container's health (set())."""

    def __init__(self) -> None:
        self.followed: frozenset[str] = frozenset()
        self._listener: HealthListener | None = None

    def follow(self, containers: Set[str], listener: HealthListener) -> None:
        self.followed, self._listener = frozenset(containers), listener

    def set(self, container: str, health: Health) -> None:
        if self._listener is not None and container in self.followed:
            self._listener(container, health)

    def close(self) -> None:
        self._listener = None


EVENTS_RETRY = 1.0  # seconds before `docker events` is started again after it ended
INSPECT_TIMEOUT = 10.0


class DockerHealth:
    """`docker events` (health_status, start, die), one process from the first container
    followed on (restarted a second after it ends: dockerd restarted); a container newly
    followed is inspected once, and all of them each time the stream starts again (the
    stream replays its last second, so no change falls between)."""

    def __init__(self, docker: str = DOCKER) -> None:
        self.docker = docker
        self._lock = threading.Lock()
        self._followed: frozenset[str] = frozenset()
        self._listener: HealthListener | None = None
        self._to_inspect: set[str] = set()
        self._events: dict[str, int] = {}  # container -> events seen (an inspect is older)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def follow(self, containers: Set[str], listener: HealthListener) -> None:
        with self._lock:
            new = set(containers) - self._followed
            self._followed, self._listener = frozenset(containers), listener
            self._to_inspect |= new
            start = bool(containers) and not self._threads
            if start:
                self._threads = [
                    threading.Thread(target=self._run, name="docker-events", daemon=True),
                    threading.Thread(target=self._inspector, name="docker-inspect", daemon=True),
                ]
        if start:
            for thread in self._threads:
                thread.start()
        elif new:
            self._wake.set()

    def _tell(self, container: str, health: Health, events_before: int | None = None) -> None:
        with self._lock:
            if container not in self._followed or self._listener is None:
                return
            if events_before is None:
                self._events[container] = self._events.get(container, 0) + 1
            elif self._events.get(container, 0) != events_before:
                return  # an event came while it was inspected: newer than the inspect
            listener = self._listener
        listener(container, health)

    def _run(self) -> None:
        said = False
        while not self._stop.is_set():
            try:
                # --since: docker replays the last second's events, so none is lost while
                # the stream is set up (relative: docker's clock, not compared with ours).
                proc = subprocess.Popen(
                    [self.docker, "events", "--since=1s", "--format", "{{json .}}"]
                    + [f"--filter={f}" for f in ("type=container", "event=health_status")]
                    + ["--filter=event=start", "--filter=event=die"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            except OSError as exc:
                if not said:
                    log_event("health_events_unavailable", error=str(exc))
                said = True
                self._stop.wait(EVENTS_RETRY)
                continue
            self._proc = proc
            with self._lock:
                self._to_inspect |= self._followed  # anything may have changed meanwhile
            self._wake.set()
            assert proc.stdout is not None
            for line in proc.stdout:
                event = parse_event(line)
                if event is not None:
                    self._tell(*event)
            proc.wait()
            if not self._stop.is_set() and not said:
                log_event("health_events_ended", code=proc.returncode, retry=EVENTS_RETRY)
                said = True
            self._stop.wait(EVENTS_RETRY)

    def _inspector(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                names, self._to_inspect = sorted(self._to_inspect), set()
                before = {name: self._events.get(name, 0) for name in names}
            if not names or self._stop.is_set():
                continue
            for name, health in self._inspect(names).items():
                self._tell(name, health, before[name])

    def _inspect(self, names: Iterable[str]) -> dict[str, Health]:
        """Each container's health now; one that does not exist has none."""
        found = dict.fromkeys(names, Health.NONE)
        template = (
            "{{.Name}} {{.State.Running}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        )
        try:
            out = subprocess.run(
                [self.docker, "inspect", "--type=container", "--format", template, *found],
                capture_output=True,
                text=True,
                timeout=INSPECT_TIMEOUT,
            ).stdout  # a missing container is an error on stderr; the others print
        except (OSError, subprocess.SubprocessError) as exc:
            log_event("health_inspect_failed", error=str(exc))
            return {}
        for line in out.splitlines():
            name, running, status = [*line.split(" "), "", ""][:3]
            name = name.removeprefix("/")
            if name in found and running == "true":
                found[name] = Health(status) if status in set(Health) else Health.NONE
        return found

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        for thread in self._threads:
            thread.join(timeout=5)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


# ----------------------------------------------------------------------------- the agent's side


class HealthMonitor:
    """An agent's health follower. follow() with its desired units at each round; health()
    for its state reports; restart_unhealthy() restarts what is due. CHANGED is called (on
    the source's thread) when a followed container's health changed."""

    def __init__(
        self, machine: str, source: HealthSource | None, changed: Callable[[], None]
    ) -> None:
        self.machine = machine
        self.source = source
        self._changed = changed
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}
        self._seen: dict[str, Seen] = {}  # container -> its last health
        self._acted: dict[str, int] = {}  # unit -> the turn its last restart answered

    def follow(self, desired: Iterable[tuple[str, str, str]]) -> None:
        """DESIRED: (name, content hash, text) of the units this machine should run."""
        if self.source is None:
            return
        checks = {}
        for name, content_hash, text in desired:
            known = self._checks.get(name)
            if known is not None and known.hash == content_hash:
                checks[name] = known
            elif (check := check_of(name, text, content_hash, self.machine)) is not None:
                checks[name] = check
        with self._lock:
            if checks.keys() == self._checks.keys() and all(
                checks[n] is self._checks[n] for n in checks
            ):
                return
            self._checks = checks
            containers = {check.container for check in checks.values()}
            self._seen = {c: s for c, s in self._seen.items() if c in containers}
            self._acted = {u: t for u, t in self._acted.items() if u in checks}
        self.source.follow(containers, self._on_health)

    def _on_health(self, container: str, health: Health) -> None:
        with self._lock:
            last = self._seen.get(container)
            if last is not None and last.health is health:
                return
            self._seen[container] = Seen(health, last.turn + 1 if last else 1)
        self._changed()

    def state(self, state: UnitState, observed: ObservedUnit) -> UnitState:
        """STATE with the unit's health, if it is followed."""
        with self._lock:
            check = self._checks.get(state.name)
            if check is None:
                return state
            health = unit_health(observed, self._seen.get(check.container))
        return replace(state, health=str(health)) if health else state

    def restart_unhealthy(
        self, manager: UnitManager, restarted: Callable[[str], None]
    ) -> list[str]:
        """Restart, in place, every unit due (due_restarts); RESTARTED is called for each
        (the agent's hook: logging, and counting it as the unit's failure). Never raises:
        the agent calls it also while etcd is away, from its loop's error path."""
        try:
            observed = manager.observe()
            with self._lock:
                due = due_restarts(self._checks, observed, self._seen, self._acted)
                for name in due:
                    self._acted[name] = self._seen[self._checks[name].container].turn
            for name in due:
                restarted(name)
            if due:
                manager.execute([RestartUnit(name) for name in due])
        except Exception as exc:  # the unit manager's trouble: its state reports show it
            log_event("health_restart_failed", error=repr(exc))
            return []
        return due

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
