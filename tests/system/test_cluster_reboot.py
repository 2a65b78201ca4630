"""A `fleetpy cluster up` host rebooted from inside, as an operator does it
(`fleetpy ssh MACHINE systemctl reboot`): systemd-nspawn exits 133 when its guest asks
for a reboot, and the cluster boots it again, as systemd's systemd-nspawn@.service does
(RestartForceExitStatus=133); a guest's poweroff, or a crash, leaves it down. The host
keeps its address, machine id, agent token and ssh host key, so it is the same machine
when back; `cluster down` removes everything, also while a host reboots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.local import STATE_ROOT, ClusterState, current_init, status

from support.cluster_harness import cli, cluster_up, leftovers, sourced
from support.waiting import until

pytestmark = pytest.mark.hosts

NAME = "tboot"
SLEEPER = "[Unit]\nDescription=sleeps\n\n[Service]\nExecStart=/bin/sleep infinity\n"


@pytest.fixture
def cluster() -> Iterator[ClusterState]:
    state = cluster_up(NAME, "--hosts", "3", "--ttl", "3")
    try:
        yield state
    finally:
        if (STATE_ROOT / NAME).exists():
            cli("cluster", "down", "--name", NAME)


def _alive() -> dict[str, bool]:
    """`cluster status`'s ALIVE of each host."""
    return {row.name: row.alive for row in status(NAME)[1] if row.what == "host"}


def _units(env: dict[str, str]) -> list[dict[str, str]]:
    listed = cli("list-units", "-o", "json", env=env)
    return list(json.loads(listed.stdout)) if listed.returncode == 0 else []


def _init_of(host: str) -> int:
    """The host's init pid now (0 between two boots)."""
    return current_init(next(h for h in ClusterState.load(NAME).hosts if h.name == host))


def _in_host(host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """ARGV run in HOST's current boot (rc 255 if it has none)."""
    init = _init_of(host)
    if not init:
        return subprocess.CompletedProcess(argv, 255, "", "not running")
    nsenter = ["nsenter", "-t", str(init), "-a"]
    return subprocess.run([*nsenter, *argv], capture_output=True, text=True)


def _invocation(host: str) -> str:
    """sleeper.service's InvocationID on HOST, "" if it has none or HOST is not up."""
    shown = _in_host(host, "systemctl", "show", "--value", "-p", "InvocationID", "sleeper.service")
    return shown.stdout.strip() if shown.returncode == 0 else ""


def test_a_guest_reboot_comes_back_as_the_same_machine_poweroff_and_crash_stay_down(
    cluster: ClusterState, tmp_path: Path
) -> None:
    env = sourced(cluster)
    unit = tmp_path / "sleeper.service"
    unit.write_text(SLEEPER)
    started = cli("start", str(unit), env=env)
    assert started.returncode == 0, started.stderr
    until(
        lambda: any(
            u["unit"] == "sleeper.service" and u["active"] == "active" for u in _units(env)
        ),
        timeout=60,
        what="sleeper.service active",
    )
    machine = next(u["machine"] for u in _units(env) if u["unit"] == "sleeper.service")
    host = next(h for h in cluster.hosts if h.machine_id == machine)
    others = [h for h in cluster.hosts if h is not host]
    before = _invocation(host.name)
    assert before
    window = cli("drain", machine, "--no-move", "--window", "2m", env=env)
    assert window.returncode == 0, window.stderr

    # A unit whose stop takes 12 s keeps the host shutting down for longer than its TTL (3 s)
    # once its agent stopped: its lease ends, and only the window keeps its units placed
    # (~9 s without a lease: the CLI sampled every few seconds under load still sees it).
    slow = ["systemd-run", "--unit", "slowstop", "-p", "RemainAfterExit=yes"]
    assert _in_host(host.name, *slow, "-p", "ExecStop=/bin/sleep 12", "/bin/true").returncode == 0
    # The operator's reboot: the host goes down and comes back by itself.
    first = _init_of(host.name)
    cli("ssh", machine, "systemctl", "reboot", env=env, timeout=60)
    placements: set[str] = set()
    registered: list[bool] = []

    def booted_again() -> bool:
        machines = json.loads(cli("list-machines", "-o", "json", env=env).stdout or "[]")
        registered.append(machine in {m["machine"] for m in machines})
        placements.update(u["machine"] for u in _units(env) if u["unit"] == "sleeper.service")
        return _init_of(host.name) not in (0, first)

    until(booted_again, timeout=60, what="the host booted again")
    assert not all(registered)  # its lease ended while it was away

    def back() -> bool:
        units = _units(env)
        placements.update(u["machine"] for u in units if u["unit"] == "sleeper.service")
        invocation = _invocation(host.name)
        return invocation not in ("", before) and any(
            u["unit"] == "sleeper.service" and u["machine"] == machine and u["active"] == "active"
            for u in units
        )

    until(back, timeout=120, interval=0.3, what="sleeper.service active again on the rebooted host")
    assert placements == {machine}  # never placed elsewhere: the maintenance window held
    machines = json.loads(cli("list-machines", "-o", "json", env=env).stdout)
    assert sorted(m["machine"] for m in machines) == sorted(h.machine_id for h in cluster.hosts)
    assert next(m["ip"] for m in machines if m["machine"] == machine) == host.address
    assert _alive() == {h.name: True for h in cluster.hosts}
    # The host key known_hosts has still. sshd may start after the agent has brought the
    # unit back (under load): a refused connection is waited out, nothing else is.
    answers: list[subprocess.CompletedProcess[str]] = []

    def sshd_answers() -> bool:
        answers.append(cli("ssh", machine, "hostname", env=env))
        return "Connection refused" not in answers[-1].stderr

    until(sshd_answers, timeout=60, what="sshd on the rebooted host")
    ssh = answers[-1]
    assert (ssh.returncode, ssh.stdout.strip()) == (0, host.name), ssh.stderr
    uncordoned = cli("uncordon", machine, env=env)
    assert uncordoned.returncode == 0, uncordoned.stderr

    # A guest's poweroff, and a crash (its init killed), leave a host down for good.
    powered_off, crashed = others
    cli("ssh", powered_off.machine_id, "systemctl", "poweroff", env=env, timeout=60)
    assert crashed.init is not None
    os.kill(crashed.init.pid, signal.SIGKILL)
    until(
        lambda: not any(_alive()[h.name] for h in others),
        timeout=60,
        what="the powered-off and the crashed host down",
    )
    time.sleep(5)  # longer than a reboot takes here
    assert _alive() == {host.name: True, powered_off.name: False, crashed.name: False}
    rows = {r.name: r.detail for r in status(NAME)[1]}
    assert "rebooting" not in rows[powered_off.name] + rows[crashed.name]

    # `down` while a host reboots removes everything.
    init = _init_of(host.name)
    assert _in_host(host.name, "systemctl", "reboot").returncode == 0
    until(
        lambda: _init_of(host.name) != init, timeout=60, interval=0.02, what="the reboot under way"
    )
    down = cli("cluster", "down", "--name", NAME)
    assert down.returncode == 0, down.stderr
    assert f"removed host {host.name}" in down.stdout.splitlines()
    assert leftovers(NAME) == []
