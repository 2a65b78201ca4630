"""test_remote.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or
tools of the machine (README "Tests"); what the module covers as a whole:
tests/pure/test_remote.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpy.config import SshSettings


def test_an_unreachable_machine_is_one_line_naming_it(tmp_path: Path) -> None:
    from fleetpy.ssh import RemoteError, Target, run

    # Port 1 on loopback: nothing listens, ssh fails at once (no traffic leaves the machine).
    settings = SshSettings(port=1, known_hosts_file=str(tmp_path / "known_hosts"))
    target = Target("0123456789abcdef", "127.0.0.1")
    with pytest.raises(RemoteError) as caught:
        list(run(settings, target, ["true"]))
    message = str(caught.value)
    assert message.startswith("cannot reach machine 01234567/127.0.0.1 over ssh: ")
    assert "\n" not in message
