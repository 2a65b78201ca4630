"""`fleetpy keys trust|rotate|revoke|trusted` against a real etcd: the trust record they
write (signed by the --root key, serial moving forward) and every bad input as one line
that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetpy.model.trust import TrustRecord
from fleetpy.registry import Registry
from fleetpy.trust import Accepted, open_record
from fleetpy.unitfile.signing import load_trusted_keys

from support.cli_run import Run
from support.signing_cli import one_error_line

pytestmark = pytest.mark.usefixtures("signing_env")


def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".config" / "fleetpy" / "keys"


def generate(run: Run, *names: str) -> dict[str, str]:
    ids = {}
    for name in names:
        made = run("keys", "generate", name)
        assert made.exit_code == 0, made.output
        ids[name] = made.stdout.split()[1]
    return ids


def in_force(registry: Registry, tmp_path: Path) -> tuple[TrustRecord | None, str | None]:
    found = registry.trust_record()
    assert found is not None
    _, raw, _ = found
    if raw is None:
        return None, None
    roots = load_trusted_keys(keys_dir(tmp_path), lambda m: None).keys
    opened = open_record(raw, roots, None)
    assert isinstance(opened, Accepted), opened
    return opened.record, raw


def test_trust_rotate_revoke_and_list(run: Run, registry: Registry, tmp_path: Path) -> None:
    ids = generate(run, "root", "v1", "v2")
    done = run("keys", "trust", "v1", "--root", "root", "--expires", "30d")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"Trusted key {ids['v1']} (v1) until ")
    first, _ = in_force(registry, tmp_path)
    assert first is not None and [k.key_id for k in first.keys] == [ids["v1"]]
    first_expiry = first.keys[0].expires
    assert first_expiry is not None

    rotated = run("keys", "rotate", "v1", "v2", "--root", "root", "--grace", "1h")
    assert rotated.exit_code == 0, rotated.output
    second, _ = in_force(registry, tmp_path)
    assert second is not None and second.serial > first.serial
    by_id = {k.key_id: k for k in second.keys}
    assert set(by_id) == {ids["v1"], ids["v2"]} and by_id[ids["v2"]].expires is None
    v1_expiry = by_id[ids["v1"]].expires
    assert v1_expiry is not None and v1_expiry < first_expiry  # the grace, not 30 days

    revoked = run("keys", "revoke", ids["v1"], "--root", "root", "--reason", "lost")
    assert revoked.exit_code == 0, revoked.output
    third, _ = in_force(registry, tmp_path)
    assert third is not None and third.serial > second.serial
    assert [k.key_id for k in third.keys] == [ids["v2"]]
    assert [(r.key_id, r.reason) for r in third.revoked] == [(ids["v1"], "lost")]

    table = run("keys", "trusted")
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0] == ["ID", "NAME", "STATE", "UNTIL", "SERIAL"]
    assert sorted((r[0], r[2]) for r in rows[1:]) == sorted(
        [(ids["v2"], "trusted"), (ids["v1"], "revoked")]
    )
    data = json.loads(run("keys", "trusted", "-o", "json").stdout)
    assert {d["id"]: d["state"] for d in data} == {ids["v2"]: "trusted", ids["v1"]: "revoked"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trust", "v1", "--root", "nope"), "no private key"),
        (("trust", "nope", "--root", "root"), "no key nope"),
        (("trust", "v1", "--root", "root", "--expires", "soon"), "--expires 'soon': expected"),
        (("trust", "v1", "--root", "root", "--expires", "2001-01-01"), "within the next ten"),
        (("revoke", "root", "--root", "root"), "revoke a root key with another root key"),
        (("rotate", "v1", "v1", "--root", "root"), "the same key"),
        (("trust", "v1", "--root", "root"), "is revoked: a revoked key is never trusted again"),
        (("revoke", "v1", "--root", "root"), "is revoked already"),
        (("trust", "root", "--root", "v1"), "is revoked in the trust record"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    run: Run, registry: Registry, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    generate(run, "root", "v1")
    if "revoked" in message:
        assert run("keys", "revoke", "v1", "--root", "root").exit_code == 0
    before = in_force(registry, tmp_path)
    assert message in one_error_line(run("keys", *args))
    assert in_force(registry, tmp_path) == before


def test_a_record_not_signed_by_a_key_of_the_keys_directory_is_not_built_upon(
    run: Run, registry: Registry, tmp_path: Path
) -> None:
    """Someone with etcd access wrote a record of their own: the CLI refuses to sign its
    contents again (it would launder the forger's keys into a root-signed record)."""
    generate(run, "root", "v1")
    elsewhere = tmp_path / "elsewhere"
    assert run("--keys-dir", str(elsewhere), "keys", "generate", "mallory").exit_code == 0
    assert (
        run("--keys-dir", str(elsewhere), "keys", "trust", "mallory", "--root", "mallory").exit_code
        == 0
    )
    _, raw = in_force_raw(registry)
    line = one_error_line(run("keys", "trust", "v1", "--root", "root"))
    assert "does not verify with the keys of" in line and "not a root key" in line
    assert in_force_raw(registry)[1] == raw


def in_force_raw(registry: Registry) -> tuple[int, str | None]:
    found = registry.trust_record()
    assert found is not None
    return found[0], found[1]


def test_a_key_listed_as_signing_units_is_warned_of_as_root(run: Run, tmp_path: Path) -> None:
    """Agents accept a record only from a root key of their trusted directory, which the
    CLI cannot see: a key the record lists as signing units gets a warning as --root (a
    trial: `keys trust v2 --root v1` said only "Trusted key" and every agent refused the
    record). A root key rotated out (listed with its expiry) that signed the record in
    force signs on without one: a revocation must not be blocked."""
    ids = generate(run, "root", "v1", "v2")
    assert run("keys", "trust", "v1", "--root", "root").exit_code == 0
    done = run("keys", "trust", "v2", "--root", "v1")
    assert done.exit_code == 0, done.output
    assert (
        f"fleetpy: warning: --root v1: key {ids['v1']} is listed in the trust record as a key "
        "that signs units" in done.stderr
    )


def test_a_rotated_root_key_still_signs_the_record(run: Run, tmp_path: Path) -> None:
    ids = generate(run, "root", "v1", "v2")
    assert run("keys", "trust", "v1", "--root", "root").exit_code == 0
    rotated = run("keys", "rotate", "root", "v2", "--root", "root", "--grace", "1h")
    assert rotated.exit_code == 0, rotated.output
    revoked = run("keys", "revoke", "v1", "--root", "root")
    assert revoked.exit_code == 0, revoked.output
    assert "warning" not in revoked.stderr
    assert revoked.stdout.startswith(f"Revoked key {ids['v1']}")
