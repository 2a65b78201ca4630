"""The CLI's signing side against a real etcd: keys generate/list, --sign and the
sign_key setting, and every bad key as one line that writes nothing.

Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/pure/test_cli_signing.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fleetpy.model.records import UnitState
from fleetpy.registry import Registry
from fleetpy.unitfile.signing import Accepted, load_trusted_keys, signature_version

from support.cli_run import Run
from support.signing_cli import SERVICE, one_error_line, unit_file

# No FLEETPY_* setting, HOME and the working directory in tmp_path (support.signing_cli).
pytestmark = pytest.mark.usefixtures("signing_env")


def test_keys_generate_and_list(run: Run, tmp_path: Path) -> None:
    made = run("keys", "generate", "ops")
    assert made.exit_code == 0, made.output
    default_dir = tmp_path / "home" / ".config" / "fleetpy" / "keys"
    path, key_id = made.stdout.split()
    assert path == str(default_dir / "ops.pub") and len(key_id) == 16
    assert "already" in one_error_line(run("keys", "generate", "ops"))
    other = tmp_path / "other"
    assert run("--keys-dir", str(other), "keys", "generate", "next").exit_code == 0
    (default_dir / "next.pub").write_bytes((other / "next.pub").read_bytes())
    listed = run("keys", "list")
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "ID", "PRIVATE"]
    assert rows[1][0] == "next" and rows[1][2] == "no"
    assert rows[2] == ["ops", key_id, "yes"]
    data = json.loads(run("keys", "list", "-o", "json").stdout)
    assert [(k["name"], k["private"]) for k in data] == [("next", False), ("ops", True)]


def test_sign_option_and_setting_sign_what_is_written(
    run: Run, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id = run("keys", "generate", "ops").stdout.split()[1]
    assert run("submit", "--sign", "ops", unit_file(tmp_path)).exit_code == 0
    record = registry.get_unit("web.service")
    assert record is not None and record.signature is not None
    assert record.signature.startswith(f"ed25519:{key_id}:")
    # The setting, from the environment; a key given by its path works too.
    keys = tmp_path / "home" / ".config" / "fleetpy" / "keys"
    monkeypatch.setenv("FLEETPY_SIGN_KEY", str(keys / "ops.key"))
    result = run("start", "--no-block", unit_file(tmp_path, "db.service"))
    assert result.exit_code == 0, result.output
    db = registry.get_unit("db.service")
    assert db is not None and db.signature is not None and key_id in db.signature


@pytest.mark.parametrize(
    ("setup", "key", "message"),
    [
        ("none", "absent", "no private key"),
        ("open", "ops", "accessible by group or others (mode 0644); chmod 600 it"),
        ("text", "junk", "is not a PEM private key"),
        ("none", "bad name", "invalid key name"),
    ],
)
def test_a_bad_key_is_one_line_and_writes_nothing(
    run: Run, registry: Registry, tmp_path: Path, setup: str, key: str, message: str
) -> None:
    keys = tmp_path / "home" / ".config" / "fleetpy" / "keys"
    if setup == "open":
        run("keys", "generate", "ops")
        os.chmod(keys / "ops.key", 0o644)
    elif setup == "text":
        keys.mkdir(parents=True)
        (keys / "junk.key").write_text("hello\n")
        os.chmod(keys / "junk.key", 0o600)
    for verb in ("submit", "load", "start"):
        result = run(verb, "--sign", key, unit_file(tmp_path))
        assert message in one_error_line(result), verb
    assert registry.list_units() == {}


def test_signing_by_name_needs_a_record_we_signed(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    run("keys", "generate", "ops")
    assert run("submit", unit_file(tmp_path)).exit_code == 0  # unsigned
    before = registry.get_unit("web.service")
    line = one_error_line(run("start", "--no-block", "--sign", "ops", "web.service"))
    assert "web.service is stored in etcd without a signature" in line
    assert "give the file's path instead of the name" in line
    assert registry.get_unit("web.service") == before
    # From its file it is signed (the contents are the operator's own).
    assert run("start", "--no-block", "--sign", "ops", unit_file(tmp_path)).exit_code == 0
    after = registry.get_unit("web.service")
    assert after is not None and after.signature is not None and after.hash == before.hash  # type: ignore[union-attr]


def test_replacing_a_signed_unit_needs_a_signature(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    key_id = run("keys", "generate", "ops").stdout.split()[1]
    assert run("start", "--no-block", "--sign", "ops", unit_file(tmp_path)).exit_code == 0
    before = registry.get_unit("web.service")
    changed = unit_file(tmp_path, text=SERVICE.replace("1000", "2000"))
    line = one_error_line(run("start", "--no-block", "--replace", changed))
    assert "web.service is signed and its replacement is not" in line and "--sign" in line
    assert registry.get_unit("web.service") == before
    assert run("start", "--no-block", "--replace", "--sign", "ops", changed).exit_code == 0
    after = registry.get_unit("web.service")
    assert after is not None and before is not None and after.hash != before.hash
    assert after.signature is not None and key_id in after.signature
    trusted = load_trusted_keys(tmp_path / "home" / ".config" / "fleetpy" / "keys", print)
    verdict = trusted.verify("web.service", after.hash, after.signature)
    assert isinstance(verdict, Accepted)
    # Signed past the version it replaces: agents that ran the old one accept it.
    assert verdict.version > signature_version(before.signature)


def test_list_units_shows_a_rejection(run: Run, registry: Registry) -> None:
    lease = registry.grant_lease(30)
    registry.report_states(
        [
            UnitState(
                "web.service",
                "m1",
                "not-loaded",
                "rejected",
                "unsigned",
                "ab" * 32,
                "not signed",
            )
        ],
        lease,
    )
    rows = [line.split() for line in run("list-units").stdout.splitlines()]
    assert rows == [
        ["UNIT", "MACHINE", "ACTIVE", "SUB"],
        ["web.service", "m1", "rejected", "unsigned"],
    ]
    (row,) = json.loads(run("list-units", "-o", "json").stdout)
    assert row["active"] == "rejected" and row["message"].startswith("not signed")
    shown = run("list-units", "--no-legend", "--fields", "unit,message").stdout
    assert shown.split(None, 1)[1].strip() == "not signed"
    registry.revoke_lease(lease)
