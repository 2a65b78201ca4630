"""fleet v1.0's etcd keyspace as fleet writes it (fleet's registry/ package), for the
migration's tests: as the v2 API's recursive GET returns it (`v2_tree`, for pure tests),
or written into a real etcd's v2 API over HTTP (`FleetKeys`), where fleetd and fleet's
engine would have written it (machines, placements) beside what fleetctl writes."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

PREFIX = "/_coreos.com/fleet"


def object_json(name: str, text: str) -> str:
    """job/<name>/object: Go's encoding of a [20]byte hash is 20 numbers."""
    return json.dumps({"Name": name, "UnitHash": list(hashlib.sha1(text.encode()).digest())})


def unit_keys(
    name: str, text: str, state: str | None = "inactive", target: str | None = None
) -> dict[str, str]:
    """The keys fleetctl (and, for TARGET, fleet's engine) writes for one unit."""
    sha1 = hashlib.sha1(text.encode()).hexdigest()
    keys = {
        f"unit/{sha1}": json.dumps({"Raw": text}),
        f"job/{name}/object": object_json(name, text),
    }
    if state is not None:
        keys[f"job/{name}/target-state"] = state
    if target is not None:
        keys[f"job/{name}/target"] = target
    return keys


def machine_keys(
    machine: str,
    ip: str = "10.0.0.1",
    metadata: Mapping[str, str] | None = None,
    dynamic: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What fleetd writes of its machine (the object, under its TTL), and operators'
    metadata changes (DYNAMIC: "" is a removed key, as fleet stored it)."""
    state = {
        "ID": machine,
        "PublicIP": ip,
        "Metadata": dict(metadata or {}),
        "Capabilities": None,
        "Version": "1.0.0",
    }
    keys = {f"machines/{machine}/object": json.dumps(state)}
    for key, value in (dynamic or {}).items():
        keys[f"machines/{machine}/metadata/{key}"] = value
    return keys


def v2_tree(keys: Mapping[str, str], prefix: str = PREFIX) -> dict[str, Any]:
    """The node of PREFIX as etcd's v2 API returns it, read recursively, from KEYS
    relative to it."""
    root: dict[str, Any] = {"key": prefix, "dir": True, "nodes": []}
    for rel, value in sorted(keys.items()):
        node = root
        parts = rel.split("/")
        for index, part in enumerate(parts):
            path = f"{node['key']}/{part}"
            last = index == len(parts) - 1
            found = next((n for n in node.setdefault("nodes", []) if n["key"] == path), None)
            if found is None:
                found = {"key": path, "value": value} if last else {"key": path, "dir": True}
                node["nodes"].append(found)
            node = found
    return root


class FleetKeys:
    """fleet's keys in a real etcd's v2 API (the etcd runs with --enable-v2=true)."""

    def __init__(self, endpoint: str, prefix: str = PREFIX) -> None:
        self.endpoint = endpoint
        self.prefix = prefix

    def put(self, keys: Mapping[str, str]) -> None:
        for rel, value in keys.items():
            url = f"{self.endpoint}/v2/keys{self.prefix}/{urllib.parse.quote(rel)}"
            body = urllib.parse.urlencode({"value": value}).encode()
            request = urllib.request.Request(url, body, method="PUT")
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status in (200, 201), (rel, response.status)

    def get(self, rel: str) -> str | None:
        """The value of one of fleet's keys; None if there is none."""
        url = f"{self.endpoint}/v2/keys{self.prefix}/{urllib.parse.quote(rel)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(json.load(response)["node"]["value"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def delete(self, rel: str) -> None:
        url = f"{self.endpoint}/v2/keys{self.prefix}/{urllib.parse.quote(rel)}?recursive=true"
        with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
            pass
