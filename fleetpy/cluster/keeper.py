"""A host's keeper: the process that runs its systemd-nspawn, and runs it again whenever
the guest asked for a reboot (`systemctl reboot` inside), which nspawn reports by exiting
133, as systemd's systemd-nspawn@.service does (RestartForceExitStatus=133). Any other
exit (a poweroff, a crash) ends the host and the keeper, with nspawn's status. It is a
shell loop: a Python one would cost each host ~10 MB.

Finding a host's current boot (its nspawn and init) from its keeper, and ending a host
for good, also mid-reboot: the keeper is stopped first, so it boots nothing more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

KEEPER = "fleetpy-nspawn-keeper"  # its $0, how `cluster down` tells one from other shells
CONTAINER_REBOOTED = 133  # systemd-nspawn's exit status when its guest rebooted
_KEEPER_SCRIPT = f'while :; do "$@"; rc=$?; [ "$rc" -eq {CONTAINER_REBOOTED} ] || exit "$rc"; done'


def keeper_argv(nspawn_argv: Sequence[str]) -> list[str]:
    """The keeper's argv for systemd-nspawn's (NSPAWN_ARGV: nspawn's own, or one that
    execs it, as setpriv does)."""
    return ["sh", "-c", _KEEPER_SCRIPT, KEEPER, *nspawn_argv]


def is_keeper(argv: Sequence[bytes]) -> bool:
    """Whether a process's argv (/proc/PID/cmdline, split) is a keeper's."""
    return len(argv) > 3 and argv[1] == b"-c" and argv[3] == KEEPER.encode()


@dataclass(frozen=True)
class Boot:
    """A host's current boot: its systemd-nspawn and its init (pids as seen here)."""

    nspawn: int
    init: int
    pid_ns: str


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [
            int(child)
            for task in os.scandir(f"/proc/{pid}/task")
            for child in Path(task.path, "children").read_text().split()
        ]
    return []


def current_boot(keeper: int) -> Boot | None:
    """The boot the keeper runs now; None between two boots (or once it ended)."""
    for nspawn in _children(keeper):
        init = _find_init(nspawn)
        if init:
            with contextlib.suppress(OSError):
                return Boot(nspawn, init, os.readlink(f"/proc/{init}/ns/pid"))
    return None


def process_state(pid: int) -> str:
    """/proc/PID/stat's state letter; "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def freeze_keeper(keeper: int) -> Boot | None:
    """SIGSTOP a keeper, so it boots nothing more, and return the boot it runs (None if
    none): what is then killed (its init first, then nspawn, the keeper) stays killed,
    also mid-reboot. The caller checked the pid is the keeper's."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(keeper, signal.SIGSTOP)
    deadline = time.monotonic() + 2
    while process_state(keeper) not in ("", "T", "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.005)
    return current_boot(keeper)


def end_keeper(keeper: int) -> list[int]:
    """Kill a host for good: its keeper frozen, then its init, nspawn and the keeper
    SIGKILLed; returns their pids."""
    boot = freeze_keeper(keeper)
    pids = [boot.init, boot.nspawn, keeper] if boot else [keeper]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _find_init(nspawn_pid: int) -> int | None:
    """The nspawn process's child that is PID 1 of a new pid namespace."""
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{nspawn_pid}/task"):
            for child in Path(task.path, "children").read_text().split():
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{child}/status").read_text().splitlines():
                        if (
                            line.startswith("NSpid:")
                            and len(line.split()) > 2
                            and line.split()[-1] == "1"
                        ):
                            return int(child)
    return None
