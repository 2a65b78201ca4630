"""Signed units on real hosts: systemd-nspawn machines whose agents trust one public key.
A unit signed with its private key runs under systemd; a unit written straight into
etcd (with etcdctl, as someone holding no key would) never reaches systemd."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import Host
from fleetpy.registry import Registry
from fleetpy.unitfile.unit import parse_unit

from support.fleet import Fleet
from support.waiting import until

pytestmark = pytest.mark.hosts
TRUSTED = "/etc/fleetpy-trusted"  # where hosts see the directory of trusted public keys
MARKER = "/run/pwned"  # what the forged unit would leave behind, had it run


def test_forged_unit_never_reaches_systemd_while_a_signed_one_runs(
    hosts: Callable[..., list[Host]],
    fleet: Fleet,
    registry: Registry,
    etcd: EtcdServer,
    prefix: str,
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    fleet.env["FLEETPY_KEYS_DIR"] = str(keys)
    fleet("keys", "generate", "ops")
    (trusted / "ops.pub").write_bytes((keys / "ops.pub").read_bytes())
    (host,) = hosts(1, ttl=3, extra_config={"trusted_keys": TRUSTED}, binds=[(trusted, TRUSTED)])
    until(lambda: len(registry.list_machines()) == 1, what="machine")

    # Signed: runs under systemd like any unit.
    fleet("start", "--sign", "ops", "--block-attempts", "60", fleet.docker_unit("signed.service"))
    assert host.is_active("signed.service")

    # Unsigned through the CLI: the start fails at once, naming the machine's reason.
    plain = fleet.write("plain.service", "[Service]\nExecStart=/bin/sleep 1000\n")
    result = fleet("start", "--block-attempts", "60", plain, check=False)
    assert result.returncode == 1 and "rejected on" in result.stderr
    assert "not signed" in result.stderr

    # Forged: content and unit record put straight into etcd, no key involved.
    text = parse_unit(f"[Service]\nExecStart=/bin/touch {MARKER}\n", "forged").serialize()
    digest = parse_unit(text, "forged").hash
    for key, value in (
        (f"content/{digest}", text),
        ("unit/forged.service", json.dumps({"hash": digest, "desired": "launched"})),
    ):
        subprocess.run(
            ["etcdctl", "--endpoints", etcd.endpoint, "put", f"{prefix}/{key}"],
            input=value.encode(),
            capture_output=True,
            check=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
    until(
        lambda: (
            [(u["active"], u["sub"]) for u in fleet.units() if u["unit"] == "forged.service"]
            == [("rejected", "unsigned")]
        ),
        what="forged unit reported rejected",
    )
    # Never handed to systemd: no unit file, systemd does not know it, it never ran.
    assert host.systemctl("cat", "forged.service", check=False).returncode != 0
    for path in ("/run/systemd/system/forged.service", "/run/fleetpy/units/forged.service"):
        assert host.run(["test", "-e", path], check=False).returncode != 0, path
    assert host.run(["test", "-e", MARKER], check=False).returncode != 0
    assert "forged.service" in host.journal("fleetpy-agent")  # the agent's one line
    assert host.is_active("signed.service")  # the signed unit keeps running
