"""Class 1: a path that does not exist is an error naming it, never a name or a glob.

`fleetpy destroy /nonexistent-dir/*.service` (what bash passes on when a glob matches
nothing) once destroyed every .service unit.
"""

from __future__ import annotations

import pytest

from support.hostile_harness import SEEDED, Hostile

MISSING_PATHS = [
    ("destroy", "/nonexistent-dir/*.service"),
    ("destroy", "/nonexistent-dir/hello.service"),
    ("destroy", "/nonexistent-dir/web@*.service"),
    ("destroy", "typo-dir/*"),
    ("destroy", "./missing.service"),
    ("destroy", "../nowhere/hello.service"),
    ("destroy", "hello.service/"),
    ("destroy", "hello.service", "/nonexistent-dir/db.service"),
    ("stop", "typo-dir/*.service"),
    ("stop", "typo-dir/hello.service"),
    ("stop", "--no-block", "/tmp/fleetpy-nonexistent/web@1.service"),
    ("unload", "typo-dir/web@*.service"),
    ("unload", "--no-block", "nonexistent/db.service"),
    ("start", "/nonexistent-dir/hello.service"),
    ("start", "--no-block", "/nonexistent-dir/*.service"),
    ("load", "--no-block", "nonexistent/db.service"),
    ("submit", "/nonexistent-dir/*.service"),
    ("submit", "hello.service/"),
]


@pytest.mark.parametrize("args", MISSING_PATHS, ids=" ".join)
def test_missing_path_is_an_error_and_changes_nothing(
    seeded: Hostile, args: tuple[str, ...]
) -> None:
    missing = next(a for a in args if "/" in a)
    line = seeded.rejects(*args)
    assert missing in line


# Paths that exist but do not name a unit: still never a glob, never a partial action.
def test_existing_paths_that_are_not_unit_names(seeded: Hostile) -> None:
    glob_file = seeded.write("g/*.service")  # a file literally named '*.service'
    folder = seeded.workdir / "folder"
    folder.mkdir(exist_ok=True)
    for args in [
        ("destroy", glob_file),
        ("stop", glob_file),
        ("destroy", "/"),
        ("destroy", str(folder)),
        ("destroy", str(folder) + "/"),
        ("destroy", "."),
        ("destroy", ".."),
        ("unload", "//"),
        ("destroy", "hello.service", glob_file),
        ("cat", "/nonexistent-dir/hello.service"),
    ]:
        seeded.rejects(*args)
    assert set(seeded.units()) == set(SEEDED)


def test_existing_unit_file_path_still_names_its_unit(hostile: Hostile) -> None:
    """fleetctl's behaviour for a path that exists is kept: its basename is the unit."""
    hostile.seed()
    path = hostile.write("elsewhere/hello.service")
    assert hostile.ok("destroy", path).stdout == "Destroyed hello.service\n"
    hostile.ok("stop", "--no-block", "web@*")
    assert hostile.units() == {
        "db.service": "loaded",
        "web@.service": "inactive",
        "web@1.service": "loaded",
        "web@2.service": "loaded",
    }
