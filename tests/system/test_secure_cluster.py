"""`fleetpy cluster up --secure` on real hosts: etcd only over TLS (clients and peers)
with its auth on, each host's agent acting as its own etcd user through the credential
in its /etc/fleetpy, the engines as fleetpy-engine, the env file as the operator; the
example deployment runs; `down` removes the certificates with everything else."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from fleetpy.cluster.local import ClusterState

from support.cluster_harness import cli, cluster_up, leftovers, sourced
from support.waiting import until

pytestmark = pytest.mark.hosts
NAME = "sec"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterState]:
    state = cluster_up(NAME, "--secure", "--hosts", "2", "--etcd-members", "3", "--ttl", "5")
    try:
        yield state
    finally:
        down = cli("cluster", "down", "--name", NAME)
        assert down.returncode == 0, down.stderr
        assert leftovers(NAME) == []
        assert not Path(state.pki).exists()


def common_name(pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_everything_speaks_tls_with_its_own_credential(cluster: ClusterState) -> None:
    env = sourced(cluster)
    assert all(url.startswith("https://") for url in env["FLEETPY_ENDPOINT"].split(","))
    assert common_name(Path(env["FLEETPY_CERT_FILE"])) == "fleetpy-operator"
    assert Path(env["FLEETPY_CA_FILE"]).is_relative_to(cluster.pki)
    status = cli("cluster", "status", "--name", NAME)
    assert "etcd TLS and roles" in status.stdout and "NO" not in status.stdout, status.stdout
    machines = json.loads(cli("list-machines", "-o", "json", env=env).stdout)
    assert sorted(m["machine"] for m in machines) == sorted(h.machine_id for h in cluster.hosts)
    for host in cluster.hosts:
        etc = Path(host.state_dir) / "etc"  # the host's /etc/fleetpy
        config = yaml.safe_load((etc / "agent.yaml").read_text())
        assert config["cert_file"] == "/etc/fleetpy/agent.pem"
        assert common_name(etc / "agent.pem") == f"fleetpy-agent-{host.machine_id}"
        for name in ("ca.pem", "agent.pem", "agent-key.pem"):
            assert stat.S_IMODE((etc / name).stat().st_mode) == 0o600
    # Without credentials etcd refuses at once, in one line.
    bare = cli("list-units", env={"FLEETPY_ENDPOINT": env["FLEETPY_ENDPOINT"]})
    lines = bare.stderr.strip().splitlines()
    assert bare.returncode == 1 and len(lines) == 1 and "TLS handshake failed" in lines[0]


def test_example_deployment_runs_and_an_agent_credential_cannot_submit(
    cluster: ClusterState,
) -> None:
    env = sourced(cluster)
    result = cli("apply", "units", "--min-ready", "1", env=env)
    assert result.returncode == 0, result.stderr[-2000:]

    def listed() -> list[dict[str, str]]:
        return list(json.loads(cli("list-units", "-o", "json", env=env).stdout))

    # A global unit's apply ends once one machine started it (and it stayed active for
    # --min-ready): the other machines report theirs when they do (later, under load).
    every = {h.machine_id for h in cluster.hosts}
    until(
        lambda: {u["machine"] for u in listed() if u["unit"] == "monitor.service"} == every,
        timeout=60,
        what="monitor.service reported on every machine",
    )
    units = listed()
    assert {u["unit"] for u in units if u["active"] == "active"} >= {
        "web@1.service",
        "web@2.service",
        "web@3.service",
        "monitor.service",
    }
    assert {u["machine"] for u in units} == {h.machine_id for h in cluster.hosts}
    # A host's own credential (what a compromised host holds) cannot submit a unit.
    host = cluster.hosts[0]
    etc = Path(host.state_dir) / "etc"
    as_agent = {
        **env,
        "FLEETPY_CA_FILE": str(etc / "ca.pem"),
        "FLEETPY_CERT_FILE": str(etc / "agent.pem"),
        "FLEETPY_KEY_FILE": str(etc / "agent-key.pem"),
    }
    denied = cli("start", "--no-block", "units/hello.service", env=as_agent)
    lines = denied.stderr.strip().splitlines()
    assert denied.returncode == 1 and len(lines) == 1, denied.stderr
    assert f"permission denied for user fleetpy-agent-{host.machine_id}" in lines[0]
    destroyed = cli("destroy", "web@*", "web-sidekick@*", "monitor.service", env=env)
    assert destroyed.returncode == 0, destroyed.stderr
