"""`fleetpy cluster up/status/down` for real: hosts in their own network namespaces with
their own addresses, sshd, the example deployment, status/journal/ssh over ssh, faults
on the networked cluster (a cut link, a killed etcd member, a killed leading engine),
and a `down` that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.local import STATE_ROOT, ClusterState
from fleetpy.cluster.network import ip

from support.cluster_harness import TEST_CLUSTERS, cli, cluster_up, leftovers, sourced
from support.paths import ROOT
from support.waiting import until

pytestmark = pytest.mark.hosts


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterState]:
    name = "t6c"
    state = cluster_up(name, "--hosts", "3", "--etcd-members", "3", "--ttl", "5")
    try:
        yield state
    finally:
        down = cli("cluster", "down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert leftovers(name) == []


def test_hosts_have_their_own_addresses(cluster: ClusterState) -> None:
    env = sourced(cluster)
    machines = json.loads(cli("list-machines", "-o", "json", env=env).stdout)
    base = TEST_CLUSTERS[cluster.name].removesuffix(".0/24")
    assert sorted(m["ip"] for m in machines) == [f"{base}.10", f"{base}.11", f"{base}.12"]
    assert {m["metadata"]["rack"] for m in machines} == {"r1", "r2", "r3"}
    status = cli("cluster", "status", "--name", cluster.name)
    assert status.returncode == 0 and "NO" not in status.stdout, status.stdout
    # no route beyond the bridge: a host reaches its neighbours and this machine only
    host = cluster.hosts[0]
    routes = subprocess.run(
        ["ip", "-n", host.netns, "route"], capture_output=True, text=True
    ).stdout
    assert "default" not in routes
    assert routes.split()[0] == TEST_CLUSTERS[cluster.name]


def test_example_deployment_and_remote_verbs(cluster: ClusterState) -> None:
    env = sourced(cluster)
    result = cli("apply", "units", "--min-ready", "1", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    units = json.loads(cli("list-units", "-o", "json", env=env).stdout)
    assert {u["unit"] for u in units if u["active"] == "active"} >= {
        "web@1.service",
        "web@2.service",
        "web@3.service",
        "monitor.service",
    }
    # A global unit's apply ends once one machine started it (and it stayed active for
    # --min-ready): the other machines report theirs when they do (later, under load).
    every = {h.machine_id for h in cluster.hosts}

    def monitors_everywhere() -> bool:
        rows = json.loads(cli("list-units", "-o", "json", env=env).stdout)
        return {u["machine"] for u in rows if u["unit"] == "monitor.service"} == every

    until(monitors_everywhere, timeout=60, what="monitor.service reported on every machine")
    status = cli("status", "web@1.service", env=env)
    assert status.returncode == 0, status.stderr
    assert "web@1.service - example web server, instance 1" in status.stdout
    monitors = cli("status", "monitor.service", env=env)  # global: every machine
    assert monitors.stdout.count("monitor.service on ") == 3
    journal = cli("journal", "--lines", "5", "web-sidekick@1.service", env=env)
    assert journal.returncode == 0 and "web@1 is up on" in journal.stdout, journal.stdout
    machine = next(u["machine"] for u in units if u["unit"] == "web@2.service")
    hostname = cli("ssh", machine[:6], "hostname", env=env)
    assert hostname.returncode == 0 and hostname.stdout.strip().startswith(f"{cluster.name}-h")
    via_unit = cli("ssh", "web@2.service", "cat", "/etc/machine-id", env=env)
    assert via_unit.stdout.strip() == machine
    tunnel = cli(
        "--tunnel", f"root@{cluster.hosts[0].address}", "ssh", machine[:6], "hostname", env=env
    )
    assert tunnel.returncode == 0, tunnel.stderr
    assert tunnel.stdout.strip().startswith(f"{cluster.name}-h")


def test_cut_link_moves_units_and_the_host_stops_its_copies_when_back(
    cluster: ClusterState,
) -> None:
    from fleetpy.cluster.network import BridgeNetwork

    env = sourced(cluster)
    units = json.loads(cli("list-units", "-o", "json", env=env).stdout)
    victim_machine = next(u["machine"] for u in units if u["unit"] == "web@1.service")
    victim = next(h for h in cluster.hosts if h.machine_id == victim_machine)
    moved = [
        u["unit"]
        for u in units
        if u["machine"] == victim_machine and u["unit"] != "monitor.service"
    ]
    network = BridgeNetwork(
        cluster.name,
        __import__("ipaddress").IPv4Network(cluster.subnet),
        {h.name: h.index for h in cluster.hosts},
    )
    from fleetpy.registry import Registry, RegistryConfig

    registry = Registry(RegistryConfig(endpoints=tuple(cluster.endpoints)))
    network.cut(victim.name)
    cut_at = time.monotonic()
    try:

        def placed_elsewhere() -> bool:
            schedule = registry.read_view(with_text=False).schedule
            return all(schedule.get(name, (victim_machine,))[0] != victim_machine for name in moved)

        until(
            placed_elsewhere,
            timeout=30,
            interval=0.05,
            what="the cut host's units placed elsewhere",
        )
        placed_after = time.monotonic() - cut_at
        print(f"link cut: units placed elsewhere after {placed_after:.2f}s (TTL 5)")
        assert placed_after <= 5 + 2  # TTL + 2 s

        def active_elsewhere() -> bool:
            now = json.loads(cli("list-units", "-o", "json", env=env).stdout)
            return all(
                any(
                    u["unit"] == name and u["machine"] != victim_machine and u["active"] == "active"
                    for u in now
                )
                for name in moved
            )

        until(active_elsewhere, timeout=30, what="the cut host's units active elsewhere")
    finally:
        network.restore(victim.name)
        registry.close()
    restored_at = time.monotonic()
    nsenter = ["nsenter", "-t", str(victim.init.pid if victim.init else 0), "-a"]

    def stopped_there() -> bool:
        active = subprocess.run(
            [*nsenter, "systemctl", "is-active", *moved], capture_output=True, text=True
        ).stdout.split()
        return "active" not in active

    until(
        stopped_there, timeout=30, interval=0.1, what="the returning host stopped its stale copies"
    )
    twice_after_return = time.monotonic() - restored_at
    print(f"link back: stale copies stopped after {twice_after_return:.2f}s (TTL 5)")
    assert twice_after_return <= 5  # nothing runs twice for longer than the TTL


def test_killed_etcd_member_and_killed_leading_engine(
    cluster: ClusterState, tmp_path: Path
) -> None:
    env = sourced(cluster)
    os.kill(cluster.etcd[0].pid, signal.SIGKILL)
    try:
        result = cli("start", "web@4.service", env=env)
        assert result.returncode != 0 and "not submitted" in result.stderr  # a real error
        path = ROOT / "units" / "hello.service"
        started = cli("start", str(path), env=env)
        assert started.returncode == 0, started.stderr
        # the leading engine dies while units are being started
        from fleetpy.registry import Registry, RegistryConfig

        with Registry(RegistryConfig(endpoints=tuple(cluster.endpoints[1:]))) as registry:
            leader = registry.leader() or ""
        engine = next(e for e in cluster.engines if f"-{e.pid}-" in leader)
        batch_files = [tmp_path / f"t6-{number}.service" for number in range(1, 11)]
        for unit_file in batch_files:  # the test's own: tests run side by side
            unit_file.write_text("[Service]\nExecStart=/bin/sleep 1000\n")
        batch = cli("start", "--no-block", *map(str, batch_files), env=env)
        os.kill(engine.pid, signal.SIGKILL)
        assert batch.returncode == 0, batch.stderr
        until(
            lambda: (
                len(
                    [
                        u
                        for u in json.loads(cli("list-units", "-o", "json", env=env).stdout)
                        if u["unit"].startswith("t6-") and u["active"] == "active"
                    ]
                )
                == 10
            ),
            timeout=40,
            what="all 10 started by the other engine",
        )
        placed = json.loads(cli("list-units", "-o", "json", env=env).stdout)
        names = [u["unit"] for u in placed if u["unit"].startswith("t6-")]
        assert len(names) == len(set(names)) == 10  # none placed twice
    finally:
        cli("destroy", "t6-*", "hello.service", env=env)

        # Gone from list-units before the next test takes every unit's place as its
        # `before`: each agent reports its copy gone once it stopped it and removed its file.
        def gone() -> bool:
            listed = cli("list-units", "-o", "json", env=env)
            return listed.returncode == 0 and not any(
                u["unit"].startswith("t6-") or u["unit"] == "hello.service"
                for u in json.loads(listed.stdout)
            )

        until(gone, timeout=60, what="the destroyed units gone from list-units")


def test_quorum_lost_keeps_units_running_fails_commands_fast_and_moves_nothing(
    cluster: ClusterState, tmp_path: Path
) -> None:
    """Two of three etcd members down (the one killed above stays down; one more paused)
    on real hosts: units run on, a command fails in one line naming the lost quorum
    instead of waiting out its timeout, agents keep their leases, and when the quorum is
    back nothing has moved or restarted."""
    env = sourced(cluster)
    unit = tmp_path / "steady.service"
    unit.write_text("[Service]\nExecStart=/bin/sleep 1000\n")
    assert cli("start", str(unit), env=env).returncode == 0

    def placement() -> dict[str, tuple[str, str]]:
        rows = json.loads(cli("list-units", "-o", "json", env=env).stdout)
        return {u["unit"]: (u["machine"], u["active"]) for u in rows}

    before = placement()
    host = next(h for h in cluster.hosts if h.machine_id == before["steady.service"][0])
    nsenter = ["nsenter", "-t", str(host.init.pid if host.init else 0), "-a"]

    def main_pid() -> str:
        return subprocess.run(
            [*nsenter, "systemctl", "show", "-p", "MainPID", "--value", "steady.service"],
            capture_output=True,
            text=True,
        ).stdout.strip()

    def registrations() -> int:
        journals = [
            subprocess.run(
                [
                    "nsenter",
                    "-t",
                    str(h.init.pid if h.init else 0),
                    "-a",
                    "journalctl",
                    "-o",
                    "cat",
                    "-u",
                    "fleetpy-agent",
                ],
                capture_output=True,
                text=True,
            ).stdout
            for h in cluster.hosts
        ]
        return sum(j.count("event=machine_registered") for j in journals)

    pid, registered = main_pid(), registrations()
    assert pid not in ("", "0")
    # The leader is left alone and every other live member paused: alone it steps down
    # (no quorum). A paused leader would instead revoke every lease it saw expire when it
    # resumed (etcd's own doing: agents then register once anew, as after a pause of a
    # single etcd; README "Faults").
    from fleetpy.registry import Registry, RegistryConfig

    with Registry(RegistryConfig(endpoints=tuple(cluster.endpoints))) as registry:
        statuses, _ = registry.etcd_status()
    leader = next(s.url for s in statuses if s.member_id and s.member_id == s.leader)
    paused = [m for m, url in zip(cluster.etcd, cluster.endpoints) if m.alive() and url != leader]
    assert len(cluster.etcd) == 3 and len(cluster.endpoints) == 3 and leader in cluster.endpoints
    for member in paused:
        os.kill(member.pid, signal.SIGSTOP)
    lost_at = time.monotonic()
    try:
        began = time.monotonic()
        result = cli("list-units", "--request-timeout", "60", env=env)
        took = time.monotonic() - began
        assert result.returncode == 1, result.stdout
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("fleetpy: error: etcd has lost its quorum"), line
        assert took < 30, took  # not the 60 s request timeout
        # Past the agents' TTL (5 s) with no quorum: nothing to wait for but time itself.
        time.sleep(max(0.0, lost_at + 5 + 2 - time.monotonic()))
        assert main_pid() == pid
    finally:
        for member in paused:
            os.kill(member.pid, signal.SIGCONT)
    until(lambda: cli("list-units", env=env).returncode == 0, timeout=60, what="quorum back")
    until(lambda: placement() == before, timeout=30, what="every unit where it was, active")
    assert main_pid() == pid
    assert registrations() == registered  # leases kept: no agent registered anew
    cli("destroy", "steady.service", env=env)


def test_second_up_is_refused_and_a_crashed_up_is_cleaned(cluster: ClusterState) -> None:
    again = cli("cluster", "up", "--name", cluster.name)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"fleetpy: error: a local cluster named {cluster.name} is up already (or its remains "
        f"are): fleetpy cluster down --name {cluster.name}"
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    crashed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetpy",
            "cluster",
            "up",
            "--name",
            "t6x",
            "--hosts",
            "2",
            "--subnet",
            TEST_CLUSTERS["t6x"],
        ],
        env=base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    until(
        lambda: (
            any(
                h.get("machine_id")
                for h in json.loads((STATE_ROOT / "t6x" / "state.json").read_text()).get(
                    "hosts", []
                )
            )
            if (STATE_ROOT / "t6x" / "state.json").exists()
            else False
        ),
        timeout=120,
        what="the crashing up to launch a host",
    )
    crashed.kill()
    crashed.wait()
    down = cli("cluster", "down", "--name", "t6x")
    assert down.returncode == 0, down.stderr
    assert leftovers("t6x") == []
    missing = cli("cluster", "down", "--name", "t6x")
    assert missing.returncode == 0 and "no local cluster named t6x" in missing.stdout


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_down_finishes_after_a_host_died_a_veth_went_and_etcd_was_killed() -> None:
    """[19.5] What died before `down` counts as removed, the rest is still removed, and
    `down` says which was which; a second `down` does nothing, successfully."""
    name = "tdown"
    state = cluster_up(name, "--hosts", "3")
    try:
        dead, unplugged, alive = state.hosts
        assert dead.init and dead.nspawn
        nspawn = dead.nspawn.pid
        os.kill(dead.init.pid, signal.SIGKILL)  # init first: nspawn alone orphans it
        os.kill(nspawn, signal.SIGKILL)
        until(lambda: _dead(nspawn), what="the killed host's nspawn to exit")
        ip("netns", "del", dead.netns)  # its veth goes with it, a moment later
        ip("link", "del", unplugged.veth)  # both ends: the host's link is gone
        os.kill(state.etcd[0].pid, signal.SIGKILL)
        until(lambda: _dead(state.etcd[0].pid), what="etcd to exit")

        down = cli("cluster", "down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert down.stderr == ""
        lines = down.stdout.splitlines()
        for gone in (
            f"host {dead.name}",
            f"namespace {dead.netns}",
            f"link {unplugged.veth}",
            f"etcd member 1 (pid {state.etcd[0].pid})",
        ):
            assert f"{gone} was already gone" in lines, down.stdout
        for removed in (
            f"host {unplugged.name}",
            f"host {alive.name}",
            f"namespace {unplugged.netns}",
            f"link {alive.veth}",
            f"namespace {alive.netns}",
            f"bridge {state.bridge}",
            f"directory {STATE_ROOT / name}",
        ):
            assert f"removed {removed}" in lines, down.stdout
        assert leftovers(name) == []

        again = cli("cluster", "down", "--name", name)
        assert (again.returncode, again.stdout, again.stderr) == (
            0,
            f"no local cluster named {name}: nothing to remove\n",
            "",
        )
    finally:
        if (STATE_ROOT / name).exists():
            cli("cluster", "down", "--name", name)


def test_down_removes_the_rest_of_what_it_cannot_remove_and_says_so() -> None:
    """[19.5] Something down must not remove (a file system mounted in the cluster's
    directory): one error line naming it, exit 1, everything else removed, the state kept;
    once it is unmounted, `down` again finishes."""
    name = "tstuck"
    state = cluster_up(name, "--hosts", "1")
    mount = Path(state.hosts[0].state_dir) / "mounted"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    (mount / "precious").write_text("not the cluster's\n")
    try:
        down = cli("cluster", "down", "--name", name)
        assert down.returncode == 1, down.stdout
        assert down.stderr.splitlines() == [
            f"fleetpy: error: cluster {name}: could not remove directory {STATE_ROOT / name}: "
            f"{mount}: a mount point (unmount it). The rest is removed (its state is kept in "
            f"{STATE_ROOT / name}): once fixed, fleetpy cluster down --name {name} again"
        ]
        assert f"removed host {state.hosts[0].name}" in down.stdout.splitlines()
        assert f"removed bridge {state.bridge}" in down.stdout.splitlines()
        assert leftovers(name) == [str(STATE_ROOT / name)]
        assert (mount / "precious").read_text() == "not the cluster's\n"
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    again = cli("cluster", "down", "--name", name)
    assert again.returncode == 0, again.stderr
    assert f"removed directory {STATE_ROOT / name}" in again.stdout.splitlines()
    assert f"host {state.hosts[0].name} was already gone" in again.stdout.splitlines()
    assert leftovers(name) == []
