"""Signed units: ed25519 keys, signatures over (unit name, content hash, version), and
checking them.

A client with a private key signs each unit it submits; an agent configured with trusted
public keys runs only units whose signature one of them made for exactly that unit name
and content hash, and whose text hashes to that hash. Whoever can write to etcd but holds
no trusted private key can then neither add a unit nor swap a signed unit's contents.

A signature also binds a version, which only moves forward per unit name: the signing
time in milliseconds, but never less than the version already in etcd plus one (so a
re-sign moves forward even from a client whose clock is behind). An agent keeps the
highest version it accepted per unit name (fleetpy.accepted_versions) and refuses older
ones (`rollback`), and versions more than FUTURE_SKEW_MS ahead of its clock (`future`),
so a replayed older signed version never runs again. Signatures made before versions
(v1: no version in the text) verify as version 0.

Key files, in a key directory (the CLI's keys_dir setting):
  NAME.key   the private key: PEM PKCS#8, no passphrase, mode 0600 (refused if group- or
             world-readable)
  NAME.pub   the public key: PEM SubjectPublicKeyInfo; copy it into agents' trusted-key
             directories
A key's id is the first 16 hex digits of the sha256 of its raw 32-byte public key.

A signature is stored as text: "ed25519:<key id>:<version>:<base64url signature,
unpadded>" (v1: "ed25519:<key id>:<signature>"). A unit may carry several (one text,
separated by single spaces, at most MAX_SIGNATURES): an agent's policy says how many
distinct trusted keys must have signed the same version (`signatures_required`).

Public API:
  generate_key(keys_dir, name) -> KeyInfo
  list_keys(keys_dir) -> list[KeyInfo]
  load_signer(spec, keys_dir, warn) -> Signer          spec: a key name, or a path (with '/')
  load_trusted_keys(directory, warn) -> TrustedKeys    every *.pub in the directory
  TrustedKeys.check(name, content_hash, text, signature, ...) -> Verdict | Accepted
  Signer.sign(name, content_hash, after) -> str          a signature at a version > after
  Signer.cosign(name, content_hash, signatures) -> str   the set with this key's added
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, FileError, SigningError
from ..files import display_path, read_regular_file
from .unit import content_hash as hash_of

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported where keys are used, not with this module: every CLI command
# imports it, and most never sign (it costs tens of milliseconds).

SCHEME = "ed25519"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
# The signed message starts with a fixed label so a signature made here can never be
# passed off as a signature over some other kind of data signed with the same key (or
# the other way round), and a new message format can get a new label. The unit name is
# part of the message so a signed content cannot be moved under another name; NUL
# separates the fields because neither a unit name nor a hex digest can contain one.
DOMAIN = b"fleetpy unit signature v1\x00"
# v2 binds the version too: a v1 signature can never be passed off as a v2 one.
DOMAIN_V2 = b"fleetpy unit signature v2\x00"
MAX_KEY_FILE_BYTES = 16 * 1024
MAX_SIGNATURE_CHARS = 200  # "ed25519:" + 16 + ":" + 18 + ":" + 86 is 130; more is not ours
MAX_SIGNATURES = 8  # in one unit's set: more is not ours (2-of-3 needs 3)
MAX_VERSION = 10**18 - 1  # 18 digits: milliseconds for another 31 million years
# How far ahead of an agent's clock a version may be: signers' clocks drift.
FUTURE_SKEW_MS = 5 * 60 * 1000
_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIG_B64 = re.compile(r"[A-Za-z0-9_-]{86}")
_VERSION = re.compile(r"0|[1-9][0-9]{0,17}")

Warn = Callable[[str], None]


class Rejection(StrEnum):
    """Why an agent refuses a unit; the value is what `list-units` shows as SUB."""

    UNSIGNED = "unsigned"
    CONTENT = "content-mismatch"  # the text does not hash to the signed hash
    MALFORMED = "bad-signature"  # not a signature in fleetpy's format
    UNTRUSTED = "untrusted-key"  # signed by a key this machine does not trust
    FORGED = "wrong-signature"  # a trusted key id, but the signature does not verify
    REVOKED = "revoked-key"  # signed by a key the trust record revoked (fleetpy.trust)
    EXPIRED = "expired-key"  # signed by a key past its expiry in the trust record
    ROLLBACK = "rollback"  # older than the version this machine accepted already
    FUTURE = "future"  # a version further ahead of this machine's clock than FUTURE_SKEW_MS
    TOO_FEW = "too-few-signatures"  # fewer distinct trusted keys than the policy requires


# Refusals of a unit that trusted keys did sign, only not (yet) acceptable: whatever
# version of it runs was accepted before, and keeps running (nothing that should stops).
HOLDING = frozenset({Rejection.ROLLBACK, Rejection.FUTURE, Rejection.TOO_FEW})


@dataclass(frozen=True)
class Verdict:
    """A refused unit: the short reason and the one-line explanation."""

    reason: Rejection
    detail: str


@dataclass(frozen=True)
class Accepted:
    """A unit that may run: the version its signatures bind, and the keys that signed it."""

    version: int
    key_ids: tuple[str, ...]


@dataclass(frozen=True)
class Signature:
    """One parsed signature; version None: a v1 signature, which binds no version."""

    key_id: str
    raw: bytes = field(repr=False)
    version: int | None = None

    @property
    def level(self) -> int:
        """Its version for ordering: a v1 signature counts as version 0."""
        return self.version or 0

    def text(self) -> str:
        return format_signature(self.key_id, self.raw, self.version)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    key_id: str  # "" when the key files cannot be read
    public_path: Path
    private_path: Path
    has_private: bool
    problem: str = ""  # why the key could not be read, if it could not


def message(name: str, content_hash: str, version: int | None = None) -> bytes:
    """The bytes a unit's signature covers (version None: the v1 message)."""
    body = name.encode("utf-8") + b"\x00" + content_hash.encode("ascii")
    if version is None:
        return DOMAIN + body
    return DOMAIN_V2 + body + b"\x00" + str(version).encode("ascii")


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def format_signature(kid: str, raw: bytes, version: int | None = None) -> str:
    encoded = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    return f"{SCHEME}:{kid}:{encoded}" if version is None else f"{SCHEME}:{kid}:{version}:{encoded}"


def parse_signature(text: str) -> Signature | None:
    """One signature, or None if `text` is not a signature fleetpy writes."""
    if len(text) > MAX_SIGNATURE_CHARS:
        return None
    parts = text.split(":")
    if len(parts) not in (3, 4) or parts[0] != SCHEME or not _KEY_ID.fullmatch(parts[1]):
        return None
    version = None
    if len(parts) == 4:
        if not _VERSION.fullmatch(parts[2]):
            return None
        version = int(parts[2])
    encoded = parts[-1]
    if not _SIG_B64.fullmatch(encoded):
        return None
    try:
        raw = base64.urlsafe_b64decode(encoded + "==")
    except (binascii.Error, ValueError):
        return None
    parsed = Signature(parts[1], raw, version)
    # One text per signature: the last character's two spare bits must be zero.
    return parsed if parsed.text() == text else None


def parse_signatures(text: str) -> list[Signature] | None:
    """A unit's signatures (one or more, separated by single spaces), or None if any
    piece is not one fleetpy writes, or there are more than MAX_SIGNATURES."""
    pieces = text.split(" ")
    if len(pieces) > MAX_SIGNATURES:
        return None
    parsed = [parse_signature(piece) for piece in pieces]
    return None if any(p is None for p in parsed) else [p for p in parsed if p is not None]


def signature_key_id(text: str | None) -> str | None:
    """The key id of a unit's (first) signature."""
    ids = signature_key_ids(text)
    return ids[0] if ids else None


def signature_key_ids(text: str | None) -> list[str]:
    parsed = None if text is None else parse_signatures(text)
    return [] if parsed is None else [s.key_id for s in parsed]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signature_version(text: str | None, now: int | None = None) -> int:
    """The highest version among a unit's signatures (0: none, or v1 only), checked
    against nothing: what a signer must go past. A version further ahead of `now` than
    FUTURE_SKEW_MS is ignored: no agent accepts it, and taking it would push every
    later signature into the future too."""
    parsed = None if text is None else parse_signatures(text)
    limit = (now_ms() if now is None else now) + FUTURE_SKEW_MS
    return max((s.level for s in parsed or () if s.level <= limit), default=0)


# ----------------------------------------------------------------------------- key files


def keys_directory(keys_dir: str | os.PathLike[str]) -> Path:
    return Path(os.path.expanduser(os.fspath(keys_dir)))


def _check_name(name: str) -> str:
    if not _KEY_NAME.fullmatch(name):
        raise SigningError(
            f"invalid key name {name!r}: letters, digits and _.- (at most 64, not starting "
            "with . or -)"
        )
    return name


def generate_key(keys_dir: str | os.PathLike[str], name: str) -> KeyInfo:
    """A new key pair NAME.key (0600) and NAME.pub in keys_dir; never overwrites either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _check_name(name)
    directory = keys_directory(keys_dir)
    private_path = directory / f"{name}{PRIVATE_SUFFIX}"
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise SigningError(f"key {name} exists already ({display_path(path)}); not replaced")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SigningError(
            f"cannot create key directory {display_path(directory)}: {exc.strerror or exc}"
        ) from None
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except SigningError:
        os.unlink(private_path)  # nothing half-made: a key without its .pub is no use
        raise
    return KeyInfo(name, key_id(private.public_key()), public_path, private_path, True)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` (O_EXCL: never follows or replaces anything) with `mode`, fsynced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise SigningError(f"cannot create {display_path(path)}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, mode)  # the umask must not loosen or tighten it
        os.write(fd, data)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise SigningError(f"cannot write {display_path(path)}: {exc.strerror or exc}") from None
    os.close(fd)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path, limit=MAX_KEY_FILE_BYTES, what=what)
    except FileError as exc:
        raise SigningError(str(exc)) from None


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    data = _read_key_file(path, "public key")
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(
            f"{display_path(path)} is not a PEM public key (make keys with `fleetpy keys generate`)"
        ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise SigningError(f"{display_path(path)} is not an ed25519 public key")
    return public


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A private key file: refused when others than its owner may read it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise SigningError(
            f"cannot read private key {display_path(path)}: {exc.strerror or exc}"
        ) from None
    if stat.S_ISREG(mode) and mode & 0o077:
        raise SigningError(
            f"private key {display_path(path)} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    data = _read_key_file(path, "private key")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(
            f"private key {display_path(path)} is encrypted; fleetpy's keys have no passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(f"{display_path(path)} is not a PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningError(f"{display_path(path)} is not an ed25519 private key")
    return private


def list_keys(keys_dir: str | os.PathLike[str]) -> list[KeyInfo]:
    """The keys in keys_dir (by name), whether their private half is there, and their id."""
    directory = keys_directory(keys_dir)
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SigningError(
            f"cannot list key directory {display_path(directory)}: {exc.strerror or exc}"
        ) from None
    names = sorted(
        {
            entry[: -len(suffix)]
            for entry in entries
            for suffix in (PRIVATE_SUFFIX, PUBLIC_SUFFIX)
            if entry.endswith(suffix) and _KEY_NAME.fullmatch(entry[: -len(suffix)])
        }
    )
    found = []
    for name in names:
        public_path = directory / f"{name}{PUBLIC_SUFFIX}"
        private_path = directory / f"{name}{PRIVATE_SUFFIX}"
        has_private = private_path.exists()
        kid, problem = "", ""
        try:
            if public_path.exists():
                kid = key_id(load_public_key(public_path))
            else:
                kid = key_id(load_private_key(private_path).public_key())
        except SigningError as exc:
            problem = str(exc)
        found.append(KeyInfo(name, kid, public_path, private_path, has_private, problem))
    return found


# ----------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public: Ed25519PublicKey = field(compare=False)
    source: str  # the file it came from, for messages


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys whose signatures are accepted; several at once while keys rotate."""

    keys: Mapping[str, TrustedKey] = field(default_factory=dict)  # key id -> key
    source: str = ""  # the directory they came from
    # Keys whose signatures no longer count, and why (revoked, expired: fleetpy.trust).
    retired: Mapping[str, Verdict] = field(default_factory=dict)  # key id -> verdict

    def verify(
        self, name: str, content_hash: str, signature: str | None, required: int = 1
    ) -> Verdict | Accepted:
        """Accepted when at least `required` distinct trusted keys signed (name,
        content_hash) at one version: the highest such version. A signature that does
        not verify, or by a key not trusted here, counts for nothing (the others may
        still be enough); when none counts, the first one's reason is the verdict."""
        if signature is None:
            return Verdict(Rejection.UNSIGNED, "not signed")
        parsed = parse_signatures(signature)
        if parsed is None:
            return Verdict(Rejection.MALFORMED, "the signature is not in fleetpy's format")
        from cryptography.exceptions import InvalidSignature

        signers: dict[int, set[str]] = {}  # version -> distinct trusted keys that signed it
        refused: Verdict | None = None
        withdrawn: Verdict | None = None  # a signature by a key revoked or expired since
        for sig in parsed:
            key = self.keys.get(sig.key_id)
            if key is None and sig.key_id in self.retired:
                withdrawn = withdrawn or self.retired[sig.key_id]
                continue
            if key is None:
                refused = refused or Verdict(
                    Rejection.UNTRUSTED, f"signed by key {sig.key_id}, which is not trusted"
                )
                continue
            try:
                key.public.verify(sig.raw, message(name, content_hash, sig.version))
            except InvalidSignature:
                refused = refused or Verdict(
                    Rejection.FORGED,
                    f"the signature of key {sig.key_id} does not match this unit name, "
                    "content and version",
                )
                continue
            signers.setdefault(sig.level, set()).add(sig.key_id)
        enough = [version for version, kids in signers.items() if len(kids) >= required]
        if enough:
            version = max(enough)
            return Accepted(version, tuple(sorted(signers[version])))
        if withdrawn is not None:  # it would have counted: the agent's on_revoke decides
            return withdrawn
        if not signers:
            assert refused is not None
            return refused
        most = max(signers.values(), key=len)
        return Verdict(
            Rejection.TOO_FEW,
            f"signed by {len(most)} trusted key{'s' if len(most) != 1 else ''} "
            f"({', '.join(sorted(most))}); this machine requires {required}",
        )

    def check(
        self,
        name: str,
        content_hash: str,
        text: str,
        signature: str | None,
        *,
        required: int = 1,
        accepted: int | None = None,
        now: int | None = None,
    ) -> Verdict | Accepted:
        """Accepted when the unit may run: enough trusted signatures (`verify`), the text
        is the signed one, its version is not ahead of `now` (ms; default: this clock)
        by more than FUTURE_SKEW_MS, and not older than the version `accepted` before."""
        verdict = self.verify(name, content_hash, signature, required)
        if isinstance(verdict, Verdict):
            return verdict
        # Checked after the signature so an unsigned unit is reported as unsigned; both
        # must hold: a valid signature of hash H says nothing about a text that is not H.
        if hash_of(text) != content_hash:
            return Verdict(
                Rejection.CONTENT, f"its text does not hash to the signed hash {content_hash[:7]}"
            )
        clock = now_ms() if now is None else now
        if verdict.version > clock + FUTURE_SKEW_MS:
            return Verdict(
                Rejection.FUTURE,
                f"version {verdict.version} is {(verdict.version - clock) // 1000} s ahead of "
                f"this machine's clock (at most {FUTURE_SKEW_MS // 1000} s)",
            )
        if accepted is not None and verdict.version < accepted:
            return Verdict(
                Rejection.ROLLBACK,
                f"version {verdict.version} is older than version {accepted}, "
                "accepted here before (a deliberate rollback is a new signature)",
            )
        return verdict


def load_trusted_keys(directory: str | os.PathLike[str], warn: Warn) -> TrustedKeys:
    """Every *.pub in `directory`; a file that is not an ed25519 public key gets one
    warning and is skipped. A missing directory is an error (a typo must not leave a
    machine that runs nothing, silently)."""
    path = keys_directory(directory)
    keys = _public_keys(path, warn)
    if not keys:
        warn(f"no usable public key in {display_path(path)}: every unit will be rejected")
    return TrustedKeys(keys, str(path))


def _public_keys(path: Path, warn: Warn) -> dict[str, TrustedKey]:
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(
            f"cannot read trusted keys directory {display_path(path)}: {exc.strerror or exc}"
        ) from None
    keys: dict[str, TrustedKey] = {}
    for entry in entries:
        if not entry.endswith(PUBLIC_SUFFIX):
            continue
        file = path / entry
        try:
            public = load_public_key(file)
        except SigningError as exc:
            warn(f"trusted key skipped: {exc}")
            continue
        kid = key_id(public)
        keys.setdefault(kid, TrustedKey(kid, public, str(file)))
    return keys


# ----------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class Signer:
    """A private key that signs units, and the keys whose signatures it may extend: a
    unit already in etcd (or a template an instance is made from) is re-signed only if
    one of the signer's own keys signed it, so a record forged in etcd is never signed."""

    name: str
    key_id: str
    private: Ed25519PrivateKey = field(compare=False, repr=False)
    own: TrustedKeys = field(default_factory=TrustedKeys)

    def sign(self, name: str, content_hash: str, after: int = 0) -> str:
        """A signature of (name, content_hash) at a version past `after` (the version
        already stored: signature_version): now in ms, or after + 1 if that is later."""
        return self.sign_at(name, content_hash, max(now_ms(), after + 1))

    def sign_at(self, name: str, content_hash: str, version: int) -> str:
        if not 0 <= version <= MAX_VERSION:
            raise SigningError(f"cannot sign {name} at version {version}: out of range")
        raw = self.private.sign(message(name, content_hash, version))
        return format_signature(self.key_id, raw, version)

    def has_signed(self, name: str, content_hash: str, signature: str | None) -> bool:
        """Does `signature` (a unit's set) hold a valid signature of this key for
        (name, content_hash) that binds a version? A v1 one does not count: signing again
        moves the unit to a version, which agents then protect from rollback."""
        parsed = None if signature is None else parse_signatures(signature)
        versioned = " ".join(s.text() for s in parsed or () if s.version is not None)
        mine = TrustedKeys({k: v for k, v in self.own.keys.items() if k == self.key_id})
        return isinstance(mine.verify(name, content_hash, versioned or None), Accepted)

    def cosign(self, name: str, content_hash: str, signature: str | None) -> str:
        """`signature` (a unit's set) with this key's signature of (name, content_hash)
        added at the set's version (or a new version, for an unsigned unit); a signature
        of this key already there is replaced. Raises SigningError when the set is not
        fleetpy's, would hold too many, or its version is in the future."""
        parsed = [] if signature is None else parse_signatures(signature)
        if parsed is None:
            raise SigningError(
                f"cannot add a signature to {name}: its signatures are not fleetpy's"
            )
        if not parsed:
            return self.sign(name, content_hash)
        version = max(s.level for s in parsed)
        if version > now_ms() + FUTURE_SKEW_MS:
            raise SigningError(
                f"cannot add a signature to {name}: its version {version} is in the future"
            )
        others = [s.text() for s in parsed if s.key_id != self.key_id]
        if len(others) >= MAX_SIGNATURES:
            raise SigningError(
                f"cannot add a signature to {name}: it has {len(others)} already "
                f"(at most {MAX_SIGNATURES})"
            )
        return " ".join([*others, self.sign_at(name, content_hash, version)])


def _private_path(spec: str, keys_dir: str | os.PathLike[str]) -> Path:
    """A key name (in keys_dir), or a path to a private key file (it contains a '/')."""
    if "/" in spec:
        return Path(os.path.expanduser(spec))
    if spec.endswith(PRIVATE_SUFFIX):
        spec = spec[: -len(PRIVATE_SUFFIX)]
    return keys_directory(keys_dir) / f"{_check_name(spec)}{PRIVATE_SUFFIX}"


def load_signer(spec: str, keys_dir: str | os.PathLike[str], warn: Warn) -> Signer:
    """The signing key `spec` names; its own public keys are those of keys_dir."""
    path = _private_path(spec, keys_dir)
    if not os.path.lexists(path):
        raise SigningError(
            f"no private key {display_path(path)} (`fleetpy keys list` shows the keys; "
            "`fleetpy keys generate NAME` makes one)"
        )
    private = load_private_key(path)
    public = private.public_key()
    kid = key_id(public)
    own: dict[str, TrustedKey] = {kid: TrustedKey(kid, public, str(path))}
    directory = keys_directory(keys_dir)
    if directory.is_dir():
        for kid_other, key in _public_keys(directory, warn).items():
            own.setdefault(kid_other, key)
    name = path.name.removesuffix(PRIVATE_SUFFIX)
    return Signer(name, kid, private, TrustedKeys(own, str(directory)))


__all__ = [
    "FUTURE_SKEW_MS",
    "HOLDING",
    "Accepted",
    "KeyInfo",
    "Rejection",
    "Signature",
    "Signer",
    "TrustedKey",
    "TrustedKeys",
    "Verdict",
    "generate_key",
    "key_id",
    "list_keys",
    "load_private_key",
    "load_public_key",
    "load_signer",
    "load_trusted_keys",
    "message",
    "now_ms",
    "parse_signature",
    "parse_signatures",
    "signature_key_id",
    "signature_key_ids",
    "signature_version",
]
