"""test_transport.py's tests that need no etcd and no process (README "Tests"); what the module
covers as a whole: tests/integration/test_transport.py."""

from __future__ import annotations

import re
import time

import pytest

from fleetpy.cluster.etcd import free_port
from fleetpy.registry.transport import (
    EtcdUnavailable,
)

from support.etcd_transport import Recorder, transport

# ----------------------------------------------------------------------------- failover


def test_every_endpoint_down_is_one_line_within_the_timeout() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with transport(*urls, timeout=2.0) as client:
        for call in (
            lambda: client.range("/x"),
            lambda: client.watch(b"/x", None, None, Recorder()),
        ):
            started = time.monotonic()
            with pytest.raises(EtcdUnavailable) as info:
                call()
            assert time.monotonic() - started < 2.5
            assert str(info.value) == (
                f"cannot reach etcd at {urls[0]} (connection refused), "
                f"{urls[1]} (connection refused) after 2s"
            )


def test_messages_name_every_endpoint() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with transport(dead, timeout=1.0) as client:
        with pytest.raises(EtcdUnavailable) as info:
            client.put("/k", "v")
    assert re.fullmatch(
        rf"cannot reach etcd at {re.escape(dead)} \(connection refused\) "
        r"after 1s",
        str(info.value),
    )
    assert [f.url for f in info.value.failures] == [dead]
