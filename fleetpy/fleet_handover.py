"""One host handed over from fleetd to fleetpy's agent without restarting a unit
(`fleetpy migrate-host`, run as root on each host after `fleetpy migrate --from-fleet`).

What fleetd v1.0 does on shutdown decides the order. Its SIGTERM and SIGINT handler
(fleetd/fleetd.go `shutdown`) calls Server.Purge, whose AgentReconciler.Purge unloads every
unit in its units directory: StopUnit, then the file removed, in a loop until none is
left. So `systemctl stop fleet` stops every unit fleet ran on the host. SIGKILL has no
handler: fleetd dies, and the units, each a systemd unit of its own (own cgroup, not in
fleet.service's), keep running, their files in /run/fleet/units and their links in
/run/systemd/system where fleetd left them. SIGHUP is no way out either (it restarts
fleetd's components).

fleet's engine moves a dead machine's units once its fleetd's TTL key expires, to hosts
whose fleetd still runs: handing hosts over one by one would start them twice. Every
fleetd v1.0 engine first compares the cluster's engine version (`<prefix>engine/version`)
with its own, 1, and stands aside ("unable to participate") while the cluster's is higher:
`freeze_fleet_engine` sets it to 2 (compare-and-swap, idempotent) before the first fleetd
dies. fleetd's agents keep running what they run; nothing is scheduled by fleet again.

The steps, each safe to run again (a killed run, or one that timed out, is resumed by
running it again):
  1. checks, changing nothing: fleetpy's agent config exists, fleetpy's etcd answers,
     fleet's etcd answers with fleet's data under the prefix (fleet_keyspace.read_fleet,
     as `migrate` reads it);
  2. fleet's engine frozen (above);
  3. fleetd stopped without its purge: a runtime drop-in (KillSignal=SIGKILL, Restart=no,
     no ExecStop), then fleet.socket and fleet.service stopped (with the socket: a
     connection to /var/run/fleet.sock would start fleetd again), disabled and masked
     (fleet's own unit files in /etc moved aside first, where systemd cannot mask them:
     move them back and `systemctl unmask` to go back to fleet);
  4. fleetpy's agent started. It finds none of the units in its own directory, so it
     writes each unit fleetpy schedules here, relinks /run/systemd/system/<name> to its
     file and starts it: a start of a unit that runs already is a no-op in systemd (same
     MainPID); a unit fleet had placed but not started starts now;
  5. waited for until the agent reports every unit scheduled here (placed, and the globals
     this machine's metadata selects) in its desired state;
  6. fleet's copies removed from /run/fleet/units for the units the agent relinked. A unit
     whose link still points at fleet's file is one fleetpy does not run here (migrate
     refused it, or the agent did: unsigned where signatures are required): it is left
     running under fleet's last state and named in the report.

`migrate` holds each of fleet's machines in a maintenance window for its hand-over (its
units stay placed while its agent is not there yet). The hand-over does not end it: the
agent's etcd role may not write cordons (an operator's record), and the hold is what keeps
a host that is down half-way (as the test's) from losing its units. The report says it is
there; the operator runs `fleetpy uncordon` once every host is handed over.

`leftovers`, `settled`, `pending`, `not_running`, `rejected` and `desired_here` are pure
(tests/pure/test_fleet_handover.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent_plan import select_globals
from .drain import until_text
from .errors import FleetpyError
from .log import log_event
from .model.records import ScheduleEntry, UnitState, entries_for
from .states import (
    JOB_PENDING,
    PLACED_STATES,
    RUNNING_STATES,
    ActiveState,
    DesiredState,
    LoadState,
)

FLEET_UNITS_DIR = "/run/fleet/units"  # fleetd's units_directory default
LINK_DIR = "/run/systemd/system"  # where fleetd (LinkUnitFiles, runtime) and fleetpy link units
FLEET_SERVICE = "fleet.service"
FLEET_SOCKET = "fleet.socket"
AGENT_SERVICE = "fleetpy-agent.service"
# fleet v1.0's engine is version 1 (engine/engine.go engineVersion); at a higher cluster
# version every v1.0 engine stands aside.
FROZEN_ENGINE_VERSION = 2
DROP_IN_NAME = "50-fleetpy-handover.conf"
ETC_UNIT_DIR = "/etc/systemd/system"
MOVED_ASIDE = ".moved-aside-by-fleetpy"  # fleet's own unit file in /etc, kept to go back
DROP_IN = """\
# Written by `fleetpy migrate-host`: fleetd stops every unit it runs on SIGTERM (its
# purge); SIGKILL ends it alone, its units (their own cgroups) keep running.
[Service]
KillSignal=SIGKILL
SendSIGKILL=yes
Restart=no
ExecStop=
"""


class HandoverError(FleetpyError):
    """The host cannot be handed over (yet): nothing was changed, or what was is resumable."""


@dataclass(frozen=True)
class HandoverReport:
    machine: str
    fleetd: str  # what became of fleetd (stop_fleetd)
    taken: tuple[str, ...]  # units fleetpy's agent runs here now
    left_to_fleet: tuple[str, ...]  # units still running from fleet's files
    removed: tuple[str, ...]  # fleet's unit files removed
    # The end of a maintenance window on this machine (`migrate`'s hold for the hand-over,
    # or an operator's), None without one: the operator ends it (`fleetpy uncordon`).
    held_until: str | None = None
    failed: tuple[str, ...] = ()  # units to run here whose start by the agent failed
    refused: Mapping[str, str] = field(default_factory=dict)  # the agent's refusals: why


# ----------------------------------------------------------------------------- pure


def leftovers(
    fleet_files: Iterable[str], links: Mapping[str, str | None], units_dir: str = FLEET_UNITS_DIR
) -> tuple[list[str], list[str]]:
    """(fleet's unit files that fleetpy's agent relinked to its own: to remove, those still
    linked to fleet's file: left running under fleet) given FLEET_FILES (names in
    UNITS_DIR) and LINKS (name -> what /run/systemd/system/<name> points at; None: none)."""
    handed, kept = [], []
    ours = units_dir.rstrip("/") + "/"
    for name in sorted(fleet_files):
        target = links.get(name)
        if target is not None and os.path.normpath(target) == os.path.normpath(ours + name):
            kept.append(name)
        else:
            handed.append(name)
    return handed, kept


def settled(entry: ScheduleEntry, state: UnitState | None) -> bool:
    """Has the agent brought ENTRY to its desired state (or refused it, saying why)?"""
    if state is None or state.hash != entry.hash:
        return False
    if state.active == ActiveState.REJECTED:
        return True
    if entry.desired is DesiredState.LAUNCHED:
        # Running, or the agent's own start of it has ended otherwise (failed: reported).
        return state.active in RUNNING_STATES or state.job not in ("", JOB_PENDING)
    return state.load == LoadState.LOADED


def rejected(states: Mapping[str, UnitState]) -> dict[str, str]:
    """Units the agent refused to hand to systemd (e.g. unsigned, where hosts require
    signatures): name -> why."""
    return {
        name: state.message or state.sub
        for name, state in sorted(states.items())
        if state.active == ActiveState.REJECTED
    }


def not_running(desired: Mapping[str, ScheduleEntry], states: Mapping[str, UnitState]) -> list[str]:
    """Units of DESIRED meant to run that do not (their start failed); not those refused."""
    accounted = RUNNING_STATES | {ActiveState.REJECTED}  # running, or refused (said apart)
    return sorted(
        name
        for name, entry in desired.items()
        if entry.desired is DesiredState.LAUNCHED
        and (name not in states or states[name].active not in accounted)
    )


def pending(desired: Mapping[str, ScheduleEntry], states: Mapping[str, UnitState]) -> list[str]:
    """The units of DESIRED (this machine's, in a placed state) not yet settled."""
    return sorted(name for name, entry in desired.items() if not settled(entry, states.get(name)))


# ----------------------------------------------------------------------------- fleet's etcd


def _v2(endpoint: str, key: str, timeout: float, method: str = "GET", **query: str) -> Any:
    """etcd's v2 answer (JSON) for KEY, None when the key does not exist."""
    url = f"{endpoint.rstrip('/')}/v2/keys{urllib.parse.quote(key)}"
    data = None
    if method == "PUT":
        data = urllib.parse.urlencode({"value": query.pop("value")}).encode()
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "errorCode" not in answer:
            raise HandoverError(
                f"{endpoint} has no etcd v2 API (HTTP {e.code} on /v2/keys): fleet needs "
                "etcd's v2 API (etcd --enable-v2=true)"
            ) from None
        if answer["errorCode"] == 100:  # key not found
            return None
        if answer["errorCode"] in (101, 105):  # compare failed, node exists
            return answer
        raise HandoverError(
            f"fleet's etcd refused {method} {key}: {answer.get('message')}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise HandoverError(f"cannot reach fleet's etcd at {endpoint}: {reason}") from None


def freeze_fleet_engine(endpoint: str, prefix: str, timeout: float = 5.0) -> int:
    """Make every fleetd v1.0 engine stand aside (see the module's docstring); returns the
    cluster's engine version before (FROZEN_ENGINE_VERSION or more: frozen already)."""
    prefix = "/" + prefix.strip("/") + "/"
    root = _v2(endpoint, prefix.rstrip("/"), timeout)
    found = root is not None and any(
        str(node.get("key", "")).rsplit("/", 1)[-1] in ("job", "machines")
        for node in root.get("node", {}).get("nodes", [])
    )
    if not found:
        raise HandoverError(f"no fleet data under {prefix} in {endpoint} (see --fleet-prefix)")
    key = f"{prefix}engine/version"  # fleet's key (its etcd v2 keyspace), not fleetpy's
    for _ in range(10):  # a fleetd may bump 0 -> 1 between our read and our write
        node = _v2(endpoint, key, timeout)
        current = int(node["node"]["value"]) if node is not None else 0
        if current >= FROZEN_ENGINE_VERSION:
            return current
        condition = {"prevValue": str(current)} if node is not None else {"prevExist": "false"}
        answer = _v2(endpoint, key, timeout, "PUT", value=str(FROZEN_ENGINE_VERSION), **condition)
        if answer is not None and "errorCode" not in answer:
            log_event("fleet_engine_frozen", version=FROZEN_ENGINE_VERSION, previous=current)
            return current
    raise HandoverError(f"{key} keeps changing: is a fleetd newer than v1.0 running?")


# ----------------------------------------------------------------------------- the host

Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_here(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*argv], capture_output=True, text=True, timeout=120)


def _must(run: Run, *argv: str) -> str:
    result = run(argv)
    if result.returncode != 0:
        raise HandoverError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout}")
    return result.stdout


def _show(run: Run, unit: str, prop: str) -> str:
    return run(["systemctl", "show", "--value", "-p", prop, unit]).stdout.strip()


def stop_fleetd(
    run: Run, root: Path = Path("/"), service: str = FLEET_SERVICE, socket: str = FLEET_SOCKET
) -> str:
    """fleetd stopped without its purge, then masked (disabled where a unit file in /etc
    rules masking out): "killed" now, "not running" (stopped before: a resumed hand-over,
    a host rebooted without it), or "absent" (no such unit)."""
    load = _show(run, service, "LoadState")
    if load in (LoadState.NOT_FOUND, ""):
        return "absent"
    units = (
        [socket, service]
        if _show(run, socket, "LoadState") in (LoadState.LOADED, LoadState.MASKED)
        else [service]
    )
    running = any(_show(run, unit, "ActiveState") in RUNNING_STATES for unit in units)
    if running:
        if load == LoadState.MASKED:  # its drop-ins are not read: nothing makes its stop safe
            raise HandoverError(
                f"{service} is masked but running: kill it with `systemctl kill "
                f"--signal=SIGKILL {service}` (never stop it: fleetd stops its units)"
            )
        drop_in = root / LINK_DIR.lstrip("/") / f"{service}.d" / DROP_IN_NAME
        drop_in.parent.mkdir(parents=True, exist_ok=True)
        tmp = drop_in.with_suffix(".tmp")
        tmp.write_text(DROP_IN)
        os.replace(tmp, drop_in)
        _must(run, "systemctl", "daemon-reload")
        if _show(run, service, "KillSignal") != str(signal.SIGKILL.value):
            raise HandoverError(f"systemd did not take {drop_in}: fleetd left running")
        # The socket with it: a connection to the socket would start fleetd again.
        _must(run, "systemctl", "stop", *units)
        log_event("fleetd_stopped", service=service, signal="SIGKILL")
    if load != LoadState.MASKED:
        # Never again, at a boot or by something that starts it (CoreOS's cloud-config
        # starts fleet.service at every boot): its agent would act on fleet's schedule.
        run(["systemctl", "disable", *units])  # fails harmlessly without [Install]
        _mask(run, root, units, service)
    run(["systemctl", "reset-failed", service])  # killed: "failed" is expected
    return "killed" if running else "not running"


def _mask(run: Run, root: Path, units: Sequence[str], service: str) -> None:
    """UNITS masked. systemd masks with a link in /etc/systemd/system, which a unit file of
    the same name there rules out (fleet installed by hand, not shipped in /usr/lib as on
    CoreOS): such a file is moved aside first (NAME + MOVED_ASIDE: move it back and
    `systemctl unmask` to go back to fleet)."""
    moved = False
    for unit in units:
        fragment = _show(run, unit, "FragmentPath")
        if fragment.startswith(ETC_UNIT_DIR + "/"):
            path = root / fragment.lstrip("/")
            if path.is_file() and not path.is_symlink():
                os.replace(path, path.with_name(path.name + MOVED_ASIDE))
                log_event("fleet_unit_moved_aside", unit=unit, path=f"{fragment}{MOVED_ASIDE}")
                moved = True
    if moved:
        _must(run, "systemctl", "daemon-reload")
    masked = run(["systemctl", "mask", *units])
    if masked.returncode != 0:
        log_event("fleetd_not_masked", service=service, error=masked.stderr.strip())


def fleet_links(root: Path, names: Iterable[str]) -> dict[str, str | None]:
    """What /run/systemd/system/<name> points at, for each of NAMES (None: no link)."""
    links: dict[str, str | None] = {}
    for name in names:
        link = root / LINK_DIR.lstrip("/") / name
        try:
            target = os.readlink(link)
        except OSError:
            links[name] = None
            continue
        # Links to a path inside the host; seen from ROOT they are the same text.
        links[name] = target
    return links


def fleet_files(root: Path) -> list[str]:
    try:
        return sorted(p.name for p in (root / FLEET_UNITS_DIR.lstrip("/")).iterdir())
    except FileNotFoundError:
        return []


def remove_fleet_files(root: Path, names: Iterable[str]) -> list[str]:
    removed = []
    for name in names:
        path = root / FLEET_UNITS_DIR.lstrip("/") / name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def wait_settled(
    desired_now: Callable[[], tuple[dict[str, ScheduleEntry], dict[str, UnitState]]],
    timeout: float,
    interval: float = 0.5,
) -> list[str]:
    """Poll DESIRED_NOW until every desired unit is settled; the units left (none: done)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = pending(*desired_now())
        except FleetpyError as exc:  # etcd away a moment: the agent is not done either
            left = [f"(etcd: {exc})"]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(interval)


def desired_here(
    placed: Mapping[str, ScheduleEntry],
    globals_: Mapping[str, ScheduleEntry],
    machine: str,
    metadata: Mapping[str, str],
) -> dict[str, ScheduleEntry]:
    """What this machine's agent runs (as the agent chooses it): units placed here and the
    globals its metadata selects, in a placed state."""
    chosen = dict(placed)
    chosen.update(select_globals(entries_for(globals_, machine), placed, metadata))
    return {name: e for name, e in chosen.items() if e.desired in PLACED_STATES}


def hand_over(
    config_path: str,
    fleet_endpoint: str,
    fleet_prefix: str,
    timeout: float,
    run: Run = run_here,
    root: Path = Path("/"),
) -> HandoverReport:
    """Steps 1-6 of the module's docstring on this host."""
    from .config import load_config_file, read_machine_id, resolve
    from .fleet_keyspace import etcd_base_url, read_fleet
    from .registry import Registry

    if not Path(config_path).exists():
        raise HandoverError(
            f"no fleetpy agent config at {config_path}: provision this host for fleetpy "
            "first (provision.sh --endpoint ... --ip ... --metadata as fleetd's)"
        )
    settings = resolve({}, load_config_file(config_path), environ={})
    machine = settings.agent.machine_id or read_machine_id(str(root / "etc/machine-id"))
    registry = Registry(settings.etcd)
    try:
        registry.read_machine_schedule(machine)  # fleetpy's etcd answers, before any change
        read_fleet(fleet_endpoint, fleet_prefix)  # fleet's etcd, v2 API and data, as migrate
        freeze_fleet_engine(etcd_base_url(fleet_endpoint), fleet_prefix)
        fleetd = stop_fleetd(run, root)
        _must(run, "systemctl", "enable", "--now", AGENT_SERVICE)

        def now() -> tuple[dict[str, ScheduleEntry], dict[str, UnitState]]:
            schedule = registry.read_machine_schedule(machine)
            record = registry.list_machines().get(machine)
            metadata = record.metadata if record is not None else settings.agent.metadata
            desired = desired_here(schedule.placed, schedule.globals, machine, metadata)
            states = registry.unit_states((machine, name) for name in desired)
            return desired, {name: state for (_, name), state in states.items()}

        left = wait_settled(now, timeout)
        if left:
            raise HandoverError(
                f"fleetpy's agent has not taken over {', '.join(left)} after {timeout:g}s "
                "(fleetd is stopped, the units run): run this again to finish"
            )
        desired, states = now()
        cordon = registry.agent_cordon(machine)
        record = cordon[1] if cordon is not None else None
    finally:
        registry.close()
    files = fleet_files(root)
    handed, kept = leftovers(files, fleet_links(root, files))
    removed = remove_fleet_files(root, handed)
    report = HandoverReport(
        machine,
        fleetd,
        tuple(sorted(set(desired) - set(rejected(states)))),
        tuple(kept),
        tuple(removed),
        until_text(record) if record is not None and record.maintenance_until else None,
        tuple(not_running(desired, states)),
        rejected(states),
    )
    log_event(
        "host_handed_over",
        machine=machine,
        fleetd=fleetd,
        taken=len(report.taken),
        left_to_fleet=",".join(kept) or None,
    )
    return report
