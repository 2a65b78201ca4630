"""The dashboard's `fleetpy api`: on 127.0.0.1 with TLS and a read-write and a read-only
token (the `dashboard` fixture, registered by tests/conftest.py; it takes the requesting
module's `tls` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpy.api import ApiServer
from fleetpy.cluster.etcd import EtcdTls
from fleetpy.live_view import LiveView

from support.api_fixtures import Api

READ_TOKEN = "ro-dashboard-0123456789abcdef"


WRITE_TOKEN = "rw-dashboard-0123456789abcdef"


@pytest.fixture
def dashboard(
    api: Api,
    tls: EtcdTls,
    tmp_path: Path,
) -> Callable[[], tuple[ApiServer, LiveView]]:
    """`fleetpy api` on 127.0.0.1 with TLS, a read-write and a read-only token."""
    (tmp_path / "rw").write_text(WRITE_TOKEN + "\n")
    (tmp_path / "ro").write_text(READ_TOKEN + "\n")
    return lambda: api(
        listen="127.0.0.1:0",
        cert_file=str(tls.cert_file),
        key_file=str(tls.key_file),
        token_file=str(tmp_path / "rw"),
        read_only_token_file=str(tmp_path / "ro"),
    )
