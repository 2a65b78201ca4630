"""No fleetpy decision compares wall clocks across machines (issue [12]): a host whose
clock is off by minutes must neither be trusted nor do harm. Leases expire on etcd's
side, and every interval (TTLs, grace periods, retries, waits) is measured on the
process's own monotonic clock. The few wall-clock reads are listed here with why each is
harmless; a new one fails this test until it is judged and added."""

from __future__ import annotations

import ast
from pathlib import Path

import fleetpy

PACKAGE = Path(fleetpy.__file__).resolve().parent

WALL_CLOCK = {
    ("time", "time"),
    ("time", "gmtime"),
    ("time", "localtime"),
    ("time", "time_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
}

# module -> why its wall-clock read compares nothing across machines
ALLOWED = {
    "log.py": "the timestamp of a log line, for people",
    "registry/schedule.py": "force-reschedule's value: when it was asked, for people; "
    "the key's presence is the request",
    "registry/tls.py": "explains a refused certificate with this machine's own clock, as "
    "the TLS handshake that was refused used it",
    "cluster/pki.py": "certificate validity when they are made, backdated 5 minutes for "
    "clocks a little apart",
    "registry/audit.py": "an audit entry's time, for people: the writing client's word "
    "(etcd's revision orders the entries)",
    "client/drain.py": "when a cordon was asked and when a maintenance window ends, for "
    "people; the window's end is etcd's, the lease its record is written under",
    "trust.py": "a trust record's serial starts from the writer's clock, but is at least the "
    "last serial + 1 and no host compares it with a clock; times printed for people",
    "client/trust.py": "a trust record's `at` and its keys' expiries, on the writer's clock "
    "both: hosts judge only their difference, on their own clock (host_trust)",
    "cli/keys.py": "--expires and --grace read on the writer's clock (as client/trust.py), "
    "and times printed for people",
    "unitfile/signing.py": "a signature's version is its signing time, never less than the "
    "stored version + 1 whatever the signer's clock; an agent refuses one more than "
    "FUTURE_SKEW_MS ahead of its own clock (`future`): a host more than 5 minutes slow "
    "refuses new versions, but stops nothing (what runs stays)",
}


def wall_clock_reads() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if (name, node.func.attr) in WALL_CLOCK:
                found.setdefault(path.relative_to(PACKAGE).as_posix(), []).append(node.lineno)
    return found


def test_wall_clock_reads_are_only_the_judged_ones() -> None:
    assert set(wall_clock_reads()) == set(ALLOWED)


def test_the_scan_finds_a_wall_clock_read() -> None:
    assert wall_clock_reads()["log.py"]  # the scan itself works (time.gmtime in log)
