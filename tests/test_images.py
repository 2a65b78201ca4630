"""The host image's recipes: packer/ and vagrant/ can't run here (no packer, no
VMs), so their structure is checked, and every argument they pass to
fleetpy/share/provision.sh, the script that builds the hosts the tests boot, is one the
script accepts and turns into a config the agent reads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from fleetpy import config

ROOT = Path(__file__).resolve().parent.parent
PACKER = ROOT / "packer"
VAGRANT = ROOT / "vagrant"
SHARE = ROOT / "fleetpy" / "share"  # shipped in the package: one copy of each file
PROVISION = SHARE / "provision.sh"


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals with their quotes."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [_unquote(item) for item in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    return value


def _blocks(items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, body) for item in _unquote(items) for name, body in item.items()]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    with open(PACKER / "fleetpy-host.pkr.hcl") as f:
        return dict(hcl2.load(f))


def _provision_options() -> set[str]:
    """The options provision.sh's argument loop accepts."""
    return set(re.findall(r"^\s+(--[a-z-]+)(?:\|--[a-z-]+)?\)", PROVISION.read_text(), re.M))


def _path_root(text: str) -> list[Path]:
    return [PACKER / rel for rel in re.findall(r"\$\{path\.root\}/([^\s\"']+)", text)]


def test_packer_template_builds_on_bookworm_with_qemu(template: dict[str, Any]) -> None:
    plugins = _unquote(template["packer"])[0]["required_plugins"][0]
    assert plugins["qemu"]["source"] == "github.com/hashicorp/qemu"
    variables = dict(_blocks(template["variable"]))
    assert "bookworm" in variables["base_image_url"]["default"]
    assert variables["etcd"]["default"] is False
    ((source_type, sources),) = _blocks(template["source"])
    assert source_type == "qemu"
    bookworm = sources["bookworm"]
    assert bookworm["iso_url"] == "${var.base_image_url}"
    assert bookworm["cd_label"] == "cidata"  # cloud-init's NoCloud seed


def test_packer_template_references_only_files_that_exist(template: dict[str, Any]) -> None:
    text = (PACKER / "fleetpy-host.pkr.hcl").read_text()
    referenced = _path_root(text)
    assert len(referenced) >= 4
    for path in referenced:
        assert path.resolve().exists(), f"{path} referenced by the template does not exist"
    user_data = (PACKER / "cloud-init" / "user-data").read_text()
    assert user_data.startswith("#cloud-config")


def test_packer_provisions_with_the_hosts_script(template: dict[str, Any]) -> None:
    (build,) = _unquote(template["build"])
    assert build["sources"] == ["source.qemu.bookworm"]
    steps = [(kind, body) for item in build["provisioner"] for kind, body in item.items()]
    kinds = [kind for kind, _ in steps]
    assert kinds.index("shell-local") < kinds.index("file")  # wheels exist before upload
    uploads = [body for kind, body in steps if kind == "file" and "sources" in body]
    (upload,) = uploads
    assert "${path.root}/../fleetpy/share/provision.sh" in upload["sources"]
    assert "${path.root}/../fleetpy/share/fleetpy-agent.service" in upload["sources"]
    stage = _unquote(template["locals"])[0]["stage"]
    assert upload["destination"] == "${local.stage}/"
    wheel_upload = next(body for kind, body in steps if kind == "file" and "source" in body)
    assert wheel_upload["destination"] == "${local.stage}/wheels"

    (run,) = [body for kind, body in steps if kind == "shell" and "execute_command" in body]
    assert "sudo" in run["execute_command"]
    assert run["inline"][0] == '${local.stage}/provision.sh ${join(" ", local.provision_args)}'
    args_expr = _unquote(template["locals"])[0]["provision_args"]
    flags = re.findall(r'"(--[a-z-]+)"', args_expr)
    assert flags == ["--wheels", "--unit", "--docker", "--etcd"]
    assert set(flags) <= _provision_options()
    # The paths it passes are where the file provisioners put things.
    assert '"${local.stage}/wheels"' in args_expr
    assert '"${local.stage}/fleetpy-agent.service"' in args_expr
    assert 'var.etcd ? ["--etcd"] : []' in args_expr
    assert stage.startswith("/tmp/")
    # shell-local makes the wheels with the repository's script.
    local = next(body for kind, body in steps if kind == "shell-local")
    assert local["inline"] == ["${path.root}/wheels.sh ${var.wheels_dir}"]


def _vagrant_events() -> list[dict[str, Any]]:
    ruby = shutil.which("ruby")
    assert ruby, "ruby is needed (scripts/setup.sh installs Debian's ruby)"
    check = subprocess.run([ruby, "-c", str(VAGRANT / "Vagrantfile")], capture_output=True)
    assert check.returncode == 0, check.stderr
    out = subprocess.run(
        [
            ruby,
            str(Path(__file__).parent / "images" / "vagrant_record.rb"),
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


def test_host_files_are_one_copy_in_the_package_and_found_where_operators_look() -> None:
    # The package ships them (a pip install builds hosts); agent/ and packer/ keep the
    # paths operators and the layout know, as links to that one copy.
    root = Path(__file__).resolve().parents[1]
    for link, target in [
        ("agent/fleetpy-agent.service", "fleetpy/share/fleetpy-agent.service"),
        ("agent/agent.yaml.example", "fleetpy/share/agent.yaml.example"),
        ("packer/provision.sh", "fleetpy/share/provision.sh"),
    ]:
        assert (root / link).is_symlink(), link
        assert (root / link).resolve() == (root / target).resolve(), link
