"""Which keys an agent trusts, and how that changes while it runs: the rules, pure.

Two sources. ROOT keys are the *.pub files of the host's trusted directory (an operator
puts them there; the agent rescans it, fleetpy.host_trust). A root key signs units, as
before, and signs the TRUST RECORD (P/trust/record, fleetpy.model.trust): the release
keys that may sign units too, each with an optional expiry, and the revoked key ids.
So a key is rotated or revoked from the CLI (`fleetpy keys trust|rotate|revoke`, with a
root key) and every agent follows within a second, without a restart.

A record is accepted only when a root key (not revoked by the record in force) signed it,
its release keys' ids match their public keys, and its serial is higher than the one in
force; the same serial is accepted only with the same body (anything else is a forged
counter). Serials are the writer's clock in ms, or the previous serial + 1 if that is
higher: a new record beats the old one whatever the clocks say, and no host compares a
serial with its own clock. Each host keeps the record it accepted on its own disk
(host_trust): deleting the record from etcd, or writing back an older one, un-revokes
nothing.

Expiries are the writer's clock, as is the record's `at`; a host judges only their
difference, on its own clock from when it accepted the record (host_trust), so a host
whose clock is off expires a key neither early nor late (late, at most, by how long it
took to receive the record).

A revoked key's signatures stop counting at once, an expired key's from its expiry: the
units it alone signed are refused from then on (`revoked-key`, `expired-key`). Whether a
unit already running with exactly that content is stopped is the agent's `on_revoke`
(config.OnRevoke, default keep: revoking a key must not become an outage; re-sign with the new
key and the unit is accepted again in place)."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .model.codecs import MalformedRecord
from .model.trust import ReleaseKey, SignedTrust, TrustRecord
from .unitfile.signing import Rejection, Signer, TrustedKey, TrustedKeys, Verdict, key_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DOMAIN = b"fleetpy trust record v1\x00"  # never a unit signature's message (signing.DOMAIN)


# The verdicts that mean "its key stopped counting", not "this content was never signed".
KEY_WITHDRAWN = frozenset({Rejection.REVOKED, Rejection.EXPIRED, Rejection.UNTRUSTED})


class Refusal(StrEnum):
    """Why a host refuses a trust record; it keeps the one in force."""

    MALFORMED = "malformed"
    NOT_ROOT = "not-root"  # not signed by one of this host's root keys
    FORGED = "wrong-signature"
    REVOKED_SIGNER = "revoked-root"  # signed by a root key the record in force revoked
    OLDER = "older"  # a serial below the one in force: a replay
    FORGED_SERIAL = "forged-serial"  # the serial in force with another body


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    detail: str


@dataclass(frozen=True)
class Accepted:
    envelope: SignedTrust
    record: TrustRecord


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def next_serial(current: TrustRecord | None, clock_ms: int) -> int:
    return max(clock_ms, 0 if current is None else current.serial + 1)


# A record's signature: "ed25519:<key id>:<base64url, unpadded>". Its own text, not a unit
# signature's (fleetpy.unitfile.signing owns that format, which may change on its own).
_RECORD_SIGNATURE = re.compile(r"ed25519:([0-9a-f]{16}):([A-Za-z0-9_-]{86})")


def sign_record(record: TrustRecord, signer: Signer) -> SignedTrust:
    body = record.body()
    raw = signer.private.sign(DOMAIN + body.encode("utf-8"))
    return SignedTrust(body, f"ed25519:{signer.key_id}:{encode_public(raw)}")


def parse_record_signature(text: str) -> tuple[str, bytes] | None:
    """(key id, raw signature) of a record's signature, or None if it is not one."""
    found = _RECORD_SIGNATURE.fullmatch(text)
    if found is None:
        return None
    raw = base64.urlsafe_b64decode(found.group(2) + "==")
    return (found.group(1), raw) if encode_public(raw) == found.group(2) else None


def public_raw(public: str) -> bytes:
    """The 32 bytes of a release key's `public` field (already format-checked)."""
    return base64.urlsafe_b64decode(public + "=")


def encode_public(raw: bytes) -> str:
    """base64url, unpadded (a raw public key, a raw signature)."""
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _load_public(public: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(public_raw(public))


def release_key(key: ReleaseKey) -> TrustedKey:
    """A release key of the record as a key that verifies units."""
    return TrustedKey(key.key_id, _load_public(key.public), f"trust record ({key.name or '-'})")


def open_record(
    raw: str | bytes, roots: Mapping[str, TrustedKey], in_force: TrustRecord | None
) -> Accepted | Refused:
    """The record in RAW if a root key signed it (and the record IN_FORCE did not revoke
    that root); its serial is judged by `admit`."""
    try:
        envelope = SignedTrust.from_json(raw if isinstance(raw, bytes) else raw.encode("utf-8"))
        record = TrustRecord.from_body(envelope.body)
        for key in record.keys:
            if key_id(_load_public(key.public)) != key.key_id:
                raise MalformedRecord(f"key {key.key_id} is not the id of its public key")
    except (MalformedRecord, ValueError, binascii.Error) as exc:
        return Refused(Refusal.MALFORMED, f"not a trust record fleetpy writes: {exc}")
    parsed = parse_record_signature(envelope.signature)
    if parsed is None:
        return Refused(Refusal.MALFORMED, "its signature is not in fleetpy's format")
    kid, signature = parsed
    root = roots.get(kid)
    if root is None:
        return Refused(Refusal.NOT_ROOT, f"signed by key {kid}, not a root key of this host")
    if in_force is not None and in_force.revocation(kid) is not None:
        return Refused(Refusal.REVOKED_SIGNER, f"signed by root key {kid}, which is revoked")
    from cryptography.exceptions import InvalidSignature

    try:
        root.public.verify(signature, DOMAIN + envelope.body.encode("utf-8"))
    except InvalidSignature:
        return Refused(Refusal.FORGED, f"the signature of root key {kid} does not match it")
    return Accepted(envelope, record)


def admit(offered: Accepted, in_force: Accepted | None) -> Accepted | Refused | None:
    """OFFERED (signature already checked) against the record IN_FORCE: the new record,
    a refusal, or None when it is the record in force itself."""
    serial = offered.record.serial
    if in_force is None or serial > in_force.record.serial:
        return offered
    if serial == in_force.record.serial:
        if offered.envelope.body == in_force.envelope.body:
            return None
        return Refused(
            Refusal.FORGED_SERIAL, f"serial {serial} is in force here with another content"
        )
    return Refused(
        Refusal.OLDER, f"serial {serial} is older than serial {in_force.record.serial} in force"
    )


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def effective(roots: TrustedKeys, record: TrustRecord | None, now: float) -> TrustedKeys:
    """The keys whose unit signatures count at NOW (on the record's writer's clock): the roots and the record's release
    keys, less those revoked or expired (their verdicts are in `retired`)."""
    keys: dict[str, TrustedKey] = dict(roots.keys)
    retired: dict[str, Verdict] = {}
    if record is not None:
        for release in record.keys:
            if release.expires is not None and release.expires <= now:
                retired[release.key_id] = Verdict(
                    Rejection.EXPIRED,
                    f"signed by key {release.key_id}, expired {_when(release.expires)}",
                )
                keys.pop(release.key_id, None)
            elif release.key_id not in keys:
                keys[release.key_id] = release_key(release)
        for revocation in record.revoked:
            why = f": {revocation.reason}" if revocation.reason else ""
            retired[revocation.key_id] = Verdict(
                Rejection.REVOKED,
                f"signed by key {revocation.key_id}, revoked {_when(revocation.at)}{why}",
            )
            keys.pop(revocation.key_id, None)
    return TrustedKeys(keys, roots.source, retired)


def next_expiry(record: TrustRecord | None, now: float) -> float | None:
    """When the next release key expires (the agent screens its units again then)."""
    if record is None:
        return None
    ahead = [k.expires for k in record.keys if k.expires is not None and k.expires > now]
    return min(ahead, default=None)


# ----------------------------------------------------------------------------- the CLI's


def with_key(
    record: TrustRecord | None, key: ReleaseKey, serial: int, by: str, at: float
) -> TrustRecord:
    """The record trusting KEY (replacing its earlier entry, e.g. a new expiry)."""
    keys = tuple(k for k in (record.keys if record else ()) if k.key_id != key.key_id)
    revoked = record.revoked if record else ()
    if any(r.key_id == key.key_id for r in revoked):
        from .errors import SigningError

        raise SigningError(f"key {key.key_id} is revoked: a revoked key is never trusted again")
    return TrustRecord(serial, (*keys, key), revoked, by, at)


def with_revocation(
    record: TrustRecord | None, kid: str, reason: str, serial: int, by: str, at: float
) -> TrustRecord:
    """The record revoking KID (and no longer listing it as a release key)."""
    from .model.trust import Revocation

    keys = tuple(k for k in (record.keys if record else ()) if k.key_id != kid)
    revoked = tuple(r for r in (record.revoked if record else ()) if r.key_id != kid)
    return TrustRecord(serial, keys, (*revoked, Revocation(kid, at, reason)), by, at)


def with_expiry(
    record: TrustRecord, kid: str, expires: float, serial: int, by: str, at: float
) -> TrustRecord:
    """The record with release key KID expiring at EXPIRES (rotation's grace period)."""
    keys = tuple(
        ReleaseKey(k.key_id, k.name, k.public, expires) if k.key_id == kid else k
        for k in record.keys
    )
    return TrustRecord(serial, keys, record.revoked, by, at)


__all__ = [
    "DOMAIN",
    "KEY_WITHDRAWN",
    "Accepted",
    "Refusal",
    "Refused",
    "admit",
    "effective",
    "encode_public",
    "next_expiry",
    "next_serial",
    "open_record",
    "sign_record",
    "with_expiry",
    "with_key",
    "with_revocation",
]
