"""Signed versions (no rollback) and several signatures per unit: fleetpy.unitfile.signing's
v2 format and policy, the agent's plan with a Policy, and the host's store of accepted
versions (fleetpy.accepted_versions)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetpy.accepted_versions import AcceptedVersions
from fleetpy.agent_plan import DesiredUnit, Policy, plan
from fleetpy.errors import ConfigError, FileError, SigningError
from fleetpy.states import DesiredState
from fleetpy.unitfile.signing import (
    FUTURE_SKEW_MS,
    MAX_SIGNATURES,
    Accepted,
    Rejection,
    Signer,
    TrustedKey,
    TrustedKeys,
    Verdict,
    format_signature,
    key_id,
    message,
    now_ms,
    parse_signature,
    parse_signatures,
    signature_version,
)
from fleetpy.unitfile.unit import content_hash
from fleetpy.unitmanager import ObservedUnit, RemoveUnit, StartUnit, StopUnit, WriteUnit


def _key(name: str, own: tuple[Signer, ...] = ()) -> Signer:
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    keys = {kid: TrustedKey(kid, private.public_key(), name)}
    keys.update({s.key_id: TrustedKey(s.key_id, s.private.public_key(), s.name) for s in own})
    return Signer(name, kid, private, TrustedKeys(keys))


A, B, C, STRANGER = _key("a"), _key("b"), _key("c"), _key("stranger")
TRUSTED = TrustedKeys(
    {s.key_id: TrustedKey(s.key_id, s.private.public_key(), s.name) for s in (A, B, C)}
)
OLD = "[Service]\nExecStart=/bin/sleep 1000\n"
NEW = "[Service]\nExecStart=/bin/sleep 2000\n"
OLD_HASH, NEW_HASH = content_hash(OLD), content_hash(NEW)
NAME = "web.service"
NOW = 1_800_000_000_000  # ms


def v1(signer: Signer, name: str = NAME, digest: str = OLD_HASH) -> str:
    """A signature as fleetpy wrote them before versions."""
    return format_signature(signer.key_id, signer.private.sign(message(name, digest)))


def check(
    signature: str | None,
    text: str = OLD,
    *,
    required: int = 1,
    accepted: int | None = None,
    now: int = NOW,
) -> Verdict | Accepted:
    return TRUSTED.check(
        NAME, content_hash(text), text, signature, required=required, accepted=accepted, now=now
    )


def reason(verdict: Verdict | Accepted) -> str:
    assert isinstance(verdict, Verdict), verdict
    assert verdict.detail and "\n" not in verdict.detail
    return verdict.reason


# ----------------------------------------------------------------------------- the format


def test_a_signature_binds_a_version_and_v1_ones_still_verify_as_version_0() -> None:
    signature = A.sign_at(NAME, OLD_HASH, 42)
    parsed = parse_signature(signature)
    assert parsed is not None and (parsed.key_id, parsed.version) == (A.key_id, 42)
    assert signature.split(":")[:3] == ["ed25519", A.key_id, "42"]
    assert check(signature) == Accepted(42, (A.key_id,))
    old = v1(A)
    parsed_old = parse_signature(old)
    assert parsed_old is not None and parsed_old.version is None and parsed_old.level == 0
    assert check(old) == Accepted(0, (A.key_id,))


def test_a_forged_counter_does_not_verify() -> None:
    signature = A.sign_at(NAME, OLD_HASH, NOW - 1000)
    forged = signature.replace(f":{NOW - 1000}:", f":{NOW + 1000}:")
    assert reason(check(forged)) == Rejection.FORGED
    # Nor does a v1 signature relabelled as a v2 one (the messages differ).
    relabelled = v1(A).replace(f"{A.key_id}:", f"{A.key_id}:0:")
    assert reason(check(relabelled)) == Rejection.FORGED


@pytest.mark.parametrize(
    "text",
    [
        "ed25519:0123456789abcdef:01:" + "A" * 86,  # a leading zero: two spellings
        "ed25519:0123456789abcdef:-1:" + "A" * 86,
        "ed25519:0123456789abcdef:" + "9" * 19 + ":" + "A" * 86,  # over 18 digits
        "ed25519:0123456789abcdef:1:2:" + "A" * 86,
    ],
)
def test_malformed_versions_are_not_signatures(text: str) -> None:
    assert parse_signature(text) is None
    assert reason(check(text)) == Rejection.MALFORMED


def test_sign_moves_forward_past_the_stored_version() -> None:
    before = now_ms()
    fresh = signature_version(A.sign(NAME, OLD_HASH))
    assert fresh >= before
    # A stored version ahead of this clock (a signer whose clock was fast): one past it.
    ahead = before + 60_000
    assert signature_version(A.sign(NAME, OLD_HASH, ahead)) == ahead + 1
    # A version beyond the skew no agent accepts: not followed (it would drag every
    # later signature into the future too).
    far = A.sign_at(NAME, OLD_HASH, before + FUTURE_SKEW_MS + 60_000)
    assert signature_version(far) == 0
    assert signature_version(None) == 0 and signature_version("garbage") == 0


# ----------------------------------------------------------------------------- the policy


def test_older_versions_are_refused_as_rollback() -> None:
    assert check(A.sign_at(NAME, OLD_HASH, 5), accepted=5) == Accepted(5, (A.key_id,))
    assert check(A.sign_at(NAME, OLD_HASH, 6), accepted=5) == Accepted(6, (A.key_id,))
    refused = check(A.sign_at(NAME, OLD_HASH, 4), accepted=5)
    assert reason(refused) == Rejection.ROLLBACK
    assert isinstance(refused, Verdict) and "version 4" in refused.detail
    assert "version 5" in refused.detail
    # A v1 signature cannot replace an accepted v2 one.
    assert reason(check(v1(A), accepted=5)) == Rejection.ROLLBACK
    assert check(v1(A), accepted=0) == Accepted(0, (A.key_id,))


def test_a_version_from_the_future_is_refused() -> None:
    within = A.sign_at(NAME, OLD_HASH, NOW + FUTURE_SKEW_MS)
    assert check(within) == Accepted(NOW + FUTURE_SKEW_MS, (A.key_id,))
    beyond = A.sign_at(NAME, OLD_HASH, NOW + FUTURE_SKEW_MS + 1)
    assert reason(check(beyond)) == Rejection.FUTURE
    # Once this clock catches up, it is accepted.
    assert isinstance(check(beyond, now=NOW + 1), Accepted)


def join(*signatures: str) -> str:
    return " ".join(signatures)


@pytest.mark.parametrize(
    ("case", "signature", "required", "expected"),
    [
        ("one of one", join(A.sign_at(NAME, OLD_HASH, 7)), 1, Accepted(7, (A.key_id,))),
        ("one of two", join(A.sign_at(NAME, OLD_HASH, 7)), 2, Rejection.TOO_FEW),
        (
            "two of two",
            join(A.sign_at(NAME, OLD_HASH, 7), B.sign_at(NAME, OLD_HASH, 7)),
            2,
            Accepted(7, tuple(sorted((A.key_id, B.key_id)))),
        ),
        (
            "the same key twice is one",
            join(A.sign_at(NAME, OLD_HASH, 7), A.sign_at(NAME, OLD_HASH, 7)),
            2,
            Rejection.TOO_FEW,
        ),
        (
            "a key nobody trusts does not count",
            join(A.sign_at(NAME, OLD_HASH, 7), STRANGER.sign_at(NAME, OLD_HASH, 7)),
            2,
            Rejection.TOO_FEW,
        ),
        (
            "a forged one does not count, the valid ones do",
            join(A.sign_at(NAME, NEW_HASH, 7), B.sign_at(NAME, OLD_HASH, 7)),
            1,
            Accepted(7, (B.key_id,)),
        ),
        (
            "two keys, but at two versions: not the same version",
            join(A.sign_at(NAME, OLD_HASH, 7), B.sign_at(NAME, OLD_HASH, 8)),
            2,
            Rejection.TOO_FEW,
        ),
        (
            "the highest version with enough keys",
            join(
                A.sign_at(NAME, OLD_HASH, 7),
                B.sign_at(NAME, OLD_HASH, 7),
                C.sign_at(NAME, OLD_HASH, 9),
            ),
            2,
            Accepted(7, tuple(sorted((A.key_id, B.key_id)))),
        ),
        (
            "none counts: the first reason",
            join(STRANGER.sign_at(NAME, OLD_HASH, 7)),
            1,
            Rejection.UNTRUSTED,
        ),
        (
            "two spaces",
            A.sign_at(NAME, OLD_HASH, 7) + "  " + B.sign_at(NAME, OLD_HASH, 7),
            1,
            Rejection.MALFORMED,
        ),
        (
            "a piece that is not ours",
            join(A.sign_at(NAME, OLD_HASH, 7), "x"),
            1,
            Rejection.MALFORMED,
        ),
        (
            "more than MAX_SIGNATURES",
            join(*[A.sign_at(NAME, OLD_HASH, 7)] * (MAX_SIGNATURES + 1)),
            1,
            Rejection.MALFORMED,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v and len(v) < 60 else "",
)
def test_several_signatures(
    case: str, signature: str, required: int, expected: Accepted | Rejection
) -> None:
    verdict = check(signature, required=required)
    if isinstance(expected, Accepted):
        assert verdict == expected, case
    else:
        assert reason(verdict) == expected, case


def test_too_few_says_how_many() -> None:
    verdict = check(A.sign_at(NAME, OLD_HASH, 7), required=2)
    assert isinstance(verdict, Verdict)
    assert verdict.detail == f"signed by 1 trusted key ({A.key_id}); this machine requires 2"


# ----------------------------------------------------------------------------- co-signing


def test_cosign_adds_this_key_at_the_sets_version() -> None:
    first = A.sign(NAME, OLD_HASH)
    version = signature_version(first)
    both = B.cosign(NAME, OLD_HASH, first)
    parsed = parse_signatures(both)
    assert parsed is not None and [(s.key_id, s.version) for s in parsed] == [
        (A.key_id, version),
        (B.key_id, version),
    ]
    assert check(both, required=2, now=version) == Accepted(
        version, tuple(sorted((A.key_id, B.key_id)))
    )
    # Again: this key's signature is replaced, not added twice.
    assert B.cosign(NAME, OLD_HASH, both) == both
    # Over a v1 signature: at version 0, which counts with it.
    with_v1 = B.cosign(NAME, OLD_HASH, v1(A))
    assert check(with_v1, required=2) == Accepted(0, tuple(sorted((A.key_id, B.key_id))))
    # An unsigned unit: a fresh signature.
    assert isinstance(check(B.cosign(NAME, OLD_HASH, None), now=now_ms()), Accepted)


def test_cosign_refuses_sets_it_cannot_extend() -> None:
    with pytest.raises(SigningError, match="not fleetpy's"):
        B.cosign(NAME, OLD_HASH, "garbage")
    future = A.sign_at(NAME, OLD_HASH, now_ms() + FUTURE_SKEW_MS + 60_000)
    with pytest.raises(SigningError, match="in the future"):
        B.cosign(NAME, OLD_HASH, future)
    full = join(*[C.sign_at(NAME, OLD_HASH, 7)] * MAX_SIGNATURES)
    with pytest.raises(SigningError, match="at most"):
        B.cosign(NAME, OLD_HASH, full)


def test_has_signed_is_this_keys_valid_signature_at_any_version() -> None:
    both = B.cosign(NAME, OLD_HASH, A.sign(NAME, OLD_HASH))
    assert A.has_signed(NAME, OLD_HASH, both) and B.has_signed(NAME, OLD_HASH, both)
    assert not C.has_signed(NAME, OLD_HASH, both)
    assert not A.has_signed(NAME, NEW_HASH, both)
    assert not A.has_signed(NAME, OLD_HASH, None)
    # A v1 signature binds no version: signing again moves the unit to one.
    assert not A.has_signed(NAME, OLD_HASH, v1(A))
    assert A.has_signed(NAME, OLD_HASH, v1(B) + " " + A.sign(NAME, OLD_HASH))


# ----------------------------------------------------------------------------- the agent's plan


def desired(signature: str | None, text: str = OLD) -> dict[str, DesiredUnit]:
    return {NAME: DesiredUnit(NAME, content_hash(text), DesiredState.LAUNCHED, text, signature)}


def running(text: str = NEW) -> dict[str, ObservedUnit]:
    return {NAME: ObservedUnit(NAME, content_hash(text), "loaded", "active", "running", True)}


def test_plan_records_the_version_of_what_it_accepts() -> None:
    decided = plan(desired(A.sign_at(NAME, OLD_HASH, 7)), {}, TRUSTED, policy=Policy(now=NOW))
    assert decided.versions == {NAME: 7} and decided.rejected == {}
    assert decided.actions == [WriteUnit(NAME, OLD_HASH, OLD), StartUnit(NAME)]
    # Without trusted keys nothing is verified, and no version recorded.
    assert plan(desired(None), {}).versions == {}


@pytest.mark.parametrize(
    ("case", "signature", "policy", "why"),
    [
        ("an older version", A.sign_at(NAME, OLD_HASH, 7), Policy({NAME: 8}, now=NOW), "rollback"),
        (
            "from the future",
            A.sign_at(NAME, OLD_HASH, NOW + FUTURE_SKEW_MS + 1),
            Policy(now=NOW),
            "future",
        ),
        (
            "one signature of two",
            A.sign_at(NAME, OLD_HASH, 9),
            Policy({NAME: 8}, 2, NOW),
            "too-few-signatures",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_signed_but_not_acceptable_leaves_what_runs_running(
    case: str, signature: str, policy: Policy, why: str
) -> None:
    decided = plan(desired(signature), running(), TRUSTED, policy=policy)
    assert decided.actions == [], case  # the newer version accepted before runs on
    assert {n: v.reason for n, (_, v) in decided.rejected.items()} == {NAME: why}
    assert decided.versions == {}
    # Not running: it is not started either.
    assert plan(desired(signature), {}, TRUSTED, policy=policy).actions == []


def test_a_forged_version_still_stops_what_runs() -> None:
    forged = A.sign_at(NAME, OLD_HASH, 7).replace(":7:", ":9:")
    decided = plan(desired(forged), running(), TRUSTED, policy=Policy({NAME: 8}, now=NOW))
    assert decided.actions == [StopUnit(NAME), RemoveUnit(NAME)]
    assert {n: v.reason for n, (_, v) in decided.rejected.items()} == {NAME: "wrong-signature"}


# ----------------------------------------------------------------------------- the store


def test_accepted_versions_only_rise_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent-m1.versions"
    store = AcceptedVersions(path)
    assert store.get() == {} and not path.exists()
    store.record({"a.service": 5, "b.service": 0})
    before = store.get()
    store.record({"a.service": 3, "c.service": 1})
    assert dict(store.get()) == {"a.service": 5, "b.service": 0, "c.service": 1}
    assert dict(before) == {"a.service": 5, "b.service": 0}  # a view is never changed
    assert json.loads(path.read_text()) == {
        "format": 1,
        "versions": {"a.service": 5, "b.service": 0, "c.service": 1},
    }
    assert dict(AcceptedVersions(path).get()) == dict(store.get())
    mtime = path.stat().st_mtime_ns
    store.record({"a.service": 5})  # nothing rose: not written again
    assert path.stat().st_mtime_ns == mtime
    assert dict(AcceptedVersions().get()) == {}  # in memory


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"format": 2, "versions": {}}',
        '{"format": 1, "versions": {"a.service": "5"}}',
        '{"format": 1, "versions": {"a.service": -1}}',
        '{"format": 1, "versions": {"a.service": true}}',
    ],
)
def test_a_versions_file_that_is_not_ours_stops_the_agent(tmp_path: Path, content: str) -> None:
    path = tmp_path / "v"
    path.write_text(content)
    with pytest.raises(ConfigError, match="remove it to forget them"):
        AcceptedVersions(path)


def test_a_versions_file_replaced_by_a_fifo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file|FIFO|fifo"):
        AcceptedVersions(path)


def test_when_the_store_cannot_be_written_nothing_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "v"
    store = AcceptedVersions(path)
    path.mkdir()  # something in its place that is not a file fleetpy replaces
    with pytest.raises(FileError, match="a directory"):
        store.record({"a.service": 1})
    assert store.get() == {}
