"""What the stored-data tests share: hostile key names, a unit manager that records what it
is asked to do, and raw writes to etcd below the registry."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from collections.abc import Sequence

from fleetpy.unitmanager import (
    Action,
    SimulatedUnitManager,
)

TEXT = "[Service]\nExecStart=/bin/sleep 1000\n"


# Names an attacker with write access to etcd could put in a key.
HOSTILE_NAMES = [
    "../../etc/systemd/system/x.service",
    "../x.service",
    "a/b.service",
    "/etc/systemd/system/x.service",
    "./x.service",
    "..",
    ".",
    "",
    "x\x00.service",
    "x\n.service",
    "x.service\n",
    "x\x1b[2J.service",
    "a" * 300 + ".service",
    "x.service/..",
    "x.sh",
    "..service\\..",
]


# --------------------------------------------------------------------------- the agent


class RecordingManager(SimulatedUnitManager):
    """A simulated host that remembers every name it was asked to act on."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def execute(self, actions: Sequence[Action]) -> None:
        self.names.extend(action.name for action in actions)
        super().execute(actions)


def put_raw(endpoint: str, key: bytes, value: bytes) -> None:
    """Write any bytes as a key through etcd's JSON gateway (etcdctl cannot pass a NUL)."""
    body = json.dumps(
        {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
    ).encode()
    request = urllib.request.Request(f"{endpoint}/v3/kv/put", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def schedule_value(text: str = TEXT) -> bytes:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return json.dumps({"hash": digest, "desired": "launched", "text": text}).encode()
