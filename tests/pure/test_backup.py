"""The backup file's format (fleetpy/backup.py): what it reads and what it refuses."""

from __future__ import annotations

import json

import pytest

from fleetpy.backup import FORMAT_VERSION, Backup, BackupError, decode, encode


def test_a_backup_reads_back_as_written() -> None:
    backup = Backup("/fleetpy", 42, {"unit/a.service": "{}", "content/" + "ab" * 32: "x\n"}, "0.1")
    assert decode(encode(backup), "f") == backup


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "f: not a fleetpy backup (not JSON"),
        ("[]", "f: not a fleetpy backup (no fleetpy_backup field)"),
        ('{"fleetpy_backup": true, "keys": {}}', "f: unknown backup format True"),
        (
            json.dumps({"fleetpy_backup": FORMAT_VERSION + 1, "fleetpy": "9.9", "keys": {}}),
            f"f: backup format {FORMAT_VERSION + 1} is newer than this fleetpy reads "
            f"({FORMAT_VERSION}); restore it with the fleetpy 9.9 that wrote it",
        ),
        ('{"fleetpy_backup": 1, "keys": []}', "f: field 'keys' is not a mapping of strings"),
        ('{"fleetpy_backup": 1, "keys": {"unit/a": 1}}', "field 'keys' is not a mapping"),
        ('{"fleetpy_backup": 1, "keys": {"schedule/m/a": "x"}}', "'schedule/m/a' is not one"),
        ('{"fleetpy_backup": 1, "keys": {"unit/../x": "x"}}', "'unit/../x' is not one"),
        ('{"fleetpy_backup": 1, "keys": {"unit/": "x"}}', "'unit/' is not one"),
        ('{"fleetpy_backup": 1, "keys": {}, "revision": "1"}', "are malformed"),
        ("[" * 100_000, "f: not a fleetpy backup (not JSON"),
    ],
)
def test_what_is_not_a_backup_this_version_restores_is_one_line(text: str, message: str) -> None:
    with pytest.raises(BackupError) as caught:
        decode(text, "f")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
