"""test_images.py's tests that need the session's etcd or a short-lived helper process (README
"Tests"); what the module covers as a whole: tests/pure/test_images.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleetpy import config

from support.paths import IMAGES, ROOT

VAGRANT = ROOT / "vagrant"


SHARE = ROOT / "fleetpy" / "share"  # shipped in the package: one copy of each file


PROVISION = SHARE / "provision.sh"


def _provision_options() -> set[str]:
    """The options provision.sh's argument loop accepts."""
    return set(re.findall(r"^\s+(--[a-z-]+)(?:\|--[a-z-]+)?\)", PROVISION.read_text(), re.M))


def _vagrant_events() -> list[dict[str, Any]]:
    ruby = shutil.which("ruby")
    assert ruby, "ruby is needed (scripts/setup.sh installs Debian's ruby)"
    check = subprocess.run([ruby, "-c", str(VAGRANT / "Vagrantfile")], capture_output=True)
    assert check.returncode == 0, check.stderr
    out = subprocess.run(
        [
            ruby,
            str(IMAGES / "vagrant_record.rb"),
            str(VAGRANT / "Vagrantfile"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    events: list[dict[str, Any]] = json.loads(out.stdout)
    return events


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_vagrantfile_is_a_three_member_cluster_provisioned_by_the_hosts_script(
    tmp_path: Path,
) -> None:
    events = _vagrant_events()
    by_path: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_path.setdefault(event["path"], []).append(event)
    assert by_path["config.vm.box"][0]["set"].startswith("debian/bookworm")
    names = [event["args"][0] for event in by_path["config.vm.define"]]
    assert len(names) == 3 and len(set(names)) == 3

    ips, metadata, members = [], [], set()
    for name in names:
        prefix = f"config.vm.define({name}).vm"
        (network,) = by_path[f"{prefix}.network"]
        ip = network["kwargs"]["ip"]
        ips.append(ip)
        (provision,) = by_path[f"{prefix}.provision"]
        assert provision["args"] == ["shell"]
        script = (VAGRANT / provision["kwargs"]["path"]).resolve()
        assert script == PROVISION.resolve()
        args: list[str] = provision["kwargs"]["args"]
        flags = [arg for arg in args if arg.startswith("--")]
        assert set(flags) <= _provision_options(), flags
        assert {"--wheels", "--docker", "--etcd", "--endpoint"} <= set(flags)
        assert _option(args, "--ip") == ip
        assert _option(args, "--etcd-name") == name
        cluster = dict(m.split("=", 1) for m in _option(args, "--etcd-cluster").split(","))
        assert cluster[name] == f"http://{ip}:2380"
        members.add(_option(args, "--etcd-cluster"))
        metadata.append(_option(args, "--metadata"))
        # The wheels come from the trigger, the unit from the synced checkout.
        assert _option(args, "--unit").endswith("/fleetpy/share/fleetpy-agent.service")

        # What the script makes of this machine's arguments is a config the agent reads.
        root = tmp_path / name
        machine_args = [a for a in args if a not in ("--docker", "--etcd")]
        for flag in ("--wheels", "--unit"):
            i = machine_args.index(flag)
            del machine_args[i : i + 2]
        subprocess.run([str(PROVISION), *machine_args, "--root", str(root)], check=True)
        settings = config.resolve(
            {}, config.load_config_file(root / "etc/fleetpy/agent.yaml"), environ={}
        )
        assert settings.agent.public_ip == ip
        assert settings.agent.metadata == dict(
            pair.split("=") for pair in _option(args, "--metadata").split(",")
        )
        assert len(settings.etcd.endpoints) == 3
        etcd_env = (root / "etc/default/etcd").read_text()
        assert f"ETCD_NAME={name}\n" in etcd_env
        assert f"ETCD_LISTEN_PEER_URLS=http://{ip}:2380\n" in etcd_env

    assert len(set(ips)) == 3
    assert len(set(metadata)) == 3, "each machine has its own metadata"
    assert len(members) == 1, "all three join the same etcd cluster"
    (trigger,) = by_path["config.trigger.before(up).run"]
    assert trigger["set"]["inline"].split()[0].endswith("/packer/wheels.sh")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to do"),
        (["--ip", "10.0.0.300x", "--endpoint", "http://a:1"], "is not an IPv4 address"),
        (["--endpoint", "http://a:1"], "need --ip"),
        (["--ip", "10.0.0.1", "--endpoint", "a:1;rm -rf /"], "want URL"),
        (["--ip", "10.0.0.1", "--endpoint", "http://a:1", "--metadata", "a=b c"], "KEY=VALUE"),
        (
            ["--ip", "10.0.0.1", "--etcd-name", "x", "--etcd-cluster", "y=http://a:2380"],
            "no member x",
        ),
        (["--wheels", "/nonexistent"], "not a directory"),
        (["--bogus"], "unknown argument: --bogus"),
        (["--ip"], "--ip needs a value"),
    ],
)
def test_provision_refuses_bad_arguments_before_doing_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [str(PROVISION), "--root", str(tmp_path), *args], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
