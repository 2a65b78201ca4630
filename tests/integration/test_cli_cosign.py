"""`fleetpy sign` (a second operator's signature added to a submitted unit) and signed
versions as the CLI writes them, against a real etcd: re-signing moves the version
forward, signing the same contents again changes nothing, bad input writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpy.registry import Registry
from fleetpy.unitfile.signing import (
    Accepted,
    load_trusted_keys,
    parse_signatures,
    signature_version,
)

from support.cli_run import Run
from support.signing_cli import SERVICE, one_error_line, unit_file

pytestmark = pytest.mark.usefixtures("signing_env")


def keys(run: Run, *names: str) -> dict[str, str]:
    return {name: run("keys", "generate", name).stdout.split()[1] for name in names}


def test_a_second_operator_adds_a_signature_at_the_same_version(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    ids = keys(run, "alice", "bob")
    path = unit_file(tmp_path)
    assert run("start", "--no-block", "--sign", "alice", path).exit_code == 0
    first = registry.get_unit("web.service")
    assert first is not None and first.signature is not None
    version = signature_version(first.signature)

    signed = run("sign", "--key", "bob", path)
    assert signed.exit_code == 0, signed.output
    assert signed.stdout.startswith(f"Signed web.service: version {version}, keys ")
    after = registry.get_unit("web.service")
    assert after is not None and after.signature is not None
    assert (after.hash, after.desired) == (first.hash, first.desired)  # nothing else changed
    parsed = parse_signatures(after.signature)
    assert parsed is not None
    assert [(s.key_id, s.version) for s in parsed] == [
        (ids["alice"], version),
        (ids["bob"], version),
    ]
    trusted = load_trusted_keys(tmp_path / "home" / ".config" / "fleetpy" / "keys", print)
    assert trusted.verify("web.service", after.hash, after.signature, required=2) == Accepted(
        version, tuple(sorted(ids.values()))
    )

    # Again: nothing written.
    again = run("sign", "--key", "bob", path)
    assert again.exit_code == 0 and again.stdout.startswith("Already signed web.service")
    assert registry.get_unit("web.service") == after
    # start --sign with the same contents, by a key that signed them: kept as it is.
    assert run("start", "--no-block", "--sign", "alice", path).exit_code == 0
    assert registry.get_unit("web.service") == after
    # With --replace it is signed anew (as to run an older version again on purpose):
    # a newer version, by this key alone.
    assert run("start", "--no-block", "--replace", "--sign", "alice", path).exit_code == 0
    resigned = registry.get_unit("web.service")
    assert resigned is not None and resigned.hash == after.hash
    assert signature_version(resigned.signature) > version
    assert [s.key_id for s in parse_signatures(resigned.signature or "") or []] == [ids["alice"]]


def test_an_instance_is_signed_from_its_templates_file(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    keys(run, "alice", "bob")
    unit_file(tmp_path, "app@.service")
    instance = str(tmp_path / "units" / "app@1.service")  # no file: its template beside it
    assert run("start", "--no-block", "--sign", "alice", instance).exit_code == 0
    assert run("sign", "--key", "bob", instance).exit_code == 0
    record = registry.get_unit("app@1.service")
    assert record is not None and len(parse_signatures(record.signature or "") or []) == 2


def test_a_new_version_is_signed_past_the_stored_one(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    keys(run, "alice")
    assert run("start", "--no-block", "--sign", "alice", unit_file(tmp_path)).exit_code == 0
    before = registry.get_unit("web.service")
    assert before is not None
    changed = unit_file(tmp_path, text=SERVICE.replace("1000", "2000"))
    assert run("start", "--no-block", "--replace", "--sign", "alice", changed).exit_code == 0
    after = registry.get_unit("web.service")
    assert after is not None and after.hash != before.hash
    assert signature_version(after.signature) > signature_version(before.signature)


def test_sign_refuses_what_it_cannot_vouch_for(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    keys(run, "alice", "bob")
    path = unit_file(tmp_path)
    db = unit_file(tmp_path, "db.service")
    assert run("submit", "--sign", "alice", path, db).exit_code == 0
    before = registry.get_unit("web.service")
    other = unit_file(tmp_path, "elsewhere/web.service", SERVICE.replace("1000", "3000"))
    db_before = registry.get_unit("db.service")

    cases = {
        "not the record's contents": (
            ("sign", "--key", "bob", other),
            "are not those of the submitted unit web.service",
        ),
        "a name without its file": (
            ("sign", "--key", "bob", "web.service"),
            "give the file's path",
        ),
        "not submitted": (
            ("sign", "--key", "bob", unit_file(tmp_path, "new.service")),
            "unit new.service is not submitted",
        ),
        "no key": (("sign", path), "no signing key"),
        "a key that is not there": (("sign", "--key", "carol", path), "no private key"),
        "one good, one bad: nothing written": (
            ("sign", "--key", "bob", db, other),
            "are not those of",
        ),
        "the same unit twice, two contents": (
            ("sign", "--key", "bob", path, other),
            "given twice with different contents",
        ),
    }
    for case, (args, message) in cases.items():
        line = one_error_line(run(*args))
        assert message in line, (case, line)
        assert registry.get_unit("web.service") == before, case
        assert registry.get_unit("db.service") == db_before, case
    assert registry.get_unit("new.service") is None


def test_a_signature_from_before_versions_is_signed_again(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    """A unit signed before versions (v1) is moved to a version by signing it again,
    even by the key that signed it: from then on hosts protect it from rollback."""
    from fleetpy.model.changes import UnitChange
    from fleetpy.states import DesiredState
    from fleetpy.unitfile.signing import format_signature, load_signer, message
    from fleetpy.unitfile.unit import content_hash, parse_unit

    keys(run, "alice")
    alice = load_signer("alice", tmp_path / "home" / ".config" / "fleetpy" / "keys", print)
    text = parse_unit(SERVICE, "web.service").serialize()
    digest = content_hash(text)
    old = format_signature(alice.key_id, alice.private.sign(message("web.service", digest)))
    registry.change_units(
        [UnitChange("web.service", DesiredState.LAUNCHED, text, digest, signature=old)]
    )
    assert run("start", "--no-block", "--sign", "alice", unit_file(tmp_path)).exit_code == 0
    record = registry.get_unit("web.service")
    assert record is not None and record.hash == digest
    assert signature_version(record.signature) > 0
