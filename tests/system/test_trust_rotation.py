"""Keys rotated and revoked while agents run (issue [17] item 2): a real etcd, an engine,
simulated machines that each follow their trusted directory and the trust record
(fleetpy.host_trust). The forger writes with etcd's root credentials (etcdctl), as
someone with etcd access but no root signing key would.

Every test runs on a plain etcd and on one with TLS, client certificates and auth (each
daemon its own etcd user)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.client import operations, trust
from fleetpy.config import OnRevoke
from fleetpy.host_trust import RESCAN
from fleetpy.model.trust import TrustRecord
from fleetpy.registry import RegistryConfig
from fleetpy.trust import sign_record

from support.signed_cluster import GOOD
from support.trust_cluster import MACHINES, TrustCluster, trust_cluster
from support.waiting import until

OTHER = "[Service]\nExecStart=/bin/sleep 2000\n"


@pytest.fixture(params=["plain", "tls-auth"])
def cluster(
    request: pytest.FixtureRequest, registry_config: RegistryConfig, tmp_path: Path
) -> Iterator[TrustCluster]:
    yield from trust_cluster(request.param, registry_config, tmp_path, OnRevoke.KEEP)


@pytest.fixture(params=["plain", "tls-auth"])
def stopping(
    request: pytest.FixtureRequest, registry_config: RegistryConfig, tmp_path: Path
) -> Iterator[TrustCluster]:
    yield from trust_cluster(request.param, registry_config, tmp_path, OnRevoke.STOP)


def state_is(cluster: TrustCluster, unit: str, active: str, sub: str | None = None) -> bool:
    state = cluster.state(unit)
    return state is not None and state.active == active and (sub is None or state.sub == sub)


def trust_key(cluster: TrustCluster, name: str, root: str = "root") -> None:
    trust.trust(cluster.registry, cluster.signer(root), trust.release_key(name, cluster.keys, None))


def start(cluster: TrustCluster, unit: str, key: str, text: str = GOOD) -> None:
    operations.start(
        cluster.registry, [cluster.unit_file(unit, text)], cluster.signer(key), replace=True
    )


def test_a_key_rotated_with_agents_running(cluster: TrustCluster) -> None:
    # A release key trusted through the record: its units run, no agent restarted.
    trust_key(cluster, "v1")
    start(cluster, "web.service", "v1")
    until(lambda: state_is(cluster, "web.service", "active"), what="v1's unit active")
    (where,) = cluster.running_on("web.service")
    # Rotation: v2 trusted, v1 for a grace period. Both count meanwhile.
    trust.rotate(
        cluster.registry,
        cluster.signer("root"),
        trust.release_key("v1", cluster.keys, None),
        trust.release_key("v2", cluster.keys, None),
        # Long enough for api.service to start and web.service to be re-signed under
        # load before v1 expires (3 s was tight on a loaded 2-core machine).
        grace=8.0,
    )
    start(cluster, "api.service", "v2")
    until(lambda: state_is(cluster, "api.service", "active"), what="v2's unit active")
    # Re-signed with v2 in place: not restarted, nothing moved.
    operations.start(cluster.registry, ["web.service"], cluster.signer("v2"))
    # After the grace period v1 no longer counts: a unit it signs is refused...
    v1 = cluster.signer("v1").key_id
    until(
        lambda: all(
            a.trusted is not None and v1 in a.trusted.retired for a in cluster.agents.values()
        ),
        what="v1 expired on every agent",
    )
    start(cluster, "late.service", "v1")
    until(
        lambda: state_is(cluster, "late.service", "rejected", "expired-key"),
        what="a unit signed by the expired key refused",
    )
    # ... and what v2 re-signed runs on where it ran.
    assert cluster.running_on("web.service") == [where]
    state = cluster.state("web.service")
    assert state is not None and state.active == "active" and state.message == ""
    # A new root key dropped into the directory counts without a restart too.
    cluster.add_root("root2")
    start(cluster, "root2.service", "root2")
    until(lambda: state_is(cluster, "root2.service", "active"), what="root2's unit active")


def test_a_key_revoked_while_its_unit_runs_keeps_it_running_by_default(
    cluster: TrustCluster,
) -> None:
    trust_key(cluster, "v1")
    trust_key(cluster, "v2")
    start(cluster, "web.service", "v1")
    until(lambda: state_is(cluster, "web.service", "active"), what="v1's unit active")
    (where,) = cluster.running_on("web.service")
    kid = cluster.signer("v1").key_id
    trust.revoke(cluster.registry, cluster.signer("root"), kid, "laptop stolen")

    # Kept (on_revoke=keep): still running, and its state says why it is kept.
    def kept() -> bool:
        state = cluster.state("web.service")
        return state is not None and "revoked" in state.message and "kept running" in state.message

    until(kept, what="the running unit kept, with the reason")
    assert cluster.running_on("web.service") == [where]
    # Anything new the revoked key signs is refused from then on.
    start(cluster, "new.service", "v1")
    until(
        lambda: state_is(cluster, "new.service", "rejected", "revoked-key"),
        what="the revoked key's new unit refused",
    )
    assert cluster.running_on("new.service") == []
    # So is a new content of the kept unit: the old one stops, the new one never runs.
    start(cluster, "web.service", "v1", OTHER)
    until(
        lambda: state_is(cluster, "web.service", "rejected", "revoked-key"),
        what="the revoked key's new content refused",
    )
    until(lambda: cluster.running_on("web.service") == [], what="the kept unit stopped")
    # Re-signed with a good key: it runs again.
    start(cluster, "web.service", "v2", OTHER)
    until(lambda: state_is(cluster, "web.service", "active"), what="re-signed unit active")
    # An agent restart neither un-revokes the key nor stops what runs.
    start(cluster, "kept2.service", "v2")
    until(lambda: state_is(cluster, "kept2.service", "active"), what="v2's unit active")
    for machine in MACHINES:
        cluster.restart_agent(machine)
        agent = cluster.agents[machine]
        assert agent.trusted is not None and kid in agent.trusted.retired


def test_a_key_revoked_while_its_unit_runs_stops_it_with_on_revoke_stop(
    stopping: TrustCluster,
) -> None:
    cluster = stopping
    trust_key(cluster, "v1")
    start(cluster, "web.service", "v1")
    until(lambda: state_is(cluster, "web.service", "active"), what="v1's unit active")
    trust.revoke(cluster.registry, cluster.signer("root"), cluster.signer("v1").key_id, "")
    until(
        lambda: state_is(cluster, "web.service", "rejected", "revoked-key"),
        what="the revoked key's unit stopped and refused",
    )
    until(lambda: cluster.running_on("web.service") == [], what="stopped")
    state = cluster.state("web.service")
    assert state is not None and "revoked" in state.message


def test_forged_replayed_and_deleted_records_change_nothing(
    cluster: TrustCluster, capfd: pytest.CaptureFixture[str]
) -> None:
    trust_key(cluster, "v1")
    start(cluster, "web.service", "v1")
    until(lambda: state_is(cluster, "web.service", "active"), what="v1's unit active")
    key = cluster.raw_key("trust/record")
    trusting_v1 = cluster.etcdctl("get", "--print-value-only", key).strip()
    kid = cluster.signer("v1").key_id
    trust.revoke(cluster.registry, cluster.signer("root"), kid, "")
    until(
        lambda: all(
            a.trusted is not None and kid in a.trusted.retired for a in cluster.agents.values()
        ),
        what="revoked everywhere",
    )
    capfd.readouterr()
    current = json.loads(cluster.etcdctl("get", "--print-value-only", key))
    record = TrustRecord.from_body(current["body"])
    # 1. Un-revoked by a record signed with a key that is not a root key (a release key).
    forged = TrustRecord(record.serial + 1, record.keys, (), "mallory", 0.0)
    cluster.etcdctl("put", key, value=sign_record(forged, cluster.signer("v1")).to_json())
    # 2. The older record that trusted v1, replayed.
    cluster.etcdctl("put", key, value=trusting_v1)
    # 3. Deleted.
    cluster.etcdctl("del", key)
    start(cluster, "after.service", "v1")
    until(
        lambda: state_is(cluster, "after.service", "rejected", "revoked-key"),
        what="still revoked",
    )
    captured: list[str] = []

    def lines(machine: str) -> list[str]:
        captured.append(capfd.readouterr().err)
        return [line for line in "".join(captured).splitlines() if f"machine={machine}" in line]

    def all_said(machine: str) -> bool:
        return any("event=trust_record_missing" in line for line in lines(machine))

    until(lambda: all(all_said(m) for m in MACHINES), what="every agent saw the deletion")
    for machine in MACHINES:
        refused = [line for line in lines(machine) if "event=trust_record_refused" in line]
        assert [("reason=not-root" in r, "reason=older" in r) for r in refused] == [
            (True, False),
            (False, True),
        ], refused
        assert sum("event=trust_record_missing" in line for line in lines(machine)) == 1
    # The kept unit ran through all of it.
    assert len(cluster.running_on("web.service")) == 1


def test_a_vanished_trusted_directory_keeps_the_last_good_set(
    cluster: TrustCluster, capfd: pytest.CaptureFixture[str]
) -> None:
    start(cluster, "web.service", "root")
    until(lambda: state_is(cluster, "web.service", "active"), what="root's unit active")
    capfd.readouterr()
    cluster.trusted_dir.rename(cluster.workdir / "moved")
    # Nothing that runs stops, and the root key still signs what starts next.
    start(cluster, "next.service", "root")
    until(lambda: state_is(cluster, "next.service", "active"), what="root's next unit active")
    start(cluster, "alien.service", "stranger")
    until(
        lambda: state_is(cluster, "alien.service", "rejected", "untrusted-key"),
        what="a stranger still refused",
    )
    assert len(cluster.running_on("web.service")) == 1
    # Said once per agent, however many rescans find it gone.
    captured: list[str] = []

    def said(machine: str) -> list[str]:
        captured.append(capfd.readouterr().err)
        lines = "".join(captured).splitlines()
        return [line for line in lines if f"machine={machine}" in line and "is unreadable" in line]

    until(lambda: all(said(m) for m in MACHINES), what="every agent said it")
    time.sleep(2 * RESCAN + 0.5)  # two more rescans
    for machine in MACHINES:
        lines = said(machine)
        assert len(lines) == 1 and "keeping the 1 keys read before" in lines[0], lines
