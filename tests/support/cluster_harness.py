"""Driving `fleetpy cluster up|down` from tests as a user does (a `fleetpy` process),
and finding what a cluster left on this machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from subprocess import CompletedProcess, run

from fleetpy.cluster.local import STATE_ROOT, ClusterState, strays
from fleetpy.cluster.network import ip

from support.hosts_fixtures import require_host_prerequisites
from support.paths import ROOT

CHECKOUT_FLEETPY = (sys.executable, "-m", "fleetpy")

# Every local cluster a test brings up (`cluster up --name NAME --subnet SUBNET`): one per
# test or per module's fixture, so tests running side by side (pytest-xdist workers) never
# share a name, bridge, namespace or address. No name starts another: leftovers() finds a
# cluster's links and namespaces by their name's prefix (tests/pure/test_parallel.py).
TEST_CLUSTERS: dict[str, str] = {
    "t6c": "10.213.66.0/24",  # test_local_cluster's cluster, shared by the module
    "t6x": "10.213.67.0/24",  # test_local_cluster: an `up` killed halfway
    "tpip": "10.213.69.0/24",  # test_pip_install: the venv's fleetpy
    "tdown": "10.213.70.0/24",  # test_local_cluster: `down` after losses
    "tstuck": "10.213.71.0/24",  # test_local_cluster: `down` around a mount
    "tboot": "10.213.72.0/24",  # test_cluster_reboot: hosts rebooted from inside
    "sec": "10.213.78.0/24",  # test_secure_cluster, shared by the module
}


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    program: tuple[str, ...] = CHECKOUT_FLEETPY,
    cwd: Path = ROOT,
) -> CompletedProcess[str]:
    """`fleetpy ARGS` (the checkout's, or PROGRAM), without the caller's FLEETPY_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    return run(
        [*program, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def cluster_up(name: str, *options: str) -> ClusterState:
    """`fleetpy cluster up --name NAME --subnet (its TEST_CLUSTERS one) OPTIONS`, after a
    `down` of what an earlier run left; its state once up succeeded."""
    require_host_prerequisites()
    if (STATE_ROOT / name).exists():
        cli("cluster", "down", "--name", name)
    result = cli("cluster", "up", "--name", name, "--subnet", TEST_CLUSTERS[name], *options)
    assert result.returncode == 0, result.stderr[-3000:]
    return ClusterState.load(name)


def sourced(state: ClusterState) -> dict[str, str]:
    """The settings the cluster's env file exports."""
    env = {}
    for line in Path(state.env_file).read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def _test_cluster_link(line: str) -> bool:
    """Whether a line of `ip -o link show` is a link of one of TEST_CLUSTERS: its bridge
    fpb-NAME or a host's veth fpvNAME<n>."""
    link = line.split(": ", 2)[1].split("@")[0] if line.count(": ") >= 2 else ""
    return any(link == f"fpb-{name}" or link.startswith(f"fpv{name}") for name in TEST_CLUSTERS)


def machine_links() -> list[str]:
    """This machine's network links (`ip -o link show`, a line each) but those of the local
    clusters tests bring up (TEST_CLUSTERS), which come and go while other tests run beside
    (pytest-xdist workers): what a test may compare before and after to see it made none."""
    return [
        line
        for line in ip("-o", "link", "show").stdout.splitlines()
        if not _test_cluster_link(line)
    ]


def leftovers(name: str) -> list[str]:
    """Anything of the cluster's still on this machine: links, namespaces, its directory."""
    found = [
        link
        for link in ip("-o", "link", "show").stdout.split("\n")
        if f"fpb-{name}:" in link or f"fpv{name}" in link
    ]
    found += [ns for ns in ip("netns", "list").stdout.split() if ns.startswith(f"fleetpy-{name}-")]
    if (STATE_ROOT / name).exists():
        found.append(str(STATE_ROOT / name))
    found += [f"process {pid}" for pid in strays(name, str(STATE_ROOT / name))]
    return found
