"""`fleetpy keys trust|rotate|revoke|trusted`: the trust record read, changed and signed
with a root key, written in one guarded transaction (fleetpy.trust has the rules).

The record in etcd is built upon only if a key of the operator's keys directory signed
it: the CLI never signs again what it only read from etcd (anyone with write access
could have put it there)."""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SigningError
from ..model.codecs import MalformedRecord
from ..model.trust import KEY_ID, ReleaseKey, SignedTrust, TrustRecord
from ..registry.roles import OperatorRegistry
from ..trust import (
    Refused,
    encode_public,
    next_serial,
    now_ms,
    open_record,
    sign_record,
    with_expiry,
    with_key,
    with_revocation,
)
from ..unitfile.signing import (
    PUBLIC_SUFFIX,
    Signer,
    TrustedKeys,
    Warn,
    key_id,
    keys_directory,
    list_keys,
    load_private_key,
    load_public_key,
)
from .drain import who

_SPAN = re.compile(r"(\d+)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?))?Z?")
MAX_SPAN = 10 * 365 * 86400  # ten years


def parse_when(text: str, what: str, now: float) -> float:
    """A time to come: a span from NOW (3600, 90m, 12h, 30d) or a UTC date (2027-01-31,
    2027-01-31T12:00Z)."""
    text = text.strip()
    span = _SPAN.fullmatch(text)
    date = _DATE.fullmatch(text)
    try:
        if span is not None:
            when = now + int(span.group(1)) * _UNIT[span.group(2)]
        elif date is not None:
            clock = date.group(2) or "00:00"
            parsed = time.strptime(
                f"{date.group(1)} {clock}",
                "%Y-%m-%d %H:%M:%S" if clock.count(":") == 2 else "%Y-%m-%d %H:%M",
            )
            when = float(calendar.timegm(parsed))
        else:
            raise ValueError
    except ValueError:
        raise SigningError(
            f"{what} {text!r}: expected a span (3600, 90m, 12h, 30d) or a UTC date "
            "(2027-01-31, 2027-01-31T12:00Z)"
        ) from None
    if not now < when <= now + MAX_SPAN:
        raise SigningError(f"{what} {text!r}: expected a time within the next ten years")
    return when


@dataclass(frozen=True)
class InForce:
    """The record in etcd, as its signer's key (a key of the keys directory) vouches."""

    record: TrustRecord | None
    signed_by: str  # "" when there is none
    mod_revision: int  # 0 when there is none


def read(registry: OperatorRegistry, own: TrustedKeys) -> InForce:
    """The record in etcd, checked against OWN: the keys of the operator's directory."""
    found = registry.trust_record()
    if found is None:
        raise SigningError("this etcd user may not read the trust record")
    _, raw, mod_revision = found
    if raw is None:
        return InForce(None, "", 0)
    opened = open_record(raw, own.keys, None)
    if isinstance(opened, Refused):
        raise SigningError(
            f"the trust record in etcd does not verify with the keys of "
            f"{own.source or 'your keys directory'} ({opened.detail}); nothing is "
            "built on it: add the .pub of the root key that signed it to your keys directory"
        )
    return InForce(opened.record, opened.envelope.signature.split(":")[1], mod_revision)


def _check_root(signer: Signer, in_force: InForce, warn: Warn) -> None:
    """Agents accept a record only from a root key of their trusted directory that the
    record in force did not revoke. A revoked key is refused here (every agent would refuse
    what it signs while the CLI said it was written). A key the record lists as signing
    units may still be a root key (`keys rotate ROOT NEW` lists ROOT with its expiry): the
    CLI cannot know the hosts' roots, so it warns, unless that key signed the record in
    force already."""
    record = in_force.record
    if record is None:
        return
    if record.revocation(signer.key_id) is not None:
        raise SigningError(
            f"--root {signer.name}: key {signer.key_id} is revoked in the trust record; "
            "agents refuse a record it signs"
        )
    if record.key(signer.key_id) is not None and signer.key_id != in_force.signed_by:
        warn(
            f"--root {signer.name}: key {signer.key_id} is listed in the trust record as a "
            "key that signs units; agents accept the record only if it is also a root key "
            "in their trusted directory"
        )


def _write(
    registry: OperatorRegistry,
    signer: Signer,
    change: Callable[[TrustRecord | None, int, str, float], TrustRecord],
    warn: Warn,
) -> TrustRecord:
    in_force = read(registry, signer.own)
    _check_root(signer, in_force, warn)
    record = change(in_force.record, next_serial(in_force.record, now_ms()), who(), time.time())
    envelope = sign_record(record, signer)
    try:  # what every agent will check: never write a record they would refuse
        SignedTrust.from_json(envelope.to_json().encode("utf-8"))
        TrustRecord.from_body(envelope.body)
    except MalformedRecord as exc:
        raise SigningError(f"the trust record would be refused by agents: {exc}") from None
    registry.put_trust_record(envelope.to_json(), in_force.mod_revision)
    return record


def release_key(spec: str, keys_dir: str | Path, expires: float | None) -> ReleaseKey:
    """A key to trust: a key name of the keys directory, or a path to a .pub file."""
    if "/" in spec or spec.endswith(PUBLIC_SUFFIX):
        path = Path(spec).expanduser()
        name = path.name.removesuffix(PUBLIC_SUFFIX)
        public = load_public_key(path)
    else:
        matches = [k for k in list_keys(keys_dir) if k.name == spec]
        if not matches:
            raise SigningError(
                f"no key {spec} in {keys_directory(keys_dir)} (a key name, or a path to a .pub)"
            )
        info = matches[0]
        name = info.name
        public = (
            load_public_key(info.public_path)
            if info.public_path.exists()
            else load_private_key(info.private_path).public_key()
        )
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return ReleaseKey(key_id(public), name, encode_public(raw), expires)


def key_ref(spec: str, keys_dir: str | Path) -> str:
    """A key id: given as one (16 hex digits), or a key's name or .pub path."""
    if KEY_ID.fullmatch(spec):
        return spec
    return release_key(spec, keys_dir, None).key_id


def _silent(message: str) -> None:
    pass


def trust(
    registry: OperatorRegistry, signer: Signer, key: ReleaseKey, warn: Warn = _silent
) -> tuple[TrustRecord, ReleaseKey]:
    """Let KEY sign units (again: a new expiry replaces the old one)."""
    if key.expires is not None and key.expires <= time.time():
        raise SigningError("the expiry is in the past")

    def change(record: TrustRecord | None, serial: int, by: str, at: float) -> TrustRecord:
        return with_key(record, key, serial, by, at)

    return _write(registry, signer, change, warn), key


def revoke(
    registry: OperatorRegistry, signer: Signer, kid: str, reason: str, warn: Warn = _silent
) -> TrustRecord:
    """Revoke KID from now on (for good: a revoked key is never trusted again)."""
    if kid == signer.key_id:
        raise SigningError(f"key {kid} signs this record: revoke a root key with another root key")

    def change(record: TrustRecord | None, serial: int, by: str, at: float) -> TrustRecord:
        if record is not None and record.revocation(kid) is not None:
            raise SigningError(f"key {kid} is revoked already")
        return with_revocation(record, kid, reason, serial, by, at)

    return _write(registry, signer, change, warn)


def rotate(
    registry: OperatorRegistry,
    signer: Signer,
    old: ReleaseKey,
    new: ReleaseKey,
    grace: float,
    warn: Warn = _silent,
) -> TrustRecord:
    """Trust NEW, and let OLD sign units only for GRACE seconds more (re-sign meanwhile:
    `fleetpy apply --sign NEW`). Both in one record, so agents never see one without the
    other."""
    if old.key_id == new.key_id:
        raise SigningError("the old and the new key are the same key")
    expires = time.time() + grace

    def change(record: TrustRecord | None, serial: int, by: str, at: float) -> TrustRecord:
        listed = record.key(old.key_id) if record is not None else None
        current = with_key(record, new, serial, by, at)
        if listed is None:  # a root key (or one not listed yet): its expiry goes in
            current = with_key(current, old, serial, by, at)
        return with_expiry(current, old.key_id, expires, serial, by, at)

    return _write(registry, signer, change, warn)


@dataclass(frozen=True)
class TrustRow:
    """One key of the record, as `fleetpy keys trusted` lists it."""

    key_id: str
    name: str
    state: str  # trusted, expired, revoked
    expires: float | None  # trusted, expired: the expiry; revoked: when
    reason: str
    serial: int


def rows(in_force: InForce, now: float) -> list[TrustRow]:
    record = in_force.record
    if record is None:
        return []
    found = [
        TrustRow(
            k.key_id,
            k.name,
            "expired" if k.expires is not None and k.expires <= now else "trusted",
            k.expires,
            "",
            record.serial,
        )
        for k in record.keys
    ]
    found += [
        TrustRow(r.key_id, "", "revoked", r.at, r.reason, record.serial) for r in record.revoked
    ]
    return found


__all__ = [
    "InForce",
    "TrustRow",
    "key_ref",
    "parse_when",
    "read",
    "release_key",
    "revoke",
    "rotate",
    "rows",
    "trust",
]
