"""A backup restored into a wiped etcd on real hosts (issue [12] item 4): the units that
kept running through the loss are adopted where they run, the same processes (MainPID),
not restarted elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import Host
from fleetpy.registry import Registry
from fleetpy.registry.transport import prefix_range_end

from support.etcd_transport import transport
from support.fleet import Fleet, containers
from support.waiting import until

pytestmark = pytest.mark.hosts


def test_restore_after_a_wipe_keeps_the_same_processes_on_the_same_hosts(
    hosts: Callable[..., list[Host]],
    fleet: Fleet,
    registry: Registry,
    etcd: EtcdServer,
    prefix: str,
    tmp_path: Path,
) -> None:
    first, second = hosts(2, ttl=3)
    until(lambda: len(registry.list_machines()) == 2, what="2 machines")
    # Everything on the first host: placed anew, half of it would go to the second.
    second.systemctl("stop", "fleetpy-agent")
    until(lambda: set(registry.list_machines()) == {first.machine_id}, what="second gone")
    plain = [
        fleet.write(f"calm{i}.service", "[Service]\nExecStart=/bin/sleep 1000\n") for i in range(2)
    ]
    fleet("start", "--block-attempts", "60", *plain, fleet.docker_unit("box.service"))
    second.systemctl("start", "fleetpy-agent")
    until(lambda: len(registry.list_machines()) == 2, what="second back")
    names = ["box.service", "calm0.service", "calm1.service"]
    pids = {name: first.main_pid(name) for name in names}
    assert all(pid > 0 for pid in pids.values())
    backup = tmp_path / "cluster.backup"
    fleet("backup", str(backup))

    actions = first.journal("fleetpy-agent", lines=10000).count("event=unit_action")
    with transport(etcd.endpoint) as raw:
        raw.delete(prefix + "/", prefix_range_end(prefix + "/"))
    until(lambda: "fleetpy_data_missing" in first.journal("fleetpy-agent"), what="first holds")
    until(lambda: len(registry.list_machines()) == 2, what="both registered again")
    fleet("restore", str(backup))

    until(
        lambda: (
            [(u["unit"], u["machine"], u["active"]) for u in fleet.units()]
            == [(name, first.machine_id, "active") for name in names]
        ),
        timeout=60,
        what="every unit active on the first host",
    )
    # The first agent registered anew with what runs there before the restore: list-units
    # showed them so at once; the engine's adoption is its pass after the restore (later,
    # under load).
    until(
        lambda: "adopted=3" in (fleet.workdir / "engine.log").read_text(),
        what="the engine adopting the 3 units",
    )
    assert {name: first.main_pid(name) for name in names} == pids
    assert not any(second.is_active(name) for name in names)
    assert containers().count(f"fleetpy-box--{first.machine_id}") == 1
    # The first agent stopped, started or rewrote nothing since the wipe.
    assert first.journal("fleetpy-agent", lines=10000).count("event=unit_action") == actions
