"""test_stored_data.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts
or tools of the machine (README "Tests"); what the module covers as a whole:
tests/pure/test_stored_data.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import AGENT_UNIT, Host

from support.stored_data import put_raw, schedule_value
from support.waiting import until

# --------------------------------------------------------------------------- a real host

# From /run/fleetpy/units, the agent's unit directory, these reach /run/etc/... and /etc/...
ESCAPES = {
    "../../etc/systemd/system/x.service": "/run/etc/systemd/system/x.service",
    "../../../etc/systemd/system/x.service": "/etc/systemd/system/x.service",
    "../../systemd/system/x.service": "/run/systemd/system/x.service",
    "../x.service": "/run/fleetpy/x.service",
}


@pytest.mark.hosts
def test_real_host_writes_no_file_outside_its_unit_directory(
    hosts: Callable[..., list[Host]], etcd: EtcdServer, prefix: str
) -> None:
    (host,) = hosts(1)
    base = f"{prefix}/schedule/{host.machine_id}/".encode()
    for name in ESCAPES:
        put_raw(etcd.endpoint, base + name.encode(), schedule_value())
    put_raw(etcd.endpoint, base + b"good.service", schedule_value())
    until(lambda: host.is_active("good.service"), 60, "good.service active on the host")
    for name in ESCAPES:  # and once more while the agent watches
        put_raw(etcd.endpoint, base + name.encode() + b"-2", schedule_value())
    put_raw(etcd.endpoint, base + b"late.service", schedule_value())
    until(lambda: host.is_active("late.service"), 60, "late.service active on the host")
    units = host.run(["ls", "-A", "/run/fleetpy/units"]).stdout.split()
    assert sorted(units) == ["good.service", "late.service"]
    for path in ESCAPES.values():
        for candidate in (path, path + "-2"):
            assert host.run(["test", "-e", candidate], check=False).returncode == 1, candidate
    found = host.run(["find", "/etc", "/run", "/var", "-name", "x.service*"], check=False)
    assert found.stdout.split() == [], found.stdout
    assert "record_skipped" in host.journal(AGENT_UNIT, lines=2000)
