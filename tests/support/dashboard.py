"""The dashboard's `fleetpy api`: on 127.0.0.1 with TLS and a read-write and a read-only
token (the `dashboard` fixture, registered by tests/conftest.py; it takes the requesting
module's `tls` fixture)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetpy.api import ApiServer
from fleetpy.api.dashboard_model import apply_delta
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


class EventReader:
    """A dashboard event stream read as a browser's page reads it: the document of the
    first snapshot (`event: view`) with every later delta (`event: delta`) applied."""

    def __init__(self, response: Any, document: dict[str, Any] | None = None) -> None:
        self.response = response
        self.document = document  # what a reconnecting page still has
        self.snapshots = 0
        self.deltas: list[int] = []  # each delta's size in bytes
        self.last_id = ""  # the last message's id (a reconnecting browser sends it)

    def message(self) -> tuple[str, str]:
        """The next message: (event, data)."""
        event, data = "", []
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            elif line.startswith("id: "):
                self.last_id = line[len("id: ") :]
            elif line == "" and event:
                return event, "\n".join(data)

    def next(self) -> dict[str, Any]:
        """The document after the next snapshot or delta."""
        event, data = self.message()
        if event == "view":
            self.document = json.loads(data)
            self.snapshots += 1
        else:
            assert event == "delta" and self.document is not None, event
            self.document = apply_delta(self.document, json.loads(data))
            self.deltas.append(len(data))
        return self.document
