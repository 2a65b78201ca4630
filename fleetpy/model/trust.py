"""The trust record (P/trust/record): which release keys, beyond the root keys each host
holds in its trusted directory, sign units, until when, and which keys are revoked. It
is signed by a root key (fleetpy.trust checks it and has the rules); here, its fields and
their JSON only.

Stored as an envelope {"v", "body", "signature"}: `body` is the record's own JSON text,
kept as the exact bytes that were signed (re-serializing could change them), and the
signature is a root key's over it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .codecs import MalformedRecord, dumps, json_object, read_record, typed_field, versioned_json

KEY_ID = re.compile(r"[0-9a-f]{16}")
PUBLIC_RAW = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url unpadded
MAX_RECORD_BYTES = 64 * 1024
MAX_ENTRIES = 256  # keys and revocations each: a record is read by every agent


@dataclass(frozen=True)
class ReleaseKey:
    """A key that may sign units, trusted through the record."""

    key_id: str
    name: str
    public: str  # the raw ed25519 public key, base64url unpadded
    expires: float | None = None  # seconds since the epoch; None: never

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "name": self.name,
            "public": self.public,
            "expires": self.expires,
        }


@dataclass(frozen=True)
class Revocation:
    key_id: str
    at: float  # when it was revoked (seconds since the epoch)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.key_id, "at": self.at, "reason": self.reason}


@dataclass(frozen=True)
class TrustRecord:
    serial: int  # only moves forward: each host refuses a record older than its last
    keys: tuple[ReleaseKey, ...] = ()
    revoked: tuple[Revocation, ...] = ()
    by: str = ""  # who wrote it (user@host)
    at: float = 0.0  # when (seconds since the epoch)

    def body(self) -> str:
        """The record's JSON text, the bytes a root key signs."""
        return dumps(
            {
                "serial": self.serial,
                "keys": [key.to_dict() for key in self.keys],
                "revoked": [revocation.to_dict() for revocation in self.revoked],
                "by": self.by,
                "at": self.at,
            }
        )

    def key(self, key_id: str) -> ReleaseKey | None:
        return next((key for key in self.keys if key.key_id == key_id), None)

    def revocation(self, key_id: str) -> Revocation | None:
        return next((r for r in self.revoked if r.key_id == key_id), None)

    @classmethod
    def from_body(cls, body: str) -> TrustRecord:
        data = json_object(body.encode("utf-8"))
        serial = typed_field(data, "serial", int)
        if isinstance(serial, bool) or serial < 1:
            raise MalformedRecord("field 'serial' is not a positive integer")
        keys = tuple(_release_key(item) for item in _entries(data, "keys"))
        revoked = tuple(_revocation(item) for item in _entries(data, "revoked"))
        for what, ids in (
            ("key", [k.key_id for k in keys]),
            ("revocation", [r.key_id for r in revoked]),
        ):
            if len(set(ids)) != len(ids):
                raise MalformedRecord(f"a {what} is listed twice")
        return cls(
            serial,
            keys,
            revoked,
            typed_field(data, "by", str, ""),
            float(typed_field(data, "at", (int, float), 0.0)),
        )


@dataclass(frozen=True)
class SignedTrust:
    """The envelope as stored: the body text and a root key's signature of it."""

    body: str
    signature: str

    def to_json(self) -> str:
        return versioned_json({"body": self.body, "signature": self.signature})

    @classmethod
    def from_json(cls, raw: bytes) -> SignedTrust:
        if len(raw) > MAX_RECORD_BYTES:
            raise MalformedRecord(f"larger than {MAX_RECORD_BYTES} bytes")
        data = read_record(raw)
        return cls(typed_field(data, "body", str), typed_field(data, "signature", str))


def _entries(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = typed_field(data, name, list, [])
    if len(items) > MAX_ENTRIES:
        raise MalformedRecord(f"more than {MAX_ENTRIES} {name}")
    if not all(isinstance(item, dict) for item in items):
        raise MalformedRecord(f"an entry of {name!r} is not an object")
    return items


def _key_id(item: dict[str, Any]) -> str:
    kid: str = typed_field(item, "id", str)
    if not KEY_ID.fullmatch(kid):
        raise MalformedRecord(f"{kid[:40]!r} is not a key id")
    return kid


def _time(item: dict[str, Any], name: str, default: Any) -> float | None:
    value = typed_field(item, name, (int, float), default)
    if isinstance(value, bool) or (value is not None and not 0 <= value < 1e11):
        raise MalformedRecord(f"field {name!r} is not a time")
    return None if value is None else float(value)


def _release_key(item: dict[str, Any]) -> ReleaseKey:
    public = typed_field(item, "public", str)
    if not PUBLIC_RAW.fullmatch(public):
        raise MalformedRecord("field 'public' is not a raw ed25519 public key")
    name = typed_field(item, "name", str, "")
    if len(name) > 64 or not name.isprintable():
        raise MalformedRecord("field 'name' is not a key name")
    return ReleaseKey(_key_id(item), name, public, _time(item, "expires", None))


def _revocation(item: dict[str, Any]) -> Revocation:
    reason = typed_field(item, "reason", str, "")
    if len(reason) > 200 or not reason.isprintable():
        raise MalformedRecord("field 'reason' is not one line")
    at = _time(item, "at", 0.0)
    return Revocation(_key_id(item), 0.0 if at is None else at, reason)


def pretty(record: TrustRecord) -> str:
    """The record as indented JSON, for `fleetpy keys trusted -o json`."""
    return json.dumps(json.loads(record.body()), indent=2, sort_keys=True)


@dataclass(frozen=True)
class TrustEvent:
    """The trust record was written (its raw value) or deleted (None)."""

    raw: str | None
