"""What is read from etcd is never turned into code or a path outside where it belongs
(issue [7] item 5; tests/pure/test_architecture.py scans the source for eval, pickle & co).

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
IP addresses are accepted, by the registry and again by fleetpy.ssh.


Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/integration/test_stored_data.py, tests/system/test_stored_data.py."""

from __future__ import annotations

import hashlib
import json
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings
from fleetpy.errors import UnitNameError
from fleetpy.model.codecs import MalformedRecord
from fleetpy.model.events import WatchBatch
from fleetpy.model.records import ClusterView, MachineRecord, MachineSchedule, ScheduleEntry
from fleetpy.ssh import RemoteError, machine_target
from fleetpy.states import DesiredState
from fleetpy.unitmanager import WriteUnit, check_unit_file_name, unit_file_path

from support.stored_data import HOSTILE_NAMES, TEXT, RecordingManager
from support.systemd_stub import stubbed_systemd
from support.waiting import until

DIGEST = hashlib.sha256(TEXT.encode()).hexdigest()


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


class HandsOutAnything:
    """A registry that returns schedule entries under any name, as a registry with other
    checks (or none) could: the agent must not rely on the registry's."""

    def __init__(self, placed: dict[str, ScheduleEntry], globals_: dict[str, ScheduleEntry]):
        self.placed, self.globals = placed, globals_
        self.reported: list[str] = []

    def grant_lease(self, ttl: int) -> int:
        return 1

    def register_machine(self, record: Any, lease: int, states: Sequence[Any] = ()) -> None:
        self.reported.extend(state.name for state in states)

    def refresh_lease(self, lease: int) -> int:
        return 10

    def revoke_lease(self, lease: int) -> None:
        pass

    def read_machine_schedule(self, machine: str) -> MachineSchedule:
        return MachineSchedule(1, dict(self.placed), dict(self.globals), frozenset())

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

    def agent_cordon(self, machine: str) -> None:
        return None  # a role from before cordons

    def watch_metadata(
        self, callback: Callable[[WatchBatch[Any]], None], start: int, machine: str
    ) -> Callable[[], None]:
        return lambda: None

    def watch_machines(
        self, callback: Callable[[WatchBatch[Any]], None], start: int, machine: str
    ) -> Callable[[], None]:
        return lambda: None

    def layout_present(self, revision: int = 0) -> bool:
        return True

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
    agent = Agent(registry, manager, AgentSettings(machine_id="m1", ttl=10)).start()  # type: ignore[arg-type]
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
    with stubbed_systemd(monkeypatch) as module:
        yield module


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
    manager._names = {}
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
