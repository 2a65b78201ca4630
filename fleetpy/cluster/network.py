"""A local cluster's own network: a bridge on this machine, and for every host a network
namespace joined to it by a veth pair, with the host's own address on the cluster's
subnet. There is no NAT, no forwarding and no default route in a host: hosts reach each
other, etcd and this machine (the bridge's address), nothing else.

Interface names are at most 15 characters: `fpb-CLUSTER` for the bridge and
`fpvCLUSTERn` for the machine's end of host n's veth (cluster names: 1-8 characters).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import FleetpyError

CLUSTER_NAME = re.compile(r"[a-z][a-z0-9]{0,7}")
DEFAULT_SUBNET = "10.213.0.0/24"  # a private range; --subnet picks another
FIRST_HOST = 10  # .1 is this machine (the bridge), hosts from .10


class NetworkError(FleetpyError):
    """The cluster's network could not be made or removed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetworkError("ip not found: apt-get install iproute2") from None
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {' '.join(result.stderr.split())}")
    return result


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return name in ip("netns", "list", check=False).stdout.split()


@dataclass
class BridgeNetwork:
    """The cluster's network; satisfies nspawn's HostNetwork (nspawn_args, public_ip,
    release). add_host() must come before a host is launched."""

    cluster: str
    subnet: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network(DEFAULT_SUBNET)
    )
    hosts: dict[str, int] = field(default_factory=dict)  # host name -> index (1, 2, ...)

    def __post_init__(self) -> None:
        if not CLUSTER_NAME.fullmatch(self.cluster):
            raise NetworkError(
                f"invalid cluster name {self.cluster!r}: 1 to 8 lowercase letters and digits, "
                "starting with a letter"
            )
        if self.subnet.num_addresses < 16 or not self.subnet.is_private:
            raise NetworkError(f"subnet {self.subnet} must be a private range of at least /28")

    @property
    def bridge(self) -> str:
        return f"fpb-{self.cluster}"

    @property
    def gateway(self) -> str:
        """This machine's address on the cluster network (etcd listens there)."""
        return str(self.subnet.network_address + 1)

    def address(self, index: int) -> str:
        candidate = self.subnet.network_address + FIRST_HOST + index - 1
        if candidate >= self.subnet.broadcast_address:
            raise NetworkError(f"subnet {self.subnet} has no address for host {index}")
        return str(candidate)

    def netns(self, host: str) -> str:
        return f"fleetpy-{self.cluster}-{host}"

    def veth(self, host: str) -> str:
        return f"fpv{self.cluster}{self.hosts[host]}"

    def create(self) -> None:
        """The bridge with this machine's address on it (refused if it exists)."""
        if link_exists(self.bridge):
            raise NetworkError(f"a link named {self.bridge} exists already")
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, host: str, index: int) -> str:
        """A namespace for `host` on the bridge, its address `address(index)`; returns it."""
        self.hosts[host] = index
        namespace, veth, address = self.netns(host), self.veth(host), self.address(index)
        ip("netns", "add", namespace)
        ip("link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", namespace)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "host0")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "link", "set", "host0", "up")
        return address

    # HostNetwork

    def nspawn_args(self, name: str) -> list[str]:
        return [f"--network-namespace-path=/run/netns/{self.netns(name)}"]

    def public_ip(self, name: str) -> str:
        return self.address(self.hosts[name])

    def release(self, name: str) -> None:
        """A host ended: its namespace goes (and with it both ends of its veth)."""
        remove_netns(self.netns(name))

    # faults, for tests

    def cut(self, host: str) -> None:
        """Unplug a host: its veth goes down (the host runs on, cut off)."""
        ip("link", "set", self.veth(host), "down")

    def restore(self, host: str) -> None:
        ip("link", "set", self.veth(host), "up")


def remove_netns(name: str) -> bool:
    """Delete a namespace: True if it was deleted here, False if it was already gone."""
    return _remove(name, netns_exists, ("netns", "del", name))


def remove_link(name: str) -> bool:
    """Delete a link (a veth: both ends): True if deleted here, False if already gone
    (also when it vanished meanwhile, as a veth does with its namespace)."""
    return _remove(name, link_exists, ("link", "del", name))


def _remove(name: str, exists: Callable[[str], bool], command: Sequence[str]) -> bool:
    if not exists(name):
        return False
    try:
        ip(*command)
    except NetworkError:
        if not exists(name):
            return False
        raise
    return True
