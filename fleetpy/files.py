"""Reading and writing the user's files safely.

Public API:
  read_regular_file(path, *, limit, what) -> bytes
  read_text_file(path, *, limit, what) -> str        the same, decoded as UTF-8
  over_limit(text, *, limit, what) -> str | None     a text held to a file's limit
  write_file_atomically(path, text)                  temp file + rename, never half a file
  display_path(path) -> str                          a path fit for a one-line message

Only regular files are read (a symlink to one is fine): a FIFO would block
forever, a symlink to /dev/zero would read until memory runs out. Files are
opened with O_NONBLOCK and checked with fstat on the opened descriptor, and at
most `limit` bytes are accepted:

  MAX_UNIT_FILE_BYTES = 64 KiB   a unit file
  MAX_TEMPLATE_BYTES  = 1 MiB    a Jinja unit template (and each file it includes)
  MAX_VALUES_BYTES    = 1 MiB    a YAML file: template values, the agent's config

Writing replaces only a regular file (or creates one): a symlink, FIFO, device
node or directory at the target is refused. The text goes to a temp file in
the same directory, is fsynced and renamed over the target, so readers see the
old or the new file, never half of one. An existing file keeps its permission
bits (and, where allowed, its owner); a new one gets 0o666 minus the umask.

Every failure is a FileError with one line naming the file.
"""

from __future__ import annotations

import os
import secrets
import stat

from fleetpy.errors import FileError

KiB = 1024
MiB = 1024 * KiB

MAX_UNIT_FILE_BYTES = 64 * KiB
MAX_TEMPLATE_BYTES = 1 * MiB
MAX_VALUES_BYTES = 1 * MiB

_READ_CHUNK = 1 * MiB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISREG, "a regular file"),
)


def display_path(path: str | os.PathLike[str]) -> str:
    """The path with control characters (and undecodable bytes) escaped, for a message."""
    text = os.fspath(path)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _size(limit: int) -> str:
    if limit % MiB == 0:
        return f"{limit // MiB} MiB"
    if limit % KiB == 0:
        return f"{limit // KiB} KiB"
    return f"{limit} bytes"


def over_limit(text: str, *, limit: int, what: str) -> str | None:
    """If `text` is more than `limit` bytes (UTF-8), what to say after its name: "N bytes,
    more than 64 KiB, fleetpy's limit for a unit file"; else None. For text that comes
    from no file (a rendered unit, one sent to the API), held to a file's limit."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return f"{size} bytes, more than {_size(limit)}, fleetpy's limit for a {what}"


def _not_regular(path: str, mode: int, what: str) -> FileError:
    kind = _kind(mode)
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            kind = f"a symbolic link to {kind}"
    except OSError:
        pass
    return FileError(f"{what} {display_path(path)} is not a regular file ({kind})")


def _too_large(path: str, limit: int, what: str) -> FileError:
    return FileError(
        f"{what} {display_path(path)} is larger than {_size(limit)}, fleetpy's limit for a {what}"
    )


def _cannot(verb: str, what: str, path: str, exc: OSError) -> FileError:
    subject = f"{what} {display_path(path)}" if what else display_path(path)
    return FileError(f"cannot {verb} {subject}: {exc.strerror or exc}")


def read_regular_file(path: str | os.PathLike[str], *, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes.

    `what` names the file in messages ("unit file", "template", "values file").
    """
    name = os.fspath(path)
    # stat first so a device node is not even opened (opening some has effects),
    # fstat after opening so a file swapped in between is caught too.
    try:
        before = os.stat(name)
    except OSError as exc:
        raise _cannot("read", what, name, exc) from None
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(name, before.st_mode, what)
    if before.st_size > limit:
        raise _too_large(name, limit, what)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise _cannot("read", what, name, exc) from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise _not_regular(name, opened.st_mode, what)
        chunks: list[bytes] = []
        total = 0
        while True:
            # Never trust st_size: read at most one byte past the limit.
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_large(name, limit, what)
    except OSError as exc:
        raise _cannot("read", what, name, exc) from None
    finally:
        os.close(fd)


def read_text_file(path: str | os.PathLike[str], *, limit: int, what: str) -> str:
    """read_regular_file decoded as UTF-8 (a bad byte is an error naming its offset)."""
    data = read_regular_file(path, limit=limit, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError(
            f"cannot read {what} {display_path(path)}: not UTF-8 "
            f"(byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _create_temp(directory: str, base: str, mode: int, target: str) -> tuple[int, str]:
    # Our own name instead of mkstemp: mkstemp always creates 0600, and the
    # umask must apply to a new file as it would for a plain open().
    for _ in range(100):
        temp = os.path.join(directory, f".{base[:200]}.{secrets.token_hex(6)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(temp, flags, mode), temp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _cannot("write", "", target, exc) from None
    raise FileError(f"cannot write {display_path(target)}: no free temporary file name")


def write_file_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Create or replace the regular file `path` with `text` (UTF-8), atomically."""
    name = os.fspath(path)
    shown = display_path(name)
    if not name:
        raise FileError("cannot write a file with an empty name")
    if name.endswith(os.sep):
        raise FileError(f"cannot write {shown}: the name ends with '/', a directory's name")
    try:
        existing: os.stat_result | None = os.lstat(name)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise _cannot("write", "", name, exc) from None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise FileError(
            f"cannot write {shown}: it is {_kind(existing.st_mode)}, "
            "and fleetpy replaces only regular files"
        )
    data = text.encode("utf-8")
    directory = os.path.dirname(name) or "."
    fd, temp = _create_temp(
        directory, os.path.basename(name), 0o600 if existing is not None else 0o666, name
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            if existing is not None:
                _keep_owner_and_mode(handle.fileno(), existing)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, name)
    except OSError as exc:
        _remove(temp)
        raise _cannot("write", "", name, exc) from None
    except BaseException:
        _remove(temp)
        raise
    _sync_directory(directory)


def _keep_owner_and_mode(fd: int, existing: os.stat_result) -> None:
    if (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.fchown(fd, existing.st_uid, existing.st_gid)
        except PermissionError:
            pass  # only root may give a file away; the file becomes ours
    # After fchown, which clears set-id bits.
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))


def _sync_directory(directory: str) -> None:
    # The rename is durable once the directory is synced; failing that is no error.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
