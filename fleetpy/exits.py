"""How fleetpy's commands end: flush what they printed, then leave at once.

The interpreter's own shutdown collects gRPC's channel and stream objects while gRPC's
threads are being stopped, and that can deadlock on a lock a stopped thread holds (seen
in about 1 of 300 CLI runs: the command had printed everything and never exited). Every
resource is closed before this point, so nothing is lost by skipping that shutdown.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_process(code: object) -> NoReturn:
    """End the process with `code` (as SystemExit takes it) after flushing output."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe or /dev/full: the command already said so, if it could
    os._exit(status)
