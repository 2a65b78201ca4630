"""Reading only regular files of bounded size; writing files atomically, keeping their mode."""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpy.errors import FileError, FleetpyError
from fleetpy.files import (
    MAX_TEMPLATE_BYTES,
    MAX_UNIT_FILE_BYTES,
    MAX_VALUES_BYTES,
    display_path,
    read_regular_file,
    read_text_file,
    write_file_atomically,
)


def test_limits() -> None:
    assert MAX_UNIT_FILE_BYTES == 64 * 1024
    assert MAX_TEMPLATE_BYTES == MAX_VALUES_BYTES == 1024 * 1024
    assert issubclass(FileError, FleetpyError)


# ----------------------------------------------------------------------------- reading


def test_reads_a_regular_file_and_a_symlink_to_one(tmp_path: Path) -> None:
    path = tmp_path / "a.service"
    path.write_bytes(b"[Unit]\n")
    link = tmp_path / "link.service"
    link.symlink_to(path)
    assert read_regular_file(path, limit=100, what="unit file") == b"[Unit]\n"
    assert read_regular_file(str(link), limit=100, what="unit file") == b"[Unit]\n"
    assert read_text_file(link, limit=100, what="unit file") == "[Unit]\n"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert read_regular_file(empty, limit=0, what="x") == b""


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.service"
    os.mkfifo(path)
    return path


def _socket(tmp_path: Path) -> Path:
    path = tmp_path / "sock.service"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


def _dev_zero_link(tmp_path: Path) -> Path:
    path = tmp_path / "zero.service"
    path.symlink_to("/dev/zero")
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "dir.service"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    "make, kind",
    [
        (_fifo, "a FIFO"),
        (_socket, "a socket"),
        (_dev_zero_link, "a symbolic link to a character device"),
        (_directory, "a directory"),
        (lambda tmp: Path("/dev/null"), "a character device"),
    ],
)
def test_refuses_what_is_not_a_regular_file(
    tmp_path: Path, make: Callable[[Path], Path], kind: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(
        FileError,
        match=rf"^unit file {re.escape(str(path))} is not a regular file "
        rf"\({kind}\)$",
    ):
        read_regular_file(path, limit=MAX_UNIT_FILE_BYTES, what="unit file")


def test_a_fifo_swapped_in_after_stat_is_caught_by_fstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stat said regular file, then a FIFO is opened: O_NONBLOCK returns, fstat refuses."""
    regular = tmp_path / "regular"
    regular.write_text("x")
    fifo = _fifo(tmp_path)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(regular))
    with pytest.raises(FileError, match=r"is not a regular file \(a FIFO\)$"):
        read_regular_file(fifo, limit=100, what="template")


def test_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.service"
    path.write_bytes(b"x" * 1024)
    assert len(read_regular_file(path, limit=1024, what="unit file")) == 1024
    with pytest.raises(
        FileError,
        match=rf"^unit file {re.escape(str(path))} is larger than 1023 bytes, "
        r"fleetpy's limit for a unit file$",
    ):
        read_regular_file(path, limit=1023, what="unit file")
    path.write_bytes(b"x" * (MAX_UNIT_FILE_BYTES + 1))
    with pytest.raises(FileError, match=r"is larger than 64 KiB, fleetpy's limit for a unit file$"):
        read_regular_file(path, limit=MAX_UNIT_FILE_BYTES, what="unit file")
    path.write_bytes(b"x" * (MAX_TEMPLATE_BYTES + 1))
    with pytest.raises(FileError, match=r"is larger than 1 MiB, fleetpy's limit for a template$"):
        read_regular_file(path, limit=MAX_TEMPLATE_BYTES, what="template")


def test_size_limit_does_not_trust_st_size() -> None:
    # /proc files are regular files that stat as 0 bytes long.
    assert os.stat("/proc/self/maps").st_size == 0
    with pytest.raises(FileError, match="is larger than 16 bytes"):
        read_regular_file("/proc/self/maps", limit=16, what="values file")


def test_os_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(
        FileError,
        match=rf"^cannot read values file {re.escape(str(missing))}: "
        r"No such file or directory$",
    ):
        read_regular_file(missing, limit=10, what="values file")
    not_dir = tmp_path / "file"
    not_dir.write_text("")
    with pytest.raises(FileError, match=r": Not a directory$"):
        read_regular_file(not_dir / "x", limit=10, what="template")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(FileError, match=r": Too many levels of symbolic links$"):
        read_regular_file(loop, limit=10, what="template")


def test_not_utf8_names_the_byte_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.j2"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(
        FileError,
        match=r"^cannot read template .*latin1\.j2: not UTF-8 "
        r"\(byte 0xe9 at offset 3\)$",
    ):
        read_text_file(path, limit=100, what="template")


def test_control_characters_in_names_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "evil\x1b[2J\n.j2"
    with pytest.raises(FileError) as info:
        read_regular_file(path, limit=10, what="template")
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value)
    assert "evil\\x1b[2J\\x0a.j2" in str(info.value)
    assert display_path("plain/path.j2") == "plain/path.j2"
    assert display_path("bad\udcff") == "bad\\udcff"


# ----------------------------------------------------------------------------- writing


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_a_new_file_with_the_umask_applied(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_file_atomically(tmp_path / "new.service", "hello\n")
    finally:
        os.umask(old)
    path = tmp_path / "new.service"
    assert path.read_text() == "hello\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o755, 0o440])
def test_replacing_keeps_the_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "out.service"
    path.write_text("old\n")
    path.chmod(mode)
    write_file_atomically(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert _temp_files(tmp_path) == []


def test_replacing_is_a_rename(tmp_path: Path) -> None:
    """A reader holding the old file keeps seeing it whole: a new inode, never a rewrite."""
    path = tmp_path / "out.service"
    path.write_text("old\n")
    with open(path) as reader:
        before = os.fstat(reader.fileno()).st_ino
        write_file_atomically(path, "new\n")
        assert reader.read() == "old\n"
    assert os.stat(path).st_ino != before
    assert path.read_text() == "new\n"


def _mknod_null(path: Path) -> None:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda p: os.mkfifo(p), "a FIFO"),
        (lambda p: p.symlink_to(p.parent / "elsewhere"), "a symbolic link"),
        (lambda p: p.symlink_to("/dev/null"), "a symbolic link"),
        (lambda p: p.mkdir(), "a directory"),
        (_mknod_null, "a character device"),
    ],
)
def test_refuses_to_replace_what_is_not_a_regular_file(
    tmp_path: Path, make: Callable[[Path], object], kind: str
) -> None:
    (tmp_path / "elsewhere").write_text("keep\n")
    path = tmp_path / "out.service"
    try:
        make(path)
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    before = os.lstat(path)
    with pytest.raises(
        FileError,
        match=rf"^cannot write {re.escape(str(path))}: it is {kind}, "
        r"and fleetpy replaces only regular files$",
    ):
        write_file_atomically(path, "new\n")
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert (tmp_path / "elsewhere").read_text() == "keep\n"
    assert _temp_files(tmp_path) == []


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"^cannot write .*/nodir/x: No such file or directory$"):
        write_file_atomically(tmp_path / "nodir" / "x", "x")
    with pytest.raises(FileError, match=r"ends with '/'"):
        write_file_atomically(f"{tmp_path}/x/", "x")
    with pytest.raises(FileError, match=r"empty name"):
        write_file_atomically("", "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileError, match=r": Not a directory$"):
        write_file_atomically(tmp_path / "file" / "x", "x")


@pytest.mark.parametrize("broken", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.service"
    path.write_text("old\n")

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, broken, fail)
    with pytest.raises(FileError, match=r"^cannot write .*out\.service: No space left on device$"):
        write_file_atomically(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.service"]


def test_an_interrupted_write_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_file_atomically(tmp_path / "out.service", "new\n")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_long_names_still_get_a_temp_file(tmp_path: Path) -> None:
    name = "x" * 240 + ".service"  # 248: fits NAME_MAX (255), ".NAME.RANDOM.tmp" would not
    write_file_atomically(tmp_path / name, "ok\n")
    assert (tmp_path / name).read_text() == "ok\n"
