"""A batch of units on a real host (systemd-nspawn, real systemd over D-Bus): what the agent
asks of systemd for it, counted (never timed: the figures are bench/bench_hosts.py's). A
batch of new units costs no daemon-reload and one call per unit and action, all sent before
any answer is waited for; a batch of changed units one daemon-reload; failures still show."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetpy.cluster.etcd import free_port
from fleetpy.cluster.nspawn import AGENT_UNIT, Host
from fleetpy.config import EngineSettings
from fleetpy.engine import Engine
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import parse_unit

from support.hosts_fixtures import HostFactory
from support.waiting import until

pytestmark = pytest.mark.hosts

SLEEPER = "[Service]\nExecStart=/bin/sleep 100000\n"
FAILING = "[Service]\nExecStart=/bin/false\n"
REFUSED = "[Service]\nEnvironment=A=1\n"  # no ExecStart=: systemd refuses to start it


def launched(name: str, text: str, replace: bool = False) -> UnitChange:
    unit = parse_unit(text)
    return UnitChange(name, DesiredState.LAUNCHED, unit.serialize(), unit.hash, replace=replace)


def dbus_calls(port: int) -> dict[str, float]:
    """The agent's D-Bus calls to systemd so far, per method (its metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["method"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fleetpy_agent_dbus_call_seconds_count"
    }


def agent_events(host: Host, event: str) -> list[dict[str, str]]:
    """The agent's log lines of EVENT (key=value fields), oldest first."""
    out = host.run(
        ["journalctl", "--no-pager", "--quiet", "-o", "cat", "-u", AGENT_UNIT, "-n", "5000"]
    ).stdout
    return [
        dict(field.split("=", 1) for field in line.split() if "=" in field)
        for line in out.splitlines()
        if f"event={event} " in line
    ]


@pytest.fixture
def one_host(
    hosts: HostFactory, registry_config: RegistryConfig
) -> Iterator[tuple[Host, int, Registry]]:
    """A host whose agent serves metrics on a port of its own, an engine placing on it,
    and a registry: (host, metrics port, registry)."""
    port = free_port()
    (host,) = hosts(1, extra_config={"metrics_listen": f"127.0.0.1:{port}"})
    registry = Registry(registry_config)
    engine = Engine(Registry(registry_config), EngineSettings(lease_ttl=3)).start()
    try:
        until(lambda: len(registry.list_machines()) == 1, 60, "the host's machine registered")
        yield host, port, registry
    finally:
        engine.stop()
        engine.registry.close()
        registry.close()


def states(registry: Registry, names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """unit -> (ACTIVE, content hash) as reported, for the reported ones of NAMES."""
    found = registry.list_states()
    return {
        name: (state.active, state.hash) for name in names for state in found.get(name, {}).values()
    }


def test_a_batch_of_new_units_costs_no_reload_and_one_call_per_unit(
    one_host: tuple[Host, int, Registry],
) -> None:
    host, port, registry = one_host
    # 62 units: more calls than systemd's bus lets one connection have pending (128, less
    # the agent's headroom) once the rewrites below count their stops: sent as answers come.
    names = [f"batch{i:02d}.service" for i in range(60)]
    before = dbus_calls(port)
    registry.change_units(
        [launched(name, SLEEPER) for name in names]
        + [launched("broken.service", FAILING), launched("refused.service", REFUSED)]
    )

    def settled() -> bool:
        found = registry.list_states()
        ran = {s.active for name in names for s in found.get(name, {}).values()}
        broken = [s.active for s in found.get("broken.service", {}).values()]
        refused = [s.message for s in found.get("refused.service", {}).values()]
        return (
            ran == {"active"}
            and all(found.get(name) for name in names)
            and broken == ["failed"]
            and any(refused)
        )

    until(settled, 60, "60 units active, one failed, one refused with systemd's reason")
    after = dbus_calls(port)
    calls = {m: int(after.get(m, 0) - before.get(m, 0)) for m in after}
    # No daemon-reload for new files, no LoadUnit (paths come from names), no AddMatch
    # per unit (not a systemd call: one match for all units, added at start-up), no GetAll
    # of a unit its start's signals describe: one StartUnit per unit, and one GetAll for
    # the unit whose start systemd refused (its load state and reason).
    assert calls.get("Reload", 0) == 0, calls
    assert calls.get("LoadUnit", 0) == 0, calls
    assert calls.get("StartUnit", 0) == 62, calls
    assert calls.get("GetAll", 0) == 1, calls
    executed = agent_events(host, "actions_executed")
    assert sum(int(e["starts"]) for e in executed) == 62, executed
    assert all(e["reloads"] == "0" for e in executed), executed
    # A round's calls are all sent ("issued") without waiting for an answer; systemd's
    # answers and the jobs' ends come after, per batch of starts.
    first_issued = min(float(e["issued"]) for e in executed)
    done = agent_events(host, "start_jobs_done")
    assert sum(int(e["units"]) for e in done) == 62, done
    assert all(first_issued <= float(e["answered"]) <= float(e["at"]) for e in done), done
    # A simple service's start job is done once its process runs; /bin/false then
    # exits and the unit fails: reported as such, with systemd's sub-state.
    (broken,) = registry.list_states()["broken.service"].values()
    assert (broken.active, broken.sub, broken.job) == ("failed", "failed", "done")
    (refused,) = registry.list_states()["refused.service"].values()
    assert (refused.load, refused.job) == ("bad-setting", "refused")
    assert "bad unit file setting" in refused.message

    # New contents for ten running units: each stopped, rewritten, started again, with
    # one daemon-reload per batch; the other fifty are not touched.
    pids = {name: host.main_pid(name) for name in names[10:]}
    changed = SLEEPER.replace("100000", "100001")
    new_hash = parse_unit(changed).hash
    registry.change_units([launched(name, changed, replace=True) for name in names[:10]])
    until(
        lambda: all(states(registry, [n]).get(n) == ("active", new_hash) for n in names[:10]),
        60,
        "the ten changed units active with their new contents",
    )
    rewritten = agent_events(host, "actions_executed")[len(executed) :]
    assert sum(int(e["writes"]) for e in rewritten) == 10, rewritten
    assert sum(int(e["stops"]) for e in rewritten) == 10, rewritten
    assert all(e["reloads"] == "1" for e in rewritten if int(e["writes"])), rewritten
    reloads = dbus_calls(port).get("Reload", 0) - after.get("Reload", 0)
    assert reloads == len([e for e in rewritten if int(e["writes"])]), rewritten
    assert {name: host.main_pid(name) for name in names[10:]} == pids
    assert "100001" in host.show(names[0], "ExecStart")

    # Destroyed: every unit stopped, its file gone, its state gone.
    registry.destroy_units([*names, "broken.service", "refused.service"])
    until(lambda: not registry.list_states(), 60, "every state gone")
    assert host.run(["ls", "-A", "/run/fleetpy/units"], check=False).stdout.split() == []


def test_unit_object_paths_are_the_ones_systemd_gives(hosts: HostFactory) -> None:
    """The agent computes a unit's D-Bus object path from its name (no LoadUnit): the
    same as systemd's for names with every kind of character a unit name may hold."""
    (host,) = hosts(1)
    names = ["web.service", "a-b@1.service", "0day.service", "x_y.z:2.socket", "a\\x2db.service"]
    script = (
        "import sys, dbus\n"
        "from fleetpy.systemd import unit_object_path\n"
        "bus = dbus.SystemBus()\n"
        "manager = dbus.Interface(bus.get_object('org.freedesktop.systemd1',"
        " '/org/freedesktop/systemd1'), 'org.freedesktop.systemd1.Manager')\n"
        "for name in sys.argv[1:]:\n"
        "    print(name, str(manager.LoadUnit(name)), unit_object_path(name))\n"
    )
    out = host.run(["/opt/fleetpy/venv/bin/python", "-c", script, *names]).stdout
    rows = [line.split() for line in out.splitlines()]
    assert [row[0] for row in rows] == names
    for name, systemds, ours in rows:
        assert ours == systemds, name
