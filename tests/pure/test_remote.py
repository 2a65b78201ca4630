"""The ssh command lines of status, journal and ssh (pure: no ssh is run here; the
local-cluster tests run them against real hosts).

Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/system/test_remote.py."""

from __future__ import annotations

import shlex

import pytest

from fleetpy.cluster.network import BridgeNetwork, NetworkError
from fleetpy.config import SshSettings
from fleetpy.ssh import journal_command, ssh_argv, status_command


def option(argv: list[str], name: str) -> list[str]:
    return [
        argv[i + 1] for i, arg in enumerate(argv) if arg == "-o" and argv[i + 1].startswith(name)
    ]


def test_defaults_are_fleetctls_strict_batch_ssh_as_root() -> None:
    argv = ssh_argv(SshSettings(), "10.0.0.5", ["systemctl", "status", "a.service"])
    assert argv[0] == "ssh"
    assert option(argv, "StrictHostKeyChecking") == ["StrictHostKeyChecking=yes"]
    assert option(argv, "BatchMode") == ["BatchMode=yes"]
    assert argv[argv.index("-p") + 1] == "22"
    # the command follows "--", so a unit name can never become an ssh option
    assert argv[-5:] == ["root@10.0.0.5", "--", "systemctl", "status", "a.service"]
    assert "-T" in argv and "-i" not in argv


def test_settings_reach_the_command_line() -> None:
    settings = SshSettings(
        username="core",
        port=2222,
        identity="/keys/id",
        strict_host_key_checking=False,
        known_hosts_file="/keys/known",
    )
    argv = ssh_argv(settings, "10.0.0.5", [], tty=True)
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "/keys/id"
    assert option(argv, "StrictHostKeyChecking") == ["StrictHostKeyChecking=no"]
    assert option(argv, "UserKnownHostsFile") == ["UserKnownHostsFile=/keys/known"]
    assert "-t" in argv and argv[-2:] == ["core@10.0.0.5", "--"]


@pytest.mark.parametrize(
    ("tunnel", "jump", "port"),
    [
        ("bastion", "core@bastion", "22"),
        ("bastion:2200", "core@bastion", "2200"),
        ("ops@bastion:2200", "ops@bastion", "2200"),
        ("[fd00::1]:2200", "core@fd00::1", "2200"),
        ("fd00::1", "core@fd00::1", "22"),
    ],
)
def test_tunnel_jump_uses_the_same_identity_and_known_hosts(
    tunnel: str, jump: str, port: str
) -> None:
    settings = SshSettings(username="core", identity="/k/100%id", tunnel=tunnel)
    argv = ssh_argv(settings, "10.0.0.5", ["true"])
    (proxy,) = option(argv, "ProxyCommand=")
    words = shlex.split(proxy.removeprefix("ProxyCommand="))
    assert words[-3:] == [jump, "-W", "%h:%p"]
    assert words[words.index("-p") + 1] == port
    assert words[words.index("-i") + 1] == "/k/100%%id"  # ssh expands % tokens here
    assert "-J" not in argv


def test_remote_commands() -> None:
    assert status_command("a@1.service")[-1] == "a@1.service"
    assert journal_command("a.service", 20, follow=True)[-3:] == ["--lines", "20", "--follow"]
    assert "--follow" not in journal_command("a.service", 20, follow=False)


def test_network_names_fit_linux_interface_names() -> None:
    network = BridgeNetwork("abcdefgh")
    network.hosts["abcdefgh-h200"] = 200
    assert len(network.bridge) <= 15 and len(network.veth("abcdefgh-h200")) <= 15
    assert network.gateway == "10.213.0.1"
    assert network.address(1) == "10.213.0.10"
    with pytest.raises(NetworkError, match="no address for host 250"):
        network.address(250)


@pytest.mark.parametrize("name", ["", "Upper", "9lives", "toolongname", "a-b", "a/b"])
def test_cluster_names_are_refused_before_anything_is_made(name: str) -> None:
    with pytest.raises(NetworkError, match="invalid cluster name"):
        BridgeNetwork(name)


def test_public_subnets_are_refused() -> None:
    import ipaddress

    with pytest.raises(NetworkError, match="private range"):
        BridgeNetwork("a", ipaddress.IPv4Network("8.8.8.0/24"))
    with pytest.raises(NetworkError, match="at least /28"):
        BridgeNetwork("a", ipaddress.IPv4Network("10.0.0.0/30"))
