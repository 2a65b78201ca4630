"""Signed versions and several signatures on real hosts (systemd-nspawn), on an etcd with
TLS, client certificates and auth: an older signed version replayed with etcd's root
certificate never reaches systemd (what runs keeps running, across an agent restart and
after the unit's destroy); a host that requires two signatures of three keys runs a unit
only once a second operator signed it, and keeps the old version running meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.signed_hosts import SignedHosts, signed_hosts
from support.waiting import until

pytestmark = pytest.mark.hosts


def service(seconds: int, role: str) -> str:
    return f"[Service]\nExecStart=/bin/sleep {seconds}\n\n[X-Fleet]\nMachineMetadata=role={role}\n"


@pytest.fixture(scope="module")
def cluster(
    host_rootfs: Path, host_docker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SignedHosts]:
    metadata = [{"role": "one"}, {"role": "two"}]
    agents = [{}, {"signatures_required": 2}]
    workdir = tmp_path_factory.mktemp("signed")
    with signed_hosts(workdir, host_rootfs, metadata, agents, ("alice", "bob", "carol")) as made:
        yield made


def rejections(cluster: SignedHosts, host: int, unit: str) -> int:
    """How many unit_rejected lines host's agent logged for unit."""
    journal = cluster.hosts[host].journal("fleetpy-agent", lines=2000)
    return sum(
        1
        for line in journal.splitlines()
        if "event=unit_rejected" in line and f"unit={unit}" in line
    )


def test_an_older_signed_version_replayed_as_etcd_root_never_reaches_systemd(
    cluster: SignedHosts,
) -> None:
    host = cluster.hosts[0]
    v1 = cluster.write("web.service", service(1001, "one"))
    cluster.cli("start", "--sign", "alice", "--block-attempts", "60", v1)
    with cluster.operator() as registry:
        first = registry.get_unit("web.service")
        assert first is not None
        first_text = registry.get_content(first.hash)
        assert first_text is not None
        v2 = cluster.write("v2/web.service", service(1002, "one"))
        cluster.cli("start", "--replace", "--sign", "alice", "--block-attempts", "60", v2)
        second = registry.get_unit("web.service")
        assert second is not None and second.hash != first.hash
        second_text = registry.get_content(second.hash)
        assert second_text is not None
    assert host.is_active("web.service")
    pid = host.main_pid("web.service")

    # The replay: version 1's record, its own valid signature, put back by etcd's root.
    cluster.forge(f"content/{first.hash}", first_text)
    cluster.forge("unit/web.service", first.to_json())
    until(
        lambda: cluster.state("web.service")[:2] == ("rejected", "rollback"),
        timeout=60,
        what="the replayed version refused as a rollback",
    )
    message = cluster.state("web.service")[2]
    assert "older than version" in message, message
    # What runs is version 2, untouched: same process, same unit file.
    assert host.is_active("web.service") and host.main_pid("web.service") == pid
    assert "sleep 1002" in host.systemctl("cat", "web.service").stdout
    logged = rejections(cluster, 0, "web.service")
    assert logged >= 1

    # The agent restarted: it remembers (on the host's disk), and refuses again.
    host.restart_agent()
    until(
        lambda: rejections(cluster, 0, "web.service") > logged,
        timeout=60,
        what="the restarted agent refusing the replay",
    )
    # It registered with what runs (active), logged the refusal, then reports it.
    until(
        lambda: cluster.state("web.service")[:2] == ("rejected", "rollback"),
        what="the refusal reported again",
    )
    assert host.is_active("web.service") and host.main_pid("web.service") == pid
    assert "sleep 1002" in host.systemctl("cat", "web.service").stdout

    # A deliberate rollback is a new signature over the old contents: it runs.
    cluster.cli("start", "--replace", "--sign", "alice", "--block-attempts", "60", v1)
    assert "sleep 1001" in host.systemctl("cat", "web.service").stdout
    assert host.is_active("web.service")

    # Destroyed, then version 2 replayed under the same name: still older, never run.
    cluster.cli("destroy", "web.service")
    until(lambda: not host.is_active("web.service"), timeout=60, what="web.service stopped")
    cluster.forge(f"content/{second.hash}", second_text)
    cluster.forge("unit/web.service", second.to_json())
    until(
        lambda: cluster.state("web.service")[:2] == ("rejected", "rollback"),
        timeout=60,
        what="the replay after destroy refused",
    )
    assert host.systemctl("cat", "web.service", check=False).returncode != 0
    assert not host.is_active("web.service")


def test_two_of_three_keys(cluster: SignedHosts) -> None:
    host = cluster.hosts[1]  # signatures_required: 2
    db = cluster.write("db.service", service(2001, "two"))
    cluster.cli("start", "--no-block", "--sign", "alice", db)
    until(
        lambda: cluster.state("db.service")[:2] == ("rejected", "too-few-signatures"),
        timeout=60,
        what="one signature of two refused",
    )
    assert "requires 2" in cluster.state("db.service")[2]
    assert host.systemctl("cat", "db.service", check=False).returncode != 0

    # A second operator adds theirs: it runs.
    cluster.cli("sign", "--key", "bob", db)
    until(lambda: host.is_active("db.service"), timeout=60, what="db.service active")
    until(lambda: cluster.state("db.service")[0] == "active", timeout=30, what="reported")
    pid = host.main_pid("db.service")

    # A new version signed by one key: refused, and the running version stays.
    db2 = cluster.write("v2/db.service", service(2002, "two"))
    cluster.cli("start", "--no-block", "--replace", "--sign", "carol", db2)
    until(
        lambda: cluster.state("db.service")[:2] == ("rejected", "too-few-signatures"),
        timeout=60,
        what="the new version waiting for a second signature",
    )
    assert host.is_active("db.service") and host.main_pid("db.service") == pid
    assert "sleep 2001" in host.systemctl("cat", "db.service").stdout

    # The second signature of the new version: it replaces the old.
    cluster.cli("sign", "--key", "alice", db2)
    until(
        lambda: "sleep 2002" in host.systemctl("cat", "db.service", check=False).stdout,
        timeout=60,
        what="the new version written",
    )
    until(lambda: host.is_active("db.service"), timeout=60, what="new version active")
    until(lambda: cluster.state("db.service")[0] == "active", timeout=30, what="reported")
