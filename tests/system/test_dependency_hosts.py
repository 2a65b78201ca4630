"""Dependencies across machines on real hosts: web.service on one host requires
(BindsTo=) db.service on the other; it is started only once db is active there, stopped
when db is stopped, started again when db is back. The hosts never talk to each other:
the engine reads db's state from etcd."""

from __future__ import annotations

import json

import pytest

from support.hosts_fixtures import SharedHosts
from support.paths import UNITS
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


def test_the_example_stack_applies_the_database_then_its_web_tier(
    on_shared_hosts: SharedHosts,
) -> None:
    """units/stack as a user runs it: `plan`, then `apply` of the directory in the repo.
    The database's container reserves 1 GiB and half a CPU where it is placed; the web
    tier is started only once the database is active (healthy), and apply waits for both."""
    shared = on_shared_hosts
    stack = str(UNITS / "stack")
    planned = shared.fleet("plan", stack, check=False)
    assert planned.returncode == 2, planned.stderr
    assert "db.service" in planned.stdout and "web-db.service" in planned.stdout
    shared.fleet("apply", stack, "--min-ready", "1")
    view = shared.registry.read_view(with_states=False)
    db_machine, web_machine = view.schedule["db.service"][0], view.schedule["web-db.service"][0]
    db_host, web_host = shared.host(db_machine), shared.host(web_machine)
    assert db_host.is_active("db.service") and web_host.is_active("web-db.service")
    assert since(shared, web_machine, "web-db.service") > since(shared, db_machine, "db.service")
    table = shared.fleet("list-machines", "--fields", "machine,reserved", "-l", "--no-legend")
    reserved = dict(line.split(None, 1) for line in table.stdout.splitlines())
    assert reserved[db_machine].startswith("1 GiB, 0.5 CPU"), reserved
    assert shared.fleet("plan", stack, check=False).returncode == 0  # nothing left to do
