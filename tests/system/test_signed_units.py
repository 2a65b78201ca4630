"""Signed units end to end at the registry level: real etcd, an engine, and simulated
agents configured with trusted keys. Forged records are written with etcdctl, straight
into etcd, as someone with etcd access but no signing key would.

Every test runs twice: on a plain etcd, and on one with TLS, client certificates and
auth, where the operator, the engine and each agent act as their own etcd users (the
forger there holds etcd's root certificate)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.client import listings, operations, waiting
from fleetpy.errors import SigningError
from fleetpy.registry import RegistryConfig
from fleetpy.unitfile.signing import Signer, TrustedKeys, load_trusted_keys
from fleetpy.unitfile.unit import content_hash, parse_unit

from support.secure_fixtures import Roles
from support.signed_cluster import GOOD, MACHINES, SignedClusterBase, signed_cluster_on
from support.waiting import until

EVIL = "[Service]\nExecStart=/bin/sh -c 'echo pwned'\n"


def canonical(text: str) -> str:
    return parse_unit(text, "test").serialize()


class SignedCluster(SignedClusterBase):
    """Two simulated machines that trust `trusted/` (read at start), an engine, and the
    operator's keys."""

    def __init__(self, roles: Roles, workdir: Path) -> None:
        super().__init__(roles, workdir, ("ops", "next"), roots=("ops", "next"))

    def trusted(self, machine: str) -> TrustedKeys:
        return load_trusted_keys(self.trusted_dir, lambda m: None)

    def signer(self, name: str = "ops") -> Signer:
        return super().signer(name)

    def seen_by_managers(self, unit: str) -> bool:
        """Did any machine's unit manager ever hold the unit (its file written)?"""
        return any(unit in m.observe() for m in self.managers.values())

    def raw_put(self, key: str, value: str) -> None:
        self.etcdctl("put", self.raw_key(key), value=value)


@pytest.fixture(params=["plain", "tls-auth"])
def cluster(
    request: pytest.FixtureRequest, registry_config: RegistryConfig, tmp_path: Path
) -> Iterator[SignedCluster]:
    yield from signed_cluster_on(
        request.param, registry_config, tmp_path, lambda roles: SignedCluster(roles, tmp_path)
    )


def active(cluster: SignedCluster, unit: str) -> bool:
    state = cluster.state(unit)
    return state is not None and state.active == "active"


def rejected(cluster: SignedCluster, unit: str, reason: str) -> bool:
    state = cluster.state(unit)
    return state is not None and state.active == "rejected" and state.sub == reason


def test_signed_runs_unsigned_and_untrusted_are_rejected(cluster: SignedCluster) -> None:
    operations.start(cluster.registry, [cluster.unit_file("good.service")], cluster.signer())
    operations.start(cluster.registry, [cluster.unit_file("plain.service")])
    operations.start(
        cluster.registry, [cluster.unit_file("alien.service")], cluster.signer("stranger")
    )
    until(lambda: active(cluster, "good.service"), what="signed unit active")
    until(lambda: rejected(cluster, "plain.service", "unsigned"), what="unsigned rejected")
    until(lambda: rejected(cluster, "alien.service", "untrusted-key"), what="alien rejected")
    state = cluster.state("plain.service")
    assert state is not None
    assert state.load == "not-loaded" and "not signed" in state.message
    assert state.hash == content_hash(canonical(GOOD))
    assert not cluster.seen_by_managers("plain.service")
    assert not cluster.seen_by_managers("alien.service")
    # What `list-units` shows: ACTIVE rejected, SUB the reason, the explanation in MESSAGE.
    rows = {r.unit: r for r in listings.unit_rows(cluster.registry.read_view(with_text=False))}
    assert (rows["plain.service"].active, rows["plain.service"].sub) == ("rejected", "unsigned")
    assert "not signed" in rows["plain.service"].message
    # A blocking start ends at once with the machine's reason, not after its timeout.
    result = waiting.wait_for(cluster.registry, ["plain.service"], waiting.WaitTarget.LAUNCHED, 20)
    assert not result.ok and not result.timed_out
    assert "plain.service rejected on m" in (result.error_message() or "")

    # Signing the unit afterwards (from its file) lets it run: the engine hands the
    # agent the new signature.
    operations.start(cluster.registry, [cluster.unit_file("plain.service")], cluster.signer())
    until(lambda: active(cluster, "plain.service"), what="re-signed unit active")


def test_forged_records_never_reach_the_unit_manager(cluster: SignedCluster) -> None:
    operations.start(cluster.registry, [cluster.unit_file("good.service")], cluster.signer())
    until(lambda: active(cluster, "good.service"), what="signed unit active")
    evil = canonical(EVIL)
    evil_hash = content_hash(evil)
    good_signature = cluster.signer().sign("good.service", content_hash(canonical(GOOD)))

    # 1. A unit record and its content, as a client would write them, but unsigned.
    cluster.raw_put(f"content/{evil_hash}", evil)
    cluster.raw_put("unit/forged.service", json.dumps({"hash": evil_hash, "desired": "launched"}))
    # 2. One carrying another unit's signature.
    cluster.raw_put(
        "unit/stolen.service",
        json.dumps({"hash": evil_hash, "desired": "launched", "signature": good_signature}),
    )
    # 3. A schedule entry straight onto a machine, bypassing the engine.
    cluster.raw_put(
        "schedule/m1/direct.service",
        json.dumps({"hash": evil_hash, "desired": "launched", "text": evil}),
    )
    # 4. A global unit: every machine reads these.
    cluster.raw_put(
        "global/everywhere.service",
        json.dumps({"hash": evil_hash, "desired": "launched", "text": evil}),
    )
    until(lambda: rejected(cluster, "forged.service", "unsigned"), what="forged rejected")
    until(lambda: rejected(cluster, "stolen.service", "wrong-signature"), what="stolen rejected")
    until(lambda: rejected(cluster, "direct.service", "unsigned"), what="direct rejected")
    until(
        lambda: (
            {s.sub for s in cluster.states("everywhere.service").values()} == {"unsigned"}
            and len(cluster.states("everywhere.service")) == 2
        ),
        what="global rejected on both machines",
    )
    for unit in ("forged.service", "stolen.service", "direct.service", "everywhere.service"):
        assert not cluster.seen_by_managers(unit), unit
    assert active(cluster, "good.service")  # the rest carries on


def test_swapped_contents_are_rejected_and_a_replaced_record_stops_the_unit(
    cluster: SignedCluster,
) -> None:
    good = canonical(GOOD)
    good_hash = content_hash(good)
    evil = canonical(EVIL)
    operations.start(cluster.registry, [cluster.unit_file("web.service")], cluster.signer())
    until(lambda: active(cluster, "web.service"), what="signed unit active")
    (machine,) = cluster.states("web.service")
    signature = cluster.signer().sign("web.service", good_hash)

    # The signed hash and signature, other text: the schedule entry rewritten in place.
    cluster.raw_put(
        f"schedule/{machine}/web.service",
        json.dumps(
            {"hash": good_hash, "desired": "launched", "text": evil, "signature": signature}
        ),
    )
    until(lambda: rejected(cluster, "web.service", "content-mismatch"), what="swap rejected")
    # What ran before is stopped and removed: the record no longer asks for it, and what
    # it asks for may not run.
    until(lambda: not cluster.seen_by_managers("web.service"), what="old version removed")

    # A swap of the stored content blob before an engine reads it: the same verdict.
    operations.submit(cluster.registry, [cluster.unit_file("later.service")], cluster.signer())
    cluster.engine.stop()
    cluster.raw_put(f"content/{good_hash}", evil)
    cluster.engine = cluster.start_engine()
    operations.start(cluster.registry, ["later.service"])
    until(lambda: rejected(cluster, "later.service", "content-mismatch"), what="blob swap")
    assert not cluster.seen_by_managers("later.service")


def test_rotation_and_signing_by_name(cluster: SignedCluster) -> None:
    operations.submit(cluster.registry, [cluster.unit_file("web@.service")], cluster.signer("ops"))
    operations.start(cluster.registry, ["web@1.service"], cluster.signer("ops"))
    until(lambda: active(cluster, "web@1.service"), what="instance active")
    # Both keys trusted: re-signing with the next key by name (its record is signed by
    # one of our own keys) changes only the signature; the unit keeps running.
    operations.start(cluster.registry, ["web@1.service"], cluster.signer("next"))
    record = cluster.registry.get_unit("web@1.service")
    assert record is not None and record.signature is not None
    assert record.signature.split(":")[1] == cluster.signer("next").key_id
    (machine,) = cluster.states("web@1.service")
    until(
        lambda: (
            cluster.registry.read_machine_schedule(machine)[1]["web@1.service"].signature
            == record.signature
        ),
        what="the engine carried the new signature",
    )
    # Retire the old key: agents restarted with only the next key keep the unit running.
    (cluster.trusted_dir / "ops.pub").unlink()
    for m in list(cluster.agents):
        cluster.restart_agent(m)
    operations.start(cluster.registry, ["web@2.service"], cluster.signer("next"))
    until(lambda: active(cluster, "web@2.service"), what="new instance active")
    assert active(cluster, "web@1.service")

    # A record nobody of ours signed is not signed by name: that would sign a forgery.
    evil = canonical(EVIL)
    cluster.raw_put(f"content/{content_hash(evil)}", evil)
    cluster.raw_put(
        "unit/planted@.service", json.dumps({"hash": content_hash(evil), "desired": "inactive"})
    )
    before = cluster.registry.get_unit("planted@1.service")
    with pytest.raises(SigningError, match="planted@.service is stored in etcd without"):
        operations.start(cluster.registry, ["planted@1.service"], cluster.signer("next"))
    assert cluster.registry.get_unit("planted@1.service") == before is None


APP = "[Unit]\nDescription=app {{ instance }} v{{ version }}\n\n[Service]\nExecStart=/bin/sleep 1000\n"


def deployment_dir(workdir: Path, version: str) -> Path:
    directory = workdir / "deploy"
    directory.mkdir(exist_ok=True)
    (directory / "app.service.j2").write_text(APP)
    (directory / "fleetpy.yaml").write_text(
        f"name: demo\nvalues: {{version: '{version}'}}\nunits:\n"
        "  - {name: app@.service, template: app.service.j2, instances: 2}\n"
        "rollout: {max_unavailable: 1, min_ready: 0, timeout: 20}\n"
    )
    return directory


def test_apply_signs_adds_rolling_updates_and_re_signs(cluster: SignedCluster) -> None:
    from fleetpy.deploy.deployment import load_deployment, render_deployment
    from fleetpy.deploy.rollout import ApplyOptions, ChangeKind, apply_deployment, plan_deployment
    from fleetpy.errors import DeploymentError

    options = ApplyOptions(min_ready=0, timeout=20)
    names = ["app@1.service", "app@2.service"]

    def apply(version: str, signer: Signer | None, origin: str) -> object:
        units = render_deployment(load_deployment(deployment_dir(cluster.workdir, version)))
        plan = plan_deployment(cluster.registry, "demo", units, origin, signer=signer)
        apply_deployment(cluster.registry, plan, units, options, signer=signer)
        return plan

    ops, nxt = cluster.signer("ops"), cluster.signer("next")
    apply("1", ops, "c1")
    assert all(active(cluster, n) for n in names)
    apply("2", ops, "c2")  # a rolling update: each new version signed
    hashes = {n: cluster.registry.get_unit(n).hash for n in names}  # type: ignore[union-attr]
    assert all(cluster.state(n).hash == hashes[n] for n in names)  # type: ignore[union-attr]
    assert all(active(cluster, n) for n in names)

    # Re-signing with the next key: only signatures change, nothing restarts.
    plan = apply("2", nxt, "c2")
    assert [c.kind for c in plan.changes] == [ChangeKind.SIGN, ChangeKind.SIGN]  # type: ignore[attr-defined]
    for n in names:
        record = cluster.registry.get_unit(n)
        assert record is not None and record.signature is not None
        assert record.signature.split(":")[1] == nxt.key_id
    assert all(active(cluster, n) for n in names)
    assert apply("2", nxt, "c2").changes == ()  # type: ignore[attr-defined]

    # An unsigned new version is refused by the machines: apply stops at once.
    with pytest.raises(DeploymentError, match="rejected on m"):
        apply("3", None, "c3")


def test_apply_rollback_signs_the_previous_version_anew_and_restart_works(
    cluster: SignedCluster,
) -> None:
    """Agents refuse a version older than one they ran: a rollback puts the previous
    contents back under a newer signature (the signer's own key had signed them)."""
    from fleetpy.deploy.rollout import ApplyOptions, apply_deployment, plan_deployment, restart
    from fleetpy.errors import DeploymentError
    from fleetpy.unitfile.signing import signature_version

    from support.rollout import deployment, render

    ops = cluster.signer()
    directory = deployment(cluster.workdir, instances=2)
    options = ApplyOptions(min_ready=0, timeout=10, rollback=True)

    def apply(origin: str) -> None:
        name, units = render(directory)
        plan = plan_deployment(cluster.registry, name, units, origin, signer=ops)
        apply_deployment(cluster.registry, plan, units, options, signer=ops)

    apply("c1")
    _, old_units = render(directory)
    old = {u.name: u.hash for u in old_units}
    until(lambda: all(active(cluster, n) for n in old), what="version 1 active")
    deployment(cluster.workdir, version="2", instances=2, command="/bin/false")
    with pytest.raises(DeploymentError, match="rolled back app@1.service to the previous version"):
        apply("c2")
    record = cluster.registry.get_unit("app@1.service")
    assert record is not None and record.hash == old["app@1.service"]
    state = cluster.state("app@1.service")
    assert state is not None and state.hash == old["app@1.service"] and state.active == "active"
    # Its signature is newer than the failed version's, which the machine had accepted.
    assert signature_version(record.signature) > 0
    assert active(cluster, "app@2.service")
    # restart keeps working: the same signed version is stopped and started again.
    assert restart(cluster.registry, ["app@*"], timeout=20) == ["app@1.service", "app@2.service"]
    assert all(active(cluster, n) for n in old)


def test_a_global_units_rollback_is_signed_anew(cluster: SignedCluster) -> None:
    """A failing version of a global unit, rolled back: the machine that took it runs the
    previous version again, signed anew (it accepted the failed one's newer version)."""
    from fleetpy.deploy.rollout import ApplyOptions, apply_deployment, plan_deployment
    from fleetpy.errors import DeploymentError

    from support.global_rollout import UNIT, monitor, monitor_hash
    from support.rollout import render

    ops = cluster.signer()
    options = ApplyOptions(min_ready=0, timeout=10, rollback=True)

    def apply(version: str) -> None:
        name, units = render(monitor(cluster.workdir, version))
        plan = plan_deployment(cluster.registry, name, units, version, signer=ops)
        apply_deployment(cluster.registry, plan, units, options, signer=ops)

    apply("1")
    old = monitor_hash(monitor(cluster.workdir, "1"))
    everywhere = dict.fromkeys(MACHINES, (old, "active"))

    def running() -> dict[str, tuple[str, str]]:
        return {m: (s.hash, s.active) for m, s in cluster.states(UNIT).items()}

    until(lambda: running() == everywhere, what="version 1 on every machine")
    with pytest.raises(DeploymentError, match=f"rolled back {UNIT} to the previous version"):
        apply("bad")
    until(lambda: running() == everywhere, what="version 1 back on every machine")
