"""Dependencies across machines on real hosts: web.service on one host requires
(BindsTo=) db.service on the other; it is started only once db is active there, stopped
when db is stopped, started again when db is back. The hosts never talk to each other:
the engine reads db's state from etcd."""

from __future__ import annotations

import json

import pytest

from support.hosts_fixtures import SharedHosts
from support.waiting import until

pytestmark = pytest.mark.hosts

SHARED_HOSTS: tuple[dict[str, str], ...] = ({"role": "db"}, {"role": "web"})

# db takes 3 s to become active (activating meanwhile): web must wait that long.
DB = (
    "[Service]\nExecStartPre=/bin/sleep 3\nExecStart=/bin/sleep 100000\n\n"
    "[X-Fleet]\nMachineMetadata=role=db\n"
)
WEB = (
    "[Service]\nExecStart=/bin/sleep 100000\n\n"
    "[X-Fleet]\nMachineMetadata=role=web\nRequires=db.service\nBindsTo=db.service\n"
)


def reason(shared: SharedHosts, name: str) -> str | None:
    rows = json.loads(shared.fleet("list-unit-files", "-o", "json").stdout)
    found: str | None = next(r for r in rows if r["unit"] == name).get("reason")
    return found


def since(shared: SharedHosts, machine: str, name: str) -> int:
    """When the unit last became active (CLOCK_MONOTONIC: the hosts share the kernel)."""
    return int(shared.host(machine).show(name, "ActiveEnterTimestampMonotonic"))


def test_web_waits_for_db_on_the_other_host_and_follows_it(on_shared_hosts: SharedHosts) -> None:
    shared = on_shared_hosts
    by_role = {m.metadata["role"]: m.id for m in shared.registry.list_machines().values()}
    db_host, web_host = shared.host(by_role["db"]), shared.host(by_role["web"])
    web = shared.fleet.write("web.service", WEB)
    db = shared.fleet.write("db.service", DB)
    result = shared.fleet("start", "--no-block", web)
    assert "no unit db.service is submitted" in result.stderr
    until(
        lambda: (reason(shared, "web.service") or "").startswith(
            "waiting for db.service to be active: no such unit is submitted"
        ),
        what="web waiting for db",
    )
    assert not web_host.is_active("web.service")
    shared.fleet("start", "--no-block", db)
    until(lambda: web_host.is_active("web.service"), timeout=60, what="web active")
    assert db_host.is_active("db.service")
    assert since(shared, web_host.machine_id, "web.service") > since(
        shared, db_host.machine_id, "db.service"
    )
    until(lambda: reason(shared, "web.service") is None, what="web's reason cleared")

    shared.fleet("stop", "--no-block", "db.service")
    until(lambda: not web_host.is_active("web.service"), timeout=60, what="web stopped after db")
    assert reason(shared, "web.service") == (
        "waiting for db.service to be active: it is not started (desired state loaded)"
    )
    view = shared.registry.read_view(with_states=False)
    assert view.schedule["web.service"][0] == web_host.machine_id  # stopped where it is

    shared.fleet("start", "--no-block", "db.service")
    until(lambda: web_host.is_active("web.service"), timeout=60, what="web active again")
    assert since(shared, web_host.machine_id, "web.service") > since(
        shared, db_host.machine_id, "db.service"
    )
