"""fleetpy.systemd imported with stand-ins for dbus-python and PyGObject (which exist
only on hosts), for pure tests of its plain-Python parts: file handling, and the order
and number of the calls it sends (a recording bus stands in for the connection)."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@contextlib.contextmanager
def stubbed_systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
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


@dataclass
class SentCall:
    method: str
    args: tuple[Any, ...]
    path: str
    answer: Callable[..., None]
    refuse: Callable[[Any], None]


class RecordingBus:
    """Records every asynchronous call and answers none until the test does; a blocking
    call (one round trip each) is recorded as such."""

    def __init__(self) -> None:
        self.sent: list[SentCall] = []
        self.blocking: list[str] = []

    def call_async(
        self,
        bus_name: str,
        path: str,
        interface: str,
        method: str,
        signature: str,
        args: tuple[Any, ...],
        reply_handler: Callable[..., None],
        error_handler: Callable[[Any], None],
    ) -> None:
        self.sent.append(SentCall(method, tuple(args), path, reply_handler, error_handler))

    def call_blocking(self, *args: Any) -> Any:
        self.blocking.append(str(args[3]))
        raise AssertionError(f"a blocking call: {args[3]}")
