"""The host image's recipes: packer/ and vagrant/ can't run here (no packer, no
VMs), so their structure is checked, and every argument they pass to
fleetpy/share/provision.sh, the script that builds the hosts the tests boot, is one the
script accepts and turns into a config the agent reads.

Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/integration/test_images.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from support.paths import ROOT

PACKER = ROOT / "packer"


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


def test_host_files_are_one_copy_in_the_package_and_found_where_operators_look() -> None:
    # The package ships them (a pip install builds hosts); agent/ and packer/ keep the
    # paths operators and the layout know, as links to that one copy.
    root = ROOT
    for link, target in [
        ("agent/fleetpy-agent.service", "fleetpy/share/fleetpy-agent.service"),
        ("agent/agent.yaml.example", "fleetpy/share/agent.yaml.example"),
        ("packer/provision.sh", "fleetpy/share/provision.sh"),
    ]:
        assert (root / link).is_symlink(), link
        assert (root / link).resolve() == (root / target).resolve(), link
