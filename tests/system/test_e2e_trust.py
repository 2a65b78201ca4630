"""Keys rotated and revoked on a real host while its agent runs (issue [17] items 2, 5): a
systemd-nspawn machine whose agent trusts one root key (its trusted directory, bound in
from here) and follows the trust record the CLI writes with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpy.cluster.nspawn import Host
from fleetpy.registry import Registry

from support.fleet import Fleet
from support.waiting import until

pytestmark = pytest.mark.hosts
TRUSTED = "/etc/fleetpy-trusted"  # where the host sees the directory of root keys
SLEEPER = "[Service]\nExecStart=/bin/sleep 1000\n"


def test_a_key_rotated_then_revoked_while_its_unit_runs(
    hosts: Callable[..., list[Host]], fleet: Fleet, registry: Registry, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    fleet.env["FLEETPY_KEYS_DIR"] = str(keys)
    for name in ("root", "v1", "v2"):
        fleet("keys", "generate", name)
    (trusted / "root.pub").write_bytes((keys / "root.pub").read_bytes())
    (host,) = hosts(1, ttl=3, extra_config={"trusted_keys": TRUSTED}, binds=[(trusted, TRUSTED)])
    until(lambda: len(registry.list_machines()) == 1, what="machine")

    def start(unit: str, key: str) -> int:
        path = fleet.write(unit, SLEEPER.replace("1000", str(1000 + len(unit))))
        return fleet("start", "--sign", key, "--block-attempts", "60", path, check=False).returncode

    # A release key trusted through the record, with the agent running: its unit runs.
    fleet("keys", "trust", "v1", "--root", "root")
    assert start("web.service", "v1") == 0
    assert host.is_active("web.service")
    pid = host.main_pid("web.service")

    # Rotated: v2 trusted, v1 for an hour more. The agent follows without a restart.
    fleet("keys", "rotate", "v1", "v2", "--root", "root", "--grace", "1h")
    assert start("api.service", "v2") == 0
    assert host.is_active("api.service")

    # Revoked while web.service runs: it keeps running (on_revoke's default, keep), the
    # same process, and says why; what v1 signs from now on never reaches systemd.
    fleet("keys", "revoke", "v1", "--root", "root", "--reason", "test")

    def kept() -> bool:
        row = [u for u in fleet.units() if u["unit"] == "web.service"]
        return len(row) == 1 and "kept running" in (row[0].get("message") or "")

    until(kept, what="web.service kept, with the reason")
    assert host.is_active("web.service") and host.main_pid("web.service") == pid
    assert start("late.service", "v1") == 1
    assert host.systemctl("cat", "late.service", check=False).returncode != 0
    assert [(u["active"], u["sub"]) for u in fleet.units() if u["unit"] == "late.service"] == [
        ("rejected", "revoked-key")
    ]

    # The root key's file replaced by a symlink: refused with one line, the key read
    # before still counts (nothing that runs stops, nothing is read through the link).
    (trusted / "root.pub").unlink()
    (trusted / "root.pub").symlink_to(keys / "v1.pub")
    until(
        lambda: "is a symlink" in host.journal("fleetpy-agent"),
        what="the symlink refused in the agent's log",
    )
    assert start("rooted.service", "root") == 0
    (trusted / "root.pub").unlink()
    (trusted / "root.pub").write_bytes((keys / "root.pub").read_bytes())

    # An agent restart: the revocation holds (the record kept on the host), nothing stops.
    host.systemctl("restart", "fleetpy-agent")
    until(lambda: len(registry.list_machines()) == 1, what="machine back")
    until(kept, what="web.service still kept after the agent's restart")
    assert host.main_pid("web.service") == pid
    assert host.is_active("api.service") and host.is_active("rooted.service")
    assert host.systemctl("cat", "late.service", check=False).returncode != 0
