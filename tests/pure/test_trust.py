"""Keys rotated and revoked at run time (fleetpy.trust, fleetpy.host_trust): the trust
record's checks, the keys in force, the agent's on_revoke, and the host's trusted
directory and kept record, as tables and on a temporary directory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetpy.agent_plan import DesiredUnit, plan
from fleetpy.errors import ConfigError
from fleetpy.host_trust import HostTrust
from fleetpy.model.trust import ReleaseKey, Revocation, SignedTrust, TrustEvent, TrustRecord
from fleetpy.states import DesiredState
from fleetpy.trust import (
    Accepted,
    Refusal,
    Refused,
    admit,
    effective,
    encode_public,
    next_expiry,
    now_ms,
    open_record,
    sign_record,
)
from fleetpy.unitfile.signing import Rejection, Signer, TrustedKey, TrustedKeys, Verdict, key_id
from fleetpy.unitfile.unit import content_hash
from fleetpy.unitmanager import ObservedUnit, RemoveUnit, StopUnit

TEXT = "[Service]\nExecStart=/bin/sleep 1000\n"
DIGEST = content_hash(TEXT)


def make_signer(name: str) -> Signer:
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    return Signer(name, kid, private)


ROOT, OTHER_ROOT, RELEASE, NEXT, STRANGER = (
    make_signer(n) for n in ("root", "root2", "release", "next", "stranger")
)


def trusted_key(signer: Signer) -> TrustedKey:
    return TrustedKey(signer.key_id, signer.private.public_key(), signer.name)


ROOTS = {s.key_id: trusted_key(s) for s in (ROOT, OTHER_ROOT)}


def release(signer: Signer, expires: float | None = None) -> ReleaseKey:
    raw = signer.private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return ReleaseKey(signer.key_id, signer.name, encode_public(raw), expires)


def record(
    serial: int, *keys: ReleaseKey, revoked: tuple[str, ...] = (), at: float = 0.0
) -> TrustRecord:
    return TrustRecord(serial, keys, tuple(Revocation(k, 1000.0, "lost") for k in revoked), "", at)


def envelope(rec: TrustRecord, signer: Signer = ROOT) -> str:
    return sign_record(rec, signer).to_json()


def accepted(rec: TrustRecord, signer: Signer = ROOT) -> Accepted:
    opened = open_record(envelope(rec, signer), ROOTS, None)
    assert isinstance(opened, Accepted)
    return opened


# ----------------------------------------------------------------------------- the record


def forged_body() -> str:
    signed = sign_record(record(5, release(RELEASE)), ROOT)
    return SignedTrust(record(5, release(STRANGER)).body(), signed.signature).to_json()


def wrong_id() -> str:
    bad = release(STRANGER)
    return envelope(record(5, ReleaseKey(RELEASE.key_id, "x", bad.public)))


OPEN_CASES: list[tuple[str, Callable[[], str], TrustRecord | None, Refusal | None]] = [
    ("signed by a root key", lambda: envelope(record(5, release(RELEASE))), None, None),
    ("signed by another root key", lambda: envelope(record(5), OTHER_ROOT), None, None),
    (
        "signed by a release key, not a root",
        lambda: envelope(record(5), RELEASE),
        None,
        Refusal.NOT_ROOT,
    ),
    ("signed by a stranger", lambda: envelope(record(5), STRANGER), None, Refusal.NOT_ROOT),
    ("body swapped after signing", forged_body, None, Refusal.FORGED),
    ("a key id that is not its key's", wrong_id, None, Refusal.MALFORMED),
    ("not JSON", lambda: "{nope", None, Refusal.MALFORMED),
    ("no signature", lambda: '{"body": "{}", "signature": "x"}', None, Refusal.MALFORMED),
    (
        "signed by a root the record in force revoked",
        lambda: envelope(record(9), OTHER_ROOT),
        record(5, revoked=(OTHER_ROOT.key_id,)),
        Refusal.REVOKED_SIGNER,
    ),
]


@pytest.mark.parametrize(
    "make, in_force, refused", [c[1:] for c in OPEN_CASES], ids=[c[0] for c in OPEN_CASES]
)
def test_open_record(
    make: Callable[[], str], in_force: TrustRecord | None, refused: Refusal | None
) -> None:
    opened = open_record(make(), ROOTS, in_force)
    if refused is None:
        assert isinstance(opened, Accepted)
    else:
        assert isinstance(opened, Refused) and opened.reason is refused, opened


NOW_MS = 2_000_000_000_000

ADMIT_CASES: list[tuple[str, TrustRecord, TrustRecord | None, Refusal | str | None]] = [
    ("the first record", record(5), None, None),
    ("a higher serial", record(6, release(NEXT)), record(5), None),
    ("the same record again: no change", record(5), record(5), "same"),
    ("the same serial, another body", record(5, release(NEXT)), record(5), Refusal.FORGED_SERIAL),
    ("an older serial: a replay", record(4), record(5), Refusal.OLDER),
    (
        "a serial far ahead of any clock: judged by serials only",
        record(NOW_MS * 9),
        record(5),
        None,
    ),
]


@pytest.mark.parametrize(
    "offered, in_force, outcome", [c[1:] for c in ADMIT_CASES], ids=[c[0] for c in ADMIT_CASES]
)
def test_admit(
    offered: TrustRecord, in_force: TrustRecord | None, outcome: Refusal | str | None
) -> None:
    result = admit(accepted(offered), None if in_force is None else accepted(in_force))
    if outcome is None:
        assert isinstance(result, Accepted) and result.record == offered
    elif outcome == "same":
        assert result is None
    else:
        assert isinstance(result, Refused) and result.reason is outcome, result


# ----------------------------------------------------------------------------- keys in force


def verdict(keys: TrustedKeys, signer: Signer) -> Rejection | None:
    found = keys.check("a.service", DIGEST, TEXT, sign(signer))
    return found.reason if isinstance(found, Verdict) else None


def sign(signer: Signer) -> str:
    return signer.sign("a.service", DIGEST)


ROOT_SET = TrustedKeys({ROOT.key_id: trusted_key(ROOT)}, "dir")

EFFECTIVE_CASES: list[tuple[str, TrustRecord | None, Signer, Rejection | None]] = [
    ("no record: a root key signs units", None, ROOT, None),
    ("no record: a release key is unknown", None, RELEASE, Rejection.UNTRUSTED),
    ("a release key of the record", record(2, release(RELEASE)), RELEASE, None),
    ("before its expiry", record(2, release(RELEASE, 2000.0)), RELEASE, None),
    ("after its expiry", record(2, release(RELEASE, 1000.0)), RELEASE, Rejection.EXPIRED),
    ("revoked", record(2, revoked=(RELEASE.key_id,)), RELEASE, Rejection.REVOKED),
    ("a root key revoked", record(2, revoked=(ROOT.key_id,)), ROOT, Rejection.REVOKED),
    (
        "a root key past the expiry a rotation gave it",
        record(2, release(ROOT, 1000.0)),
        ROOT,
        Rejection.EXPIRED,
    ),
    ("a stranger still", record(2, release(RELEASE)), STRANGER, Rejection.UNTRUSTED),
]


@pytest.mark.parametrize(
    "rec, signer, rejection",
    [c[1:] for c in EFFECTIVE_CASES],
    ids=[c[0] for c in EFFECTIVE_CASES],
)
def test_keys_in_force(
    rec: TrustRecord | None, signer: Signer, rejection: Rejection | None
) -> None:
    assert verdict(effective(ROOT_SET, rec, 1500.0), signer) == rejection


def test_revoked_verdict_names_the_key_and_reason() -> None:
    keys = effective(ROOT_SET, record(2, revoked=(RELEASE.key_id,)), 1500.0)
    found = keys.check("a.service", DIGEST, TEXT, sign(RELEASE))
    assert isinstance(found, Verdict)
    assert RELEASE.key_id in found.detail and "revoked" in found.detail and "lost" in found.detail


def test_next_expiry_is_the_earliest_to_come() -> None:
    rec = record(2, release(RELEASE, 3000.0), release(NEXT, 2000.0), release(ROOT, 1000.0))
    assert next_expiry(rec, 1500.0) == 2000.0
    assert next_expiry(rec, 3500.0) is None


# ----------------------------------------------------------------------------- on_revoke


def desired(signer: Signer, text: str = TEXT) -> dict[str, DesiredUnit]:
    digest = content_hash(text)
    signature = signer.sign("a.service", digest)
    return {"a.service": DesiredUnit("a.service", digest, DesiredState.LAUNCHED, text, signature)}


def running(text: str = TEXT) -> dict[str, ObservedUnit]:
    unit = ObservedUnit("a.service", content_hash(text), "loaded", "active", "running", True)
    return {"a.service": unit}


REVOKED = effective(ROOT_SET, record(2, revoked=(RELEASE.key_id,)), 1500.0)
EXPIRED = effective(ROOT_SET, record(2, release(RELEASE, 1000.0)), 1500.0)
REMOVED = effective(ROOT_SET, None, 1500.0)  # RELEASE's .pub gone from the directory
OTHER = "[Service]\nExecStart=/bin/sleep 2000\n"

KEEP_CASES: list[tuple[str, TrustedKeys, dict[str, DesiredUnit], bool, list[object], str]] = [
    ("revoked, keep: runs on", REVOKED, desired(RELEASE), True, [], "kept"),
    ("expired, keep: runs on", EXPIRED, desired(RELEASE), True, [], "kept"),
    ("key removed, keep: runs on", REMOVED, desired(RELEASE), True, [], "kept"),
    (
        "revoked, stop: stopped and removed",
        REVOKED,
        desired(RELEASE),
        False,
        [StopUnit("a.service"), RemoveUnit("a.service")],
        "revoked-key",
    ),
    (
        "revoked, keep, but another content: the old one is stopped",
        REVOKED,
        desired(RELEASE, OTHER),
        True,
        [StopUnit("a.service"), RemoveUnit("a.service")],
        "revoked-key",
    ),
    (
        "an unknown key on what runs, keep: runs on (its .pub may have been removed)",
        REVOKED,
        desired(STRANGER, TEXT),
        True,
        [],
        "kept",
    ),
    (
        "a forged signature on what runs: stopped even with keep",
        REVOKED,
        {
            "a.service": DesiredUnit(
                "a.service",
                DIGEST,
                DesiredState.LAUNCHED,
                TEXT,
                sign(STRANGER).replace(STRANGER.key_id, ROOT.key_id),
            )
        },
        True,
        [StopUnit("a.service"), RemoveUnit("a.service")],
        "wrong-signature",
    ),
]


@pytest.mark.parametrize(
    "keys, want, keep, actions, outcome",
    [c[1:] for c in KEEP_CASES],
    ids=[c[0] for c in KEEP_CASES],
)
def test_on_revoke(
    keys: TrustedKeys,
    want: dict[str, DesiredUnit],
    keep: bool,
    actions: list[object],
    outcome: str,
) -> None:
    decided = plan(want, running(), keys, keep_withdrawn=keep)
    assert decided.actions == actions
    if outcome == "kept":
        assert set(decided.kept) == {"a.service"} and decided.rejected == {}
    else:
        assert decided.kept == {}
        assert decided.rejected["a.service"][1].reason == outcome


def test_a_withdrawn_key_starts_nothing_new() -> None:
    """Keep leaves what runs; a unit not yet here is refused, not started."""
    decided = plan(desired(RELEASE), {}, REVOKED, keep_withdrawn=True)
    assert decided.actions == [] and decided.kept == {}
    assert decided.rejected["a.service"][1].reason is Rejection.REVOKED


def test_two_of_three_with_one_key_revoked_is_left_to_on_revoke() -> None:
    """Several signatures (signatures_required): a unit signed by two keys, one of them
    revoked since, no longer has enough; it is a withdrawn key's unit (on_revoke), not one
    merely short of signatures (which would hold it whatever on_revoke says)."""
    from fleetpy.agent_plan import Policy

    keys = effective(
        TrustedKeys({ROOT.key_id: trusted_key(ROOT)}, "dir"),
        record(2, release(NEXT), revoked=(RELEASE.key_id,)),
        1500.0,
    )
    digest = content_hash(TEXT)
    version = now_ms()
    both = " ".join(s.sign_at("a.service", digest, version) for s in (ROOT, RELEASE))
    before = effective(ROOT_SET, record(2, release(RELEASE)), 1500.0)
    want_both = {"a.service": DesiredUnit("a.service", digest, DesiredState.LAUNCHED, TEXT, both)}
    assert plan(want_both, running(), before, policy=Policy(required=2)).rejected == {}
    want = {"a.service": DesiredUnit("a.service", digest, DesiredState.LAUNCHED, TEXT, both)}
    policy = Policy(required=2)
    kept = plan(want, running(), keys, policy=policy, keep_withdrawn=True)
    assert kept.actions == [] and kept.kept["a.service"].reason is Rejection.REVOKED
    stopped = plan(want, running(), keys, policy=policy, keep_withdrawn=False)
    assert stopped.actions == [StopUnit("a.service"), RemoveUnit("a.service")]
    assert stopped.rejected["a.service"][1].reason is Rejection.REVOKED


# ----------------------------------------------------------------------------- the host


def write_pub(directory: Path, signer: Signer, name: str | None = None) -> Path:
    path = directory / f"{name or signer.name}.pub"
    path.write_bytes(
        signer.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture
def host(tmp_path: Path) -> Callable[[], HostTrust]:
    directory = tmp_path / "trusted"
    if not directory.exists():
        directory.mkdir()
        write_pub(directory, ROOT)
    return lambda: HostTrust(directory, tmp_path / "state" / "trust-m1.json", "m1")


def kids(trust: HostTrust) -> set[str]:
    keys = trust.current()
    return set(keys.keys)


def test_a_key_added_to_the_directory_counts_at_the_next_rescan(
    host: Callable[[], HostTrust],
) -> None:
    trust = host()
    assert kids(trust) == {ROOT.key_id}
    assert trust.rescan() is False
    write_pub(trust.directory, NEXT)
    assert trust.rescan() is True and kids(trust) == {ROOT.key_id, NEXT.key_id}
    (trust.directory / "next.pub").unlink()
    assert trust.rescan() is True and kids(trust) == {ROOT.key_id}


def test_symlink_fifo_and_garbage_are_refused_once_and_the_key_read_before_stays(
    host: Callable[[], HostTrust], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = host()
    elsewhere = write_pub(tmp_path, STRANGER, "elsewhere")
    path = trust.directory / "root.pub"
    for replace_with in ("symlink", "fifo", "garbage"):
        path.unlink()
        if replace_with == "symlink":
            path.symlink_to(elsewhere)
        elif replace_with == "fifo":
            os.mkfifo(path)
        else:
            path.write_text("not a key\n")
        capsys.readouterr()
        assert trust.rescan() is False
        assert trust.rescan() is False
        assert kids(trust) == {ROOT.key_id}, replace_with  # neither lost nor replaced
        lines = [line for line in capsys.readouterr().err.splitlines() if "root.pub" in line]
        assert len(lines) == 1 and "keeping key" in lines[0], (replace_with, lines)
    # A symlink is refused at start too: nothing is trusted through it.
    path.unlink()
    path.symlink_to(elsewhere)
    assert kids(host()) == set()


def test_a_vanished_directory_keeps_the_last_good_set(
    host: Callable[[], HostTrust], capsys: pytest.CaptureFixture[str]
) -> None:
    trust = host()
    moved = trust.directory.with_name("moved")
    trust.directory.rename(moved)
    capsys.readouterr()
    assert trust.rescan() is False and trust.rescan() is False
    assert kids(trust) == {ROOT.key_id}
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "keeping the 1 keys" in lines[0]
    moved.rename(trust.directory)
    assert trust.rescan() is False and kids(trust) == {ROOT.key_id}
    # But at start, a missing directory is one error: a typo must not run nothing.
    trust.directory.rename(moved)
    with pytest.raises(ConfigError, match="cannot read trusted keys directory"):
        host()


def test_the_record_is_followed_kept_on_the_host_and_never_rolled_back(
    host: Callable[[], HostTrust], capsys: pytest.CaptureFixture[str]
) -> None:
    trust = host()
    serial = now_ms()
    first = envelope(record(serial, release(RELEASE)))
    assert trust.apply(TrustEvent(first)) and kids(trust) == {ROOT.key_id, RELEASE.key_id}
    revoking = envelope(record(serial + 1, revoked=(RELEASE.key_id,)))
    assert trust.offer(revoking)
    assert RELEASE.key_id in trust.current().retired
    capsys.readouterr()
    # Replayed, deleted, forged: the revocation stays.
    assert not trust.offer(first)
    assert not trust.offer(None)
    assert not trust.offer(envelope(record(serial + 2, release(RELEASE)), STRANGER))
    assert not trust.offer(envelope(record(serial + 2, release(RELEASE)), STRANGER))  # said once
    err = capsys.readouterr().err
    assert "event=trust_record_refused" in err and "reason=older" in err
    assert "event=trust_record_missing" in err
    assert err.count("reason=not-root") == 1
    assert RELEASE.key_id in trust.current().retired
    # A restarted agent starts from the record it kept, not from etcd's.
    again = host()
    assert again.serial == serial + 1 and RELEASE.key_id in again.current().retired
    assert not again.offer(first)
    assert oct(again.cache.stat().st_mode & 0o777) == "0o600"


def test_an_expiry_passes_after_its_span_on_the_hosts_own_clock(tmp_path: Path) -> None:
    """The writer's clock is an hour behind this host's: the key still expires 60 s after
    the host accepted the record (neither at once nor an hour late), also after a restart."""
    directory = tmp_path / "trusted"
    directory.mkdir()
    write_pub(directory, ROOT)
    clock = [time.time()]
    cache = tmp_path / "trust.json"

    def host() -> HostTrust:
        return HostTrust(directory, cache, "m1", clock=lambda: clock[0])

    trust = host()
    written = clock[0] - 3600
    trust.offer(envelope(record(now_ms(), release(RELEASE, written + 60), at=written)))
    assert RELEASE.key_id in trust.current().keys
    clock[0] += 30
    assert RELEASE.key_id in host().current().keys  # restarted: the same span
    clock[0] += 31
    keys = trust.current()
    assert RELEASE.key_id not in keys.keys
    assert keys.retired[RELEASE.key_id].reason is Rejection.EXPIRED
    assert keys.retired == host().current().retired


# ----------------------------------------------------------------------------- the setting


def test_on_revoke_setting_from_flag_environment_and_file() -> None:
    from fleetpy.config import OnRevoke, resolve

    assert resolve({}, environ={}).agent.on_revoke is OnRevoke.KEEP  # the default
    assert resolve({}, environ={"FLEETPY_ON_REVOKE": "stop"}).agent.on_revoke is OnRevoke.STOP
    assert resolve({}, {"on_revoke": "stop"}, environ={}).agent.on_revoke is OnRevoke.STOP
    flag = resolve({"on_revoke": "keep"}, {"on_revoke": "stop"}, environ={})
    assert flag.agent.on_revoke is OnRevoke.KEEP
    with pytest.raises(ConfigError, match="expected keep or stop"):
        resolve({}, environ={"FLEETPY_ON_REVOKE": "kill"})


class _Registry:
    """The trust record's two calls, in memory (client.trust's only registry use)."""

    def __init__(self) -> None:
        self.raw: str | None = None
        self.revision = 0

    def trust_record(self) -> tuple[int, str | None, int]:
        return self.revision, self.raw, self.revision

    def put_trust_record(self, raw: str, expected: int) -> int:
        assert expected == self.revision
        self.raw, self.revision = raw, self.revision + 1
        return self.revision


def test_the_cli_never_writes_a_record_agents_would_refuse() -> None:
    """Revocations add up; past MAX_ENTRIES the record would be refused by every agent,
    so the CLI refuses to write it (one line) and the record in force stays."""
    from fleetpy.client import trust as client_trust
    from fleetpy.errors import SigningError
    from fleetpy.model.trust import MAX_ENTRIES

    registry = _Registry()
    root = Signer(
        ROOT.name, ROOT.key_id, ROOT.private, TrustedKeys({ROOT.key_id: trusted_key(ROOT)})
    )
    kids = [f"{n:016x}" for n in range(MAX_ENTRIES + 1)]
    for kid in kids[:MAX_ENTRIES]:
        client_trust.revoke(registry, root, kid, "")  # type: ignore[arg-type]
    before = registry.raw
    with pytest.raises(SigningError, match="would be refused by agents: more than 256 revoked"):
        client_trust.revoke(registry, root, kids[-1], "")  # type: ignore[arg-type]
    assert registry.raw == before
