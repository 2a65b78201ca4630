"""How long a host harness waits for a daemon it started: while the daemon's
log grows, however long that takes; not once the log falls silent."""

import threading
import time
from pathlib import Path

import pytest

from fleetpy.cluster.nspawn import HostError, _wait_while_logging


def test_a_daemon_still_logging_is_waited_for_past_the_stall_time(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    log.write_text("")
    done = threading.Event()

    def busy_daemon() -> None:
        # Logs every 0.2 s for 2 s: ten times the allowed silence in all.
        for i in range(10):
            with log.open("a") as f:
                f.write(f"removing stale sandbox {i}\n")
            time.sleep(0.2)
        done.set()

    threading.Thread(target=busy_daemon, daemon=True).start()
    _wait_while_logging("d", done.is_set, log, stall=1.0, limit=30.0)
    assert done.is_set()


def test_a_silent_daemon_is_given_up_on_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    log.write_text("level=error msg=stuck\n")
    with pytest.raises(HostError, match=r"(?s)waiting for d \(its log silent.*stuck"):
        _wait_while_logging("d", lambda: False, log, stall=0.5, limit=30.0)
