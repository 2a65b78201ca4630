"""The `fleetpy` command run inside the test's own process, as the console script runs it.

`run_in_process(argv, ...)` calls the entry point the console script calls (pyproject's
[project.scripts]: fleetpy.cli:main) with the same argv, environment (exactly, nothing
inherited), working directory and standard streams at the file-descriptor level: fd 0 a
pipe holding `input`, fd 1 and fd 2 files read back afterwards, so what gRPC's C core or a
helper process writes to them is seen too, and `/dev/stdin` is a FIFO as in a pipeline.
What the command ends with is what the process would have exited with: main() ends through
fleetpy.exits.exit_process, which flushes and then calls os._exit; here that os._exit
raises instead, so exit_process's own code still decides the status.

Nothing leaks from one run into the next or into the test: the environment, the working
directory, the umask, sys.argv and the sys streams, the signal handlers, the root logger's
handlers and the process' file descriptors 0-2 are put back whatever happens. A command
that execs (ssh) would replace the test process: exec is refused during a run, and so is
a run that outlives `timeout` (SIGALRM interrupts it, blocking system calls included).
Commands that must be processes (daemons that run until signalled, a closed pipe's
SIGPIPE, the interpreter's own shutdown) are run as the console script by the tests that
need them, in tests/system.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

EXEC_FUNCTIONS = ("execv", "execve", "execvp", "execvpe")


@dataclass(frozen=True)
class Ran:
    """How a run of the command ended: exit status and the bytes of fds 1 and 2."""

    code: int
    stdout: bytes
    stderr: bytes


class Hung(BaseException):
    """The run outlived its time limit (a BaseException: the command's own `except
    Exception` must not swallow it)."""


class _Exited(BaseException):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _ProcessOs:
    """fleetpy.exits's `os` during a run: os itself, but _exit ends the run, not us."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def _exit(status: int) -> NoReturn:
        raise _Exited(status)


def _refuse_exec(name: str) -> Callable[..., NoReturn]:
    def refuse(*args: object) -> NoReturn:
        raise AssertionError(f"fleetpy called os.{name}{args[:2]} in process: run it as a process")

    return refuse


def _text_stream(fd: int, mode: str, like: IO[str] | None, default_errors: str) -> io.TextIOWrapper:
    """A sys stream on FD with the encoding and error handler the interpreter gives a
    process in this locale (taken from our own original streams)."""
    raw = open(fd, mode + "b", closefd=False)
    return io.TextIOWrapper(
        raw,
        encoding=getattr(like, "encoding", None) or "utf-8",
        errors=getattr(like, "errors", None) or default_errors,
    )


@contextmanager
def _restored() -> Iterator[None]:
    """Put back everything process-wide a command may change."""
    environ = dict(os.environ)
    cwd = os.getcwd()
    umask = os.umask(0o022)
    os.umask(umask)
    argv = list(sys.argv)
    streams = (sys.stdin, sys.stdout, sys.stderr)
    handlers = {
        number: signal.getsignal(number)
        for number in signal.valid_signals()
        if number not in (signal.SIGKILL, signal.SIGSTOP)
    }
    root = logging.getLogger()
    log_handlers, log_level = list(root.handlers), root.level
    execs = {name: getattr(os, name) for name in EXEC_FUNCTIONS}
    try:
        yield
    finally:
        for name, function in execs.items():
            setattr(os, name, function)
        root.handlers[:] = log_handlers
        root.setLevel(log_level)
        for number, handler in handlers.items():
            if signal.getsignal(number) is not handler and handler is not None:
                signal.signal(number, handler)
        sys.stdin, sys.stdout, sys.stderr = streams
        sys.argv[:] = argv
        os.umask(umask)
        os.chdir(cwd)
        if dict(os.environ) != environ:
            os.environ.clear()
            os.environ.update(environ)


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise Hung in the main thread after SECONDS (elsewhere: no limit, as signals
    reach only the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _stdin_pipe(data: bytes) -> int:
    """The read end of a pipe that holds DATA and then ends."""
    read, write = os.pipe()
    if len(data) <= 60_000:  # fits the pipe's buffer: no writer needed
        os.write(write, data)
        os.close(write)
    else:

        def feed() -> None:
            with open(write, "wb") as pipe:
                pipe.write(data)

        threading.Thread(target=feed, daemon=True).start()
    return read


def _entry_point() -> Callable[[Sequence[str]], None]:
    from fleetpy.cli import main

    return main


def run_in_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    input: bytes = b"",
    stdout_fd: int | None = None,
    timeout: float = 30,
) -> Ran:
    """Run `fleetpy ARGV` here; STDOUT_FD (e.g. an open /dev/full) replaces the captured
    standard output. Raises Hung if it runs longer than TIMEOUT seconds."""
    import fleetpy.exits

    main = _entry_point()
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    stdin = _stdin_pipe(input)
    status = 1
    ours: list[io.TextIOWrapper] = []
    try:
        with _restored():
            os.dup2(stdin, 0)
            os.dup2(stdout_fd if stdout_fd is not None else out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            os.close(stdin)
            stdin = -1
            ours = [
                _text_stream(0, "r", sys.__stdin__, "surrogateescape"),
                _text_stream(1, "w", sys.__stdout__, "surrogateescape"),
                _text_stream(2, "w", sys.__stderr__, "backslashreplace"),
            ]
            sys.stdin, sys.stdout, sys.stderr = ours
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            sys.argv[:] = [str(Path(sys.executable).parent / "fleetpy"), *argv]
            for name in EXEC_FUNCTIONS:
                setattr(os, name, _refuse_exec(name))
            names = vars(fleetpy.exits)
            real_os = names["os"]
            names["os"] = _ProcessOs()
            try:
                with _time_limit(timeout):
                    main(list(argv))
            except _Exited as exited:
                status = exited.status
            except Hung:
                raise
            except BaseException:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                status = 1
            finally:
                names["os"] = real_os
                for stream in ours:
                    try:
                        stream.close()
                    except (OSError, ValueError):
                        pass  # a full disk: what the process would have lost at exit too
    finally:
        for fd, copy in zip((0, 1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        if stdin >= 0:
            os.close(stdin)
    out.seek(0)
    err.seek(0)
    with out, err:
        return Ran(status, out.read(), err.read())
