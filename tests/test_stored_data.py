"""What is read from etcd is never turned into code or a path outside where it belongs
(issue [7] item 5; tests/test_architecture.py scans the source for eval, pickle & co).

Unit names. Anyone who can write to etcd can put a key such as
`P/schedule/<machine>/../../etc/systemd/system/x.service`. The registry skips keys whose
unit name is invalid; the agent checks every name again before acting on it, and the
systemd unit manager builds each file name with unit_file_path(), which refuses anything
that is not a valid unit name and never returns a path outside its directory. Each layer
is tested here on its own: the agent with a registry that hands it bad names anyway, the
unit manager's file handling with bad names given directly, and the whole chain with raw
keys written into a real etcd, and on a real host (systemd-nspawn).

Machine addresses. `status`, `journal` and `ssh` give a machine's address from etcd to
ssh, and ssh gives a --tunnel's ProxyCommand, with the address in it, to a shell: only
IP addresses are accepted, by the registry and again by fleetpy.remote.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import sys
import threading
import types
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetpy.agent import Agent, AgentConfig
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import AGENT_UNIT, Host
from fleetpy.errors import UnitNameError
from fleetpy.registry import (
    ClusterView,
    MachineRecord,
    MalformedRecord,
    Registry,
    RegistryConfig,
    ScheduleEntry,
    WatchBatch,
)
from fleetpy.remote import RemoteError, machine_target
from fleetpy.states import DesiredState
from fleetpy.unitmanager import (
    Action,
    SimulatedUnitManager,
    WriteUnit,
    check_unit_file_name,
    unit_file_path,
)

from support.waiting import until

TEXT = "[Service]\nExecStart=/bin/sleep 1000\n"
DIGEST = hashlib.sha256(TEXT.encode()).hexdigest()

# Names an attacker with write access to etcd could put in a key.
HOSTILE_NAMES = [
    "../../etc/systemd/system/x.service",
    "../x.service",
    "a/b.service",
    "/etc/systemd/system/x.service",
    "./x.service",
    "..",
    ".",
    "",
    "x\x00.service",
    "x\n.service",
    "x.service\n",
    "x\x1b[2J.service",
    "a" * 300 + ".service",
    "x.service/..",
    "x.sh",
    "..service\\..",
]


# --------------------------------------------------------------------------- unit_file_path


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_unit_file_path_refuses_what_is_not_a_unit_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnitNameError):
        unit_file_path(tmp_path, name)
    with pytest.raises(UnitNameError):
        check_unit_file_name(name)


@pytest.mark.parametrize(
    "name", ["web.service", "web@1.service", "web@.service", "a:b-c_d.e.timer", "...service"]
)
def test_unit_file_path_of_a_unit_name_is_a_file_in_the_directory(
    tmp_path: Path, name: str
) -> None:
    path = unit_file_path(tmp_path, name)
    assert path.parent == tmp_path and path.name == name
    assert path.resolve().parent == tmp_path.resolve()


# --------------------------------------------------------------------------- the agent


class RecordingManager(SimulatedUnitManager):
    """A simulated host that remembers every name it was asked to act on."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def execute(self, actions: Sequence[Action]) -> None:
        self.names.extend(action.name for action in actions)
        super().execute(actions)


class HandsOutAnything:
    """A registry that returns schedule entries under any name, as a registry with other
    checks (or none) could: the agent must not rely on the registry's."""

    def __init__(self, placed: dict[str, ScheduleEntry], globals_: dict[str, ScheduleEntry]):
        self.placed, self.globals = placed, globals_
        self.reported: list[str] = []

    def grant_lease(self, ttl: int) -> int:
        return 1

    def register_machine(self, record: Any, lease: int) -> None:
        pass

    def refresh_lease(self, lease: int) -> int:
        return 10

    def revoke_lease(self, lease: int) -> None:
        pass

    def read_machine_schedule(
        self, machine: str
    ) -> tuple[int, dict[str, ScheduleEntry], dict[str, ScheduleEntry]]:
        return 1, dict(self.placed), dict(self.globals)

    def watch_schedule(
        self, callback: Callable[[WatchBatch[Any]], None], start: int, machine: str
    ) -> Callable[[], None]:
        return lambda: None

    def watch_globals(
        self, callback: Callable[[WatchBatch[Any]], None], start: int
    ) -> Callable[[], None]:
        return lambda: None

    def agent_overlay(self, machine: str) -> tuple[int, dict[str, str | None]]:
        return 1, {}

    def watch_metadata(
        self, callback: Callable[[WatchBatch[Any]], None], start: int, machine: str
    ) -> Callable[[], None]:
        return lambda: None

    def report_states(self, states: Sequence[Any], lease: int, removed: Sequence[Any]) -> None:
        self.reported.extend(state.name for state in states)


def entry(name: str, text: str = TEXT, launched: bool = True) -> ScheduleEntry:
    desired = DesiredState.LAUNCHED if launched else DesiredState.LOADED
    return ScheduleEntry(name, hashlib.sha256(text.encode()).hexdigest(), desired, text)


def test_agent_never_hands_a_bad_name_to_its_unit_manager(
    capsys: pytest.CaptureFixture[str],
) -> None:
    placed = {name: entry(name) for name in HOSTILE_NAMES}
    placed["good.service"] = entry("good.service")
    # An entry whose record names another unit than its key: refused too.
    placed["other.service"] = entry("../../etc/systemd/system/x.service")
    global_text = TEXT + "\n[X-Fleet]\nGlobal=true\n"
    globals_ = {name: entry(name, global_text) for name in HOSTILE_NAMES[:4]}
    globals_["g.service"] = entry("g.service", global_text)
    registry = HandsOutAnything(placed, globals_)
    manager = RecordingManager()
    agent = Agent(registry, manager, AgentConfig("m1", ttl=10)).start()  # type: ignore[arg-type]
    try:
        assert agent.ready.wait(10)
        until(lambda: {"good.service", "g.service"} <= set(registry.reported), 10, "the good units")
        assert set(manager.names) == {"good.service", "g.service"}
        assert set(manager.observe()) == {"good.service", "g.service"}
        assert set(registry.reported) == {"good.service", "g.service"}
        agent._request_resync()  # a second read: each bad name is still warned about once
        until(lambda: agent.stats.resyncs >= 2, 10, "a resync")
    finally:
        agent.stop()
    refused = [
        line for line in capsys.readouterr().err.splitlines() if "event=unit_name_refused" in line
    ]
    assert len(refused) == len(HOSTILE_NAMES) + 1, refused
    assert any("names another unit" in line for line in refused)
    assert not any("\x1b" in line or "\x00" in line for line in refused)


# --------------------------------------------------------------------------- systemd's files


@pytest.fixture
def systemd_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """fleetpy.systemd with stand-ins for dbus-python and PyGObject (only on hosts):
    its file handling is plain Python and is what is tested here."""
    dbus = types.ModuleType("dbus")
    dbus.DBusException = type("DBusException", (Exception,), {})  # type: ignore[attr-defined]
    mainloop = types.ModuleType("dbus.mainloop")
    glib = types.ModuleType("dbus.mainloop.glib")
    glib.DBusGMainLoop = lambda **kw: None  # type: ignore[attr-defined]
    gi = types.ModuleType("gi")
    repository = types.ModuleType("gi.repository")
    repository.GLib = types.SimpleNamespace()  # type: ignore[attr-defined]
    for name, module in {
        "dbus": dbus,
        "dbus.mainloop": mainloop,
        "dbus.mainloop.glib": glib,
        "gi": gi,
        "gi.repository": repository,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "fleetpy.systemd", raising=False)
    try:
        yield importlib.import_module("fleetpy.systemd")
    finally:
        sys.modules.pop("fleetpy.systemd", None)


class FakeSystemd:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def Reload(self) -> None:  # systemd's D-Bus method names
        self.calls.append(("Reload",))

    def ResetFailedUnit(self, name: str) -> None:
        self.calls.append(("ResetFailedUnit", name))


def unit_manager(module: types.ModuleType, root: Path) -> Any:
    """A SystemdUnitManager without its D-Bus thread: only the file handling runs."""
    manager = object.__new__(module.SystemdUnitManager)
    manager.unit_dir = root / "run" / "fleetpy" / "units"
    manager.link_dir = root / "run" / "systemd" / "system"
    manager.unit_dir.mkdir(parents=True)
    manager.link_dir.mkdir(parents=True)
    manager._lock = threading.Condition()
    manager._units = {}
    manager._paths = {}
    manager._matches = {}
    manager._starts = {}
    manager._manager = FakeSystemd()
    manager._watched = []
    manager._watch_unit = manager._watched.append
    manager._refresh = lambda name: None
    manager._on_dbus_call = None  # no metrics
    manager._on_job_failed = None
    return manager


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def test_systemd_manager_writes_and_removes_only_inside_its_directories(
    systemd_module: types.ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "host"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    victim = root / "etc" / "systemd" / "system" / "victim.service"
    victim.write_text("mine")
    manager = unit_manager(systemd_module, root)
    writes = [WriteUnit(name, DIGEST, TEXT) for name in HOSTILE_NAMES]
    writes.append(WriteUnit("good.service", DIGEST, TEXT))
    manager._files([], writes)
    assert files_under(root) == {
        "etc/systemd/system/victim.service",
        "run/fleetpy/units/good.service",
        "run/systemd/system/good.service",
    }
    assert manager._watched == ["good.service"]
    # Removals: "../../../etc/systemd/system/victim.service" from either directory
    # would reach the victim; only the good unit goes.
    climbing = "../../../etc/systemd/system/victim.service"
    manager._files([climbing, "../victim.service", "good.service"], [])
    assert victim.read_text() == "mine"
    assert files_under(root) == {"etc/systemd/system/victim.service"}
    refused = [line for line in capsys.readouterr().err.splitlines() if "unit_name_refused" in line]
    assert len(refused) == len(HOSTILE_NAMES) + 2


def test_systemd_manager_adopts_only_unit_files(
    systemd_module: types.ModuleType, tmp_path: Path
) -> None:
    manager = unit_manager(systemd_module, tmp_path)
    for name in ("good.service", "README", "x.sh", ".good.service.tmp"):
        (manager.unit_dir / name).write_text(TEXT)
    manager._adopt()
    assert set(manager._units) == {"good.service"}


# --------------------------------------------------------------------------- raw etcd keys


def put_raw(endpoint: str, key: bytes, value: bytes) -> None:
    """Write any bytes as a key through etcd's JSON gateway (etcdctl cannot pass a NUL)."""
    body = json.dumps(
        {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
    ).encode()
    request = urllib.request.Request(f"{endpoint}/v3/kv/put", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def schedule_value(text: str = TEXT) -> bytes:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return json.dumps({"hash": digest, "desired": "launched", "text": text}).encode()


def test_raw_keys_with_hostile_names_never_reach_the_unit_manager(
    etcd: EtcdServer, registry_config: RegistryConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = registry_config.prefix.encode()
    bad = [name.encode() for name in HOSTILE_NAMES if name] + [b"\xff\xfe.service"]

    def put_all(names: list[bytes], suffix: bytes) -> None:
        for name in names:
            put_raw(etcd.endpoint, prefix + b"/schedule/m1/" + name + suffix, schedule_value())
            put_raw(etcd.endpoint, prefix + b"/global/" + name + suffix, schedule_value())

    put_all(bad, b"")  # before the agent's first read
    put_raw(etcd.endpoint, prefix + b"/schedule/m1/good.service", schedule_value())
    registry = Registry(registry_config)
    manager = RecordingManager()
    agent = Agent(registry, manager, AgentConfig("m1", ttl=5)).start()
    try:
        assert agent.ready.wait(10)
        until(lambda: "good.service" in manager.observe(), 10, "the good unit")
        put_all(bad, b"-late")  # while it watches
        put_raw(etcd.endpoint, prefix + b"/schedule/m1/late.service", schedule_value())
        until(lambda: "late.service" in manager.observe(), 10, "the late unit")
        assert set(manager.names) == {"good.service", "late.service"}
        assert set(manager.observe()) == {"good.service", "late.service"}
        until(lambda: len(registry.list_states()) == 2, 10, "both units reported")
        assert set(registry.list_states()) == {"good.service", "late.service"}
    finally:
        agent.stop()
        registry.close()
    skipped = [line for line in capsys.readouterr().err.splitlines() if "record_skipped" in line]
    assert skipped and not any("\x1b" in line or "\x00" in line for line in skipped)


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


# --------------------------------------------------------------------------- machine addresses

SHELL_ADDRESSES = [
    "x$(touch /tmp/pwned)",
    "x`id`",
    "10.0.0.1;id",
    "-oProxyCommand=id",
    "host name",
    "10.0.0.1\nid",
    "localhost",
]


@pytest.mark.parametrize("address", SHELL_ADDRESSES, ids=repr)
def test_a_machine_address_that_is_not_an_ip_is_not_a_record(address: str) -> None:
    with pytest.raises(MalformedRecord, match="field 'ip' is not an IP address"):
        MachineRecord.from_json("m1", json.dumps({"ip": address}).encode())


@pytest.mark.parametrize("address", ["10.0.0.1", "::1", "fe80::1"])
def test_ip_addresses_are_records(address: str) -> None:
    assert MachineRecord.from_json("m1", json.dumps({"ip": address}).encode()).ip == address


class ViewOf:
    """A registry whose view holds a machine with any address (no registry checks)."""

    def __init__(self, address: str) -> None:
        self.view = ClusterView(1, {}, {"m1": MachineRecord("m1", address)}, {}, {}, {})

    def read_view(self, with_text: bool = True) -> ClusterView:
        return self.view


@pytest.mark.parametrize("address", SHELL_ADDRESSES, ids=repr)
def test_remote_refuses_an_address_that_is_not_an_ip(address: str) -> None:
    with pytest.raises(RemoteError, match="not an IP address"):
        machine_target(ViewOf(address), "m1")  # type: ignore[arg-type]
    assert machine_target(ViewOf("10.0.0.1"), "m1").address == "10.0.0.1"  # type: ignore[arg-type]
