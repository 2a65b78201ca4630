"""The hand-over of a host from fleetd to fleetpy's agent (fleetpy/fleet_handover.py,
`fleetpy migrate-host`) on a real fleet v1.0 cluster (tests/support/fleet_hosts.py)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import Host
from fleetpy.fleet_handover import (
    ETC_UNIT_DIR,
    MOVED_ASIDE,
    HandoverError,
    freeze_fleet_engine,
    stop_fleetd,
)

from support.fleet import cli_env, run_cli
from support.fleet_hosts import (
    FLEET_PREFIX,
    FLEET_UNIT,
    FleetCluster,
    FleetClusterFactory,
    fleet_v2,
)
from support.waiting import until

pytestmark = pytest.mark.hosts

SLEEPER = "[Unit]\nDescription=%n\n\n[Service]\nExecStart=/bin/sleep 100000\n"


def migrate_host(
    cluster: FleetCluster, machine: str, *args: str
) -> subprocess.CompletedProcess[str]:
    host = cluster.host(machine)
    return host.run(
        [
            "fleetpy",
            "migrate-host",
            "--from-fleet",
            cluster.etcd.endpoint,
            "--timeout",
            "60",
            *args,
        ],
        check=False,
        timeout=120,
    )


def engine_version(cluster: FleetCluster) -> str | None:
    node = fleet_v2(cluster.etcd.endpoint, FLEET_PREFIX + "engine/version", recursive=False)
    return None if node is None else str(node["value"])


@pytest.mark.parametrize("fleet_unit_dir", ["/usr/lib/systemd/system", "/etc/systemd/system"])
def test_units_fleetpy_does_not_have_stay_running_under_fleet(
    fleet_cluster: FleetClusterFactory, fleet_unit_dir: str
) -> None:
    """fleetpy's keyspace is empty (nothing migrated): the hand-over takes nothing, kills
    fleetd past its purge, and every unit fleet ran keeps running, same MainPID. fleet's
    own units where CoreOS shipped them, or in /etc as installed by hand (where systemd
    cannot mask a unit before its file is moved aside)."""
    cluster = fleet_cluster(metadata=[{"role": "web"}], fleet_unit_dir=fleet_unit_dir)
    (host,) = cluster.hosts
    names = ["a.service", "b@1.service"]
    for name in ("a.service", "b@.service"):
        cluster.write(name, SLEEPER)
    cluster.fleetctl("start", "--no-block", *(str(cluster.workdir / n) for n in names))
    cluster.fleetctl("load", "--no-block", cluster.write("c.service", SLEEPER))
    cluster.wait_active(names)
    until(lambda: host.show("c.service", "LoadState") == "loaded", what="c loaded by fleetd")
    pids = {name: host.main_pid(name) for name in names}
    cluster.enable_agent(host)

    result = migrate_host(cluster, host.machine_id)
    assert result.returncode == 0, result.stderr
    assert f"Machine {host.machine_id}: fleetd killed, 0 units taken over" in result.stdout
    for name in [*names, "c.service"]:
        assert f"= {name}  left running under fleet's last state" in result.stdout
    assert not host.is_active(FLEET_UNIT) and not host.is_active("fleet.socket")
    for unit in (FLEET_UNIT, "fleet.socket"):  # never again, whatever starts it
        assert host.systemctl("is-enabled", unit, check=False).stdout.strip() == "masked"
        if fleet_unit_dir == ETC_UNIT_DIR:  # kept, to go back to fleet
            kept = host.run(["test", "-f", f"{ETC_UNIT_DIR}/{unit}{MOVED_ASIDE}"], check=False)
            assert kept.returncode == 0
    assert host.is_active("fleetpy-agent.service")
    assert engine_version(cluster) == "2"
    time.sleep(3)  # fleetd's purge, had it run, stops units at once
    assert {name: host.main_pid(name) for name in names} == pids
    assert host.show("c.service", "LoadState") == "loaded"

    again = migrate_host(cluster, host.machine_id)
    assert again.returncode == 0, again.stderr
    assert "fleetd not running, 0 units taken over" in again.stdout
    assert {name: host.main_pid(name) for name in names} == pids


def test_a_frozen_fleet_engine_moves_nothing_off_a_host_whose_fleetd_died(
    fleet_cluster: FleetClusterFactory,
) -> None:
    """Why the hand-over freezes fleet's engine before it kills a fleetd. Control: without
    the freeze, fleet starts the unit of a host whose fleetd died on another host, and it
    runs twice. With it, nothing moves: the unit runs where it ran, once."""
    cluster = fleet_cluster(metadata=[{}, {}, {}], agent_ttl="3s")
    u1 = cluster.write("u1.service", SLEEPER)
    u2 = cluster.write("u2.service", SLEEPER + "\n[X-Fleet]\nConflicts=u1.service\n")
    cluster.fleetctl("start", "--no-block", u1, u2)
    cluster.wait_active(["u1.service", "u2.service"])
    first, second = cluster.where("u1.service"), cluster.where("u2.service")
    third = next(h for h in cluster.hosts if h not in (first, second))
    pids = {"u1.service": first.main_pid("u1.service"), "u2.service": second.main_pid("u2.service")}

    kill_fleetd(first)  # no freeze: u1 is started again on the third host (u2 conflicts)
    until(lambda: third.is_active("u1.service"), timeout=60, what="fleet moving u1")
    assert first.main_pid("u1.service") == pids["u1.service"]  # ... and it runs twice

    assert freeze_fleet_engine(cluster.etcd.endpoint, FLEET_PREFIX) == 1
    kill_fleetd(second)
    time.sleep(12)  # 4 TTLs: fleet moved u1 within 2 of them
    assert not third.is_active("u2.service") and not first.is_active("u2.service")
    assert second.main_pid("u2.service") == pids["u2.service"]
    assert cluster.where("u2.service") is second


def kill_fleetd(host: Host) -> None:
    """fleetd stopped on HOST as the hand-over does it (past its purge), nothing else."""
    root = Path(f"/proc/{host.init_pid}/root")
    assert stop_fleetd(lambda argv: host.run(argv, check=False), root) == "killed"


@pytest.fixture
def v2_etcd() -> Iterator[EtcdServer]:
    with EtcdServer(extra_args=("--enable-v2=true",)) as server:
        yield server


def v2_put(etcd: EtcdServer, key: str, value: str) -> None:
    data = urllib.parse.urlencode({"value": value}).encode()
    request = urllib.request.Request(f"{etcd.endpoint}/v2/keys{key}", data=data, method="PUT")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.mark.parametrize(("before", "after"), [(None, "2"), ("0", "2"), ("1", "2"), ("3", "3")])
def test_freeze_sets_fleets_engine_version_above_v1(
    v2_etcd: EtcdServer, before: str | None, after: str
) -> None:
    v2_put(v2_etcd, FLEET_PREFIX + "machines/m1/object", "{}")
    if before is not None:
        v2_put(v2_etcd, FLEET_PREFIX + "engine/version", before)
    assert freeze_fleet_engine(v2_etcd.endpoint, FLEET_PREFIX) == int(before or 0)
    node = fleet_v2(v2_etcd.endpoint, FLEET_PREFIX + "engine/version", recursive=False)
    assert node is not None and node["value"] == after


def test_freeze_bad_input_is_one_line_and_writes_nothing(v2_etcd: EtcdServer) -> None:
    with pytest.raises(HandoverError, match=r"^cannot reach fleet's etcd at http://127.0.0.1:1"):
        freeze_fleet_engine("http://127.0.0.1:1", FLEET_PREFIX)
    with EtcdServer() as v3_only, pytest.raises(HandoverError, match=r"has no etcd v2 API"):
        freeze_fleet_engine(v3_only.endpoint, FLEET_PREFIX)
    with pytest.raises(HandoverError, match=r"^no fleet data under /_coreos.com/fleet/ in "):
        freeze_fleet_engine(v2_etcd.endpoint, FLEET_PREFIX)
    v2_put(v2_etcd, FLEET_PREFIX + "job/a.service/target-state", "launched")
    with pytest.raises(HandoverError, match=r"^no fleet data under /other/ in "):
        freeze_fleet_engine(v2_etcd.endpoint, "/other")
    assert fleet_v2(v2_etcd.endpoint, "/other") is None
    assert fleet_v2(v2_etcd.endpoint, FLEET_PREFIX + "engine") is None


def test_migrate_host_bad_input_is_one_line_and_changes_nothing(
    v2_etcd: EtcdServer, etcd: EtcdServer, prefix: str, tmp_path: Path
) -> None:
    """Checked before anything changes (here, where no systemd runs, a step past the checks
    would fail at its first systemctl: each of these ends earlier)."""
    config = tmp_path / "agent.yaml"
    config.write_text(f"endpoint: {etcd.endpoint}\netcd_prefix: {prefix}\nmachine_id: {'a' * 32}\n")
    v2_put(v2_etcd, FLEET_PREFIX + "machines/m1/object", "{}")

    def migrate_host(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "fleetpy", "migrate-host", "--config", str(config), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    with EtcdServer() as v3_only:
        cases = {
            ("--from-fleet", "http://127.0.0.1:1"): "cannot reach fleet's etcd at ",
            ("--from-fleet", v3_only.endpoint): "does not serve the v2 API fleet used",
            ("--from-fleet", v2_etcd.endpoint, "--fleet-prefix", "/other/"): "no fleet data under",
            ("--from-fleet", "ftp://x"): "not an etcd URL",
            (
                "--from-fleet",
                v2_etcd.endpoint,
                "--config",
                "/nonexistent",
            ): "no fleetpy agent config",
        }
        for args, said in cases.items():
            result = migrate_host(*args)
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr.startswith("fleetpy: error: ") and said in result.stderr, args
            assert result.stderr.count("\n") == 1, result.stderr
    assert fleet_v2(v2_etcd.endpoint, FLEET_PREFIX + "engine") is None


def test_units_the_agent_refuses_keep_running_under_fleet(
    fleet_cluster: FleetClusterFactory, prefix: str, tmp_path: Path
) -> None:
    """Hosts whose agents require signed units refuse what `migrate` wrote (fleet had no
    signatures): the hand-over names them, and they go on running from fleet's files, same
    MainPID, rather than being stopped or lost."""
    env = cli_env("http://127.0.0.1:1", prefix) | {"FLEETPY_KEYS_DIR": str(tmp_path / "keys")}
    run_cli([sys.executable, "-m", "fleetpy", "keys", "generate", "ops"], env, tmp_path)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "ops.pub").write_bytes((tmp_path / "keys" / "ops.pub").read_bytes())
    cluster = fleet_cluster(
        extra_config={"trusted_keys": "/etc/fleetpy-trusted"},
        binds=[(trusted, "/etc/fleetpy-trusted")],
    )
    (host,) = cluster.hosts
    cluster.fleetctl("start", "--no-block", cluster.write("a.service", SLEEPER))
    cluster.wait_active(["a.service"])
    pid = host.main_pid("a.service")
    env = cli_env(cluster.etcd.endpoint, prefix)
    migrate = [sys.executable, "-m", "fleetpy", "migrate", "--from-fleet", cluster.etcd.endpoint]
    run_cli(migrate, env, tmp_path)
    cluster.enable_agent(host)

    result = migrate_host(cluster, host.machine_id)
    assert result.returncode == 0, result.stderr
    assert f"Machine {host.machine_id}: fleetd killed, 0 units taken over" in result.stdout
    assert "! a.service  refused by fleetpy's agent here: " in result.stdout
    assert "= a.service  left running under fleet's last state" in result.stdout
    time.sleep(3)
    assert host.main_pid("a.service") == pid
    link = host.run(["readlink", "/run/systemd/system/a.service"]).stdout.strip()
    assert link.startswith("/run/fleet/units/")
