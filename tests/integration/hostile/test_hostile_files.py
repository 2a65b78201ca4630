"""Class 7: files.

A FIFO given as a unit, template or values file hung for ever; a symlink to /dev/zero read
until memory ran out; `render -o` replaced a FIFO, a symlink or a device node with a regular
file and reset its mode to 0600. Only regular files of bounded size are read; `-o` writes a
regular file atomically, keeps an existing file's mode, and replaces nothing else.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.hostile_harness import SERVICE, Hostile

TEMPLATE = "[Unit]\nDescription={{ description }}\n\n[Service]\nExecStart=/bin/true\n"


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _dev_null(path: Path) -> None:
    path.symlink_to("/dev/null")


def _directory(path: Path) -> None:
    path.mkdir()


def _huge(path: Path) -> None:
    # Sparse: 4 GiB that take no disk space, and would take 4 GiB of memory to read.
    with open(path, "wb") as handle:
        handle.truncate(4 * 1024**3)


def _just_too_big(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(b"#" * (size + 1))

    return make


def _not_utf8(path: Path) -> None:
    path.write_bytes(b"[Unit]\nDescription=caf\xe9\n")


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere")


def _loop(path: Path) -> None:
    path.symlink_to(path)


KiB, MiB = 1024, 1024 * 1024

# (maker, what the error line must say), for every kind of file fleetpy reads.
BAD_FILES = {
    "fifo": (_fifo, r"is not a regular file \(a FIFO\)"),
    "dev-zero": (_dev_zero, r"is not a regular file \(a symbolic link to a character device\)"),
    "dev-null": (_dev_null, r"is not a regular file \(a symbolic link to a character device\)"),
    "directory": (_directory, r"is not a regular file \(a directory\)|Is a directory"),
    "huge": (_huge, r"is larger than (1 MiB|64 KiB)"),
    "not-utf8": (_not_utf8, r"not UTF-8 \(byte 0xe9 at offset 22\)"),
    "dangling-symlink": (_dangling, r"No such file or directory"),
    "symlink-loop": (_loop, r"Too many levels of symbolic links"),
}


def _make(seeded: Hostile, kind: str, name: str) -> str:
    path = seeded.workdir / kind / name
    path.parent.mkdir(exist_ok=True)
    if os.path.lexists(path):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    BAD_FILES[kind][0](path)
    return str(path)


def _quick(seeded: Hostile, *args: str, match: str) -> str:
    started = time.monotonic()
    line = seeded.rejects(*args, match=match, timeout=15)
    assert time.monotonic() - started < 10, "refused at once, not after reading or a time-out"
    return line


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_template_file(seeded: Hostile, kind: str) -> None:
    path = _make(seeded, kind, "t.service.j2")
    line = _quick(seeded, "render", path, "--set", "description=x", match=BAD_FILES[kind][1])
    assert "t.service.j2" in line


def test_template_too_big_by_one_byte(seeded: Hostile) -> None:
    path = seeded.workdir / "big.j2"
    _just_too_big(MiB)(path)
    _quick(
        seeded,
        "render",
        str(path),
        match=r"template .*big\.j2 is larger than 1 MiB, fleetpy's limit for a template$",
    )


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_values_file(seeded: Hostile, kind: str) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    path = _make(seeded, kind, "values.yaml")
    line = _quick(seeded, "render", template, "--values", path, match=BAD_FILES[kind][1])
    assert "values.yaml" in line


def test_values_file_too_big_by_one_byte(seeded: Hostile) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    path = seeded.workdir / "big.yaml"
    _just_too_big(MiB)(path)
    _quick(
        seeded,
        "render",
        template,
        "--values",
        str(path),
        match=r"values file .*big\.yaml is larger than 1 MiB, fleetpy's limit for a values file$",
    )


def test_stdin_is_not_a_file(seeded: Hostile) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    _quick(
        seeded,
        "render",
        template,
        "--values",
        "/dev/stdin",
        match=r"/dev/stdin is not a regular file \(a symbolic link to a FIFO\)",
    )
    _quick(seeded, "render", "/dev/stdin", match=r"/dev/stdin is not a regular file")


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_unit_file(seeded: Hostile, kind: str) -> None:
    path = _make(seeded, kind, "bad.service")
    # control.py looks for the path before reading it, in its own words.
    match = {
        "dangling-symlink": r"(?i)no such file",
        "symlink-loop": r"(?i)no such file|too many levels of symbolic links",
    }.get(kind, BAD_FILES[kind][1])
    line = _quick(seeded, "submit", path, match=match)
    assert "bad.service" in line


def test_unit_file_too_big_by_one_byte(seeded: Hostile) -> None:
    path = seeded.workdir / "big.service"
    path.write_text(SERVICE + "#" * (64 * KiB))
    _quick(seeded, "submit", str(path), match=r"big\.service is larger than 64 KiB")


# ----------------------------------------------------------------------------- render -o


def _mknod_null(path: Path) -> None:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def _symlink_to_file(path: Path) -> None:
    (path.parent / "victim.txt").write_text("keep me\n")
    path.symlink_to(path.parent / "victim.txt")


OUTPUT_TARGETS = {
    "fifo": (_fifo, "a FIFO"),
    "symlink-to-file": (_symlink_to_file, "a symbolic link"),
    "symlink-to-dev-null": (_dev_null, "a symbolic link"),
    "dangling-symlink": (_dangling, "a symbolic link"),
    "device-node": (_mknod_null, "a character device"),
    "directory": (_directory, "a directory"),
}


@pytest.mark.parametrize("kind", sorted(OUTPUT_TARGETS))
def test_output_onto_something_else_than_a_regular_file(
    seeded: Hostile, tmp_path: Path, kind: str
) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    target = tmp_path / "out.service"
    make, what = OUTPUT_TARGETS[kind]
    try:
        make(target)
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    before = os.lstat(target)
    line = _quick(
        seeded,
        "render",
        template,
        "--set",
        "description=x",
        "-o",
        str(target),
        match=rf"cannot write .*out\.service: it is {what}, "
        r"and fleetpy replaces only regular files$",
    )
    assert str(target) in line
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (
        before.st_ino,
        before.st_mode,
        before.st_rdev,
    )
    if kind == "symlink-to-file":
        assert (tmp_path / "victim.txt").read_text() == "keep me\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["-o", "nodir/out.service"],
            r"cannot write nodir/out\.service: No such file or directory$",
        ),
        (["-o", "out.service/"], r"the name ends with '/'"),
        (["-o", "/proc/version"], r"cannot write /proc/version: "),
        (["-o", "ok.service.j2/x"], r"cannot write ok\.service\.j2/x: Not a directory$"),
    ],
)
def test_output_errors(seeded: Hostile, args: list[str], match: str) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    _quick(seeded, "render", template, "--set", "description=x", *args, match=match)


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640, 0o755])
def test_output_keeps_the_mode_and_replaces_by_rename(
    seeded: Hostile, tmp_path: Path, mode: int
) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    target = tmp_path / "out.service"
    target.write_text("old\n")
    target.chmod(mode)
    inode = os.stat(target).st_ino
    seeded.ok("render", template, "--set", "description=new", "-o", str(target))
    assert target.read_text().startswith("[Unit]\nDescription=new\n")
    assert stat.S_IMODE(os.stat(target).st_mode) == mode
    assert os.stat(target).st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.service"]


def test_new_output_file_gets_the_umask(seeded: Hostile, tmp_path: Path) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    umask = os.umask(0o022)
    os.umask(umask)
    seeded.ok("render", template, "--set", "description=x", "-o", str(tmp_path / "new.service"))
    assert stat.S_IMODE(os.stat(tmp_path / "new.service").st_mode) == 0o666 & ~umask


def test_failed_render_leaves_the_old_output(seeded: Hostile, tmp_path: Path) -> None:
    template = seeded.write("ok.service.j2", TEMPLATE)
    target = tmp_path / "out.service"
    target.write_text("old\n")
    target.chmod(0o600)
    seeded.rejects("render", template, "-o", str(target), match=r"'description' is undefined")
    assert target.read_text() == "old\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.service"]
