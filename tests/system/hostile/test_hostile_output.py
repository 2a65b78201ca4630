"""Class 9: output hygiene, what needs fleetpy as a process: a closed pipe (SIGPIPE, the
interpreter's own shutdown and its "Exception ignored" messages). The other cases, in
process: tests/integration/hostile/test_hostile_output.py."""

from __future__ import annotations

import subprocess

from support.hostile_harness import CONSOLE_SCRIPT, Hostile


def test_a_closed_pipe_is_quiet(seeded: Hostile) -> None:
    proc = subprocess.Popen(
        [CONSOLE_SCRIPT, "list-unit-files"],
        env=seeded.env,
        cwd=seeded.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # like `fleetpy list-unit-files | head -0`
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err and b"Exception ignored" not in err
