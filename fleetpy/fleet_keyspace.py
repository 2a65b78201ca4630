"""fleet v1.0's keyspace in etcd (its v2 API), read for `fleetpy migrate --from-fleet`.

What fleet wrote under its prefix (default /_coreos.com/fleet/; fleet's registry/ package):

  job/<name>/object         {"Name": name, "UnitHash": [20 bytes of the sha1]}
  job/<name>/target-state   inactive | loaded | launched (the desired state)
  job/<name>/target         the machine id the engine placed it on (none: global or not placed)
  job/<name>/job-state      the machine id that last heartbeat it (a TTL key; not read)
  unit/<sha1 hex>           {"Raw": unit file text}, the sha1 being that text's
  machines/<id>/object      {"ID", "PublicIP", "Metadata", "Version", ...} under fleetd's TTL
  machines/<id>/metadata/<key>   operators' metadata (fleet's PATCH /machines; "" = removed)

Everything else under the prefix (states, the engine's lease and version) is not needed to
carry the desired state over, and is not read. `parse_keyspace` is pure: a record fleet
never wrote (not its JSON, a hash that is not its content's) is a FleetKeyspaceError naming
the key, and nothing is migrated. `read_fleet` fetches the tree over HTTP (plain JSON:
urllib), saying in one line what is wrong with an unreachable URL, a server that is not
etcd, an etcd without the v2 API, or a prefix without fleet data.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import FleetpyError

DEFAULT_FLEET_PREFIX = "/_coreos.com/fleet/"
FLEET_STATES = ("inactive", "loaded", "launched")
# Bound on what is read from fleet's etcd: fleet advised against 1,000 units; this is far
# more than any fleet cluster's keyspace, and less than a machine's memory.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_SHA1_LENGTH = 20


class FleetKeyspaceError(FleetpyError):
    """fleet's etcd cannot be read, or holds what fleet never wrote."""


@dataclass(frozen=True)
class FleetUnit:
    """One of fleet's jobs: a unit, its desired state, where fleet's engine placed it."""

    name: str
    text: str  # the unit file as fleet stored it (go-systemd's serialization)
    fleet_hash: str  # fleet's sha1 of that text, hex
    target_state: str  # one of FLEET_STATES ("inactive" when fleet had none)
    target: str | None = None  # machine id; None: not placed (or global)


@dataclass(frozen=True)
class FleetMachine:
    """A machine fleetd registered (its object is alive under fleetd's TTL)."""

    id: str
    ip: str = ""
    # fleetd's --metadata with operators' changes merged, as fleet's list-machines shows it
    metadata: Mapping[str, str] = field(default_factory=dict)
    version: str = ""


@dataclass(frozen=True)
class FleetSnapshot:
    units: Mapping[str, FleetUnit]
    machines: Mapping[str, FleetMachine]
    # jobs with no object (fleet skipped them too), and units whose contents are missing
    missing_contents: Mapping[str, str] = field(default_factory=dict)  # name -> sha1


def normalize_fleet_prefix(prefix: str) -> str:
    """fleet joined its prefix with path.Join: '/_coreos.com/fleet/' and '_coreos.com/fleet'
    are the same keys."""
    parts = [part for part in prefix.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise FleetKeyspaceError(f"--fleet-prefix {prefix!r}: '.' and '..' are not key names")
    return "/" + "/".join(parts)


def _children(node: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    """A v2 directory node's children by their last path element."""
    nodes = node.get("nodes", [])
    if not isinstance(nodes, list):
        raise FleetKeyspaceError(f"{key}: not a directory listing etcd returns")
    found: dict[str, Mapping[str, Any]] = {}
    for child in nodes:
        if not isinstance(child, dict) or not isinstance(child.get("key"), str):
            raise FleetKeyspaceError(f"{key}: not a directory listing etcd returns")
        found[child["key"].rstrip("/").rpartition("/")[2]] = child
    return found


def _value(node: Mapping[str, Any], key: str) -> str:
    value = node.get("value")
    if node.get("dir") or not isinstance(value, str):
        raise FleetKeyspaceError(f"{key}: a directory where fleet wrote a value")
    return value


def _json_object(node: Mapping[str, Any], key: str) -> dict[str, Any]:
    try:
        data = json.loads(_value(node, key))
    except (ValueError, RecursionError):
        raise FleetKeyspaceError(f"{key}: not JSON; fleet never wrote it") from None
    if not isinstance(data, dict):
        raise FleetKeyspaceError(f"{key}: not a JSON object; fleet never wrote it")
    return data


def _unit_hash(value: Any, key: str) -> str:
    """fleet's unit.Hash: a Go [20]byte, which encoding/json writes as 20 numbers."""
    if (
        not isinstance(value, list)
        or len(value) != _SHA1_LENGTH
        or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value)
    ):
        raise FleetKeyspaceError(f"{key}: UnitHash is not a sha1 (20 bytes); fleet never wrote it")
    return bytes(value).hex()


def _contents(unit_dir: Mapping[str, Any], key: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for sha1, node in _children(unit_dir, key).items():
        at = f"{key}/{sha1}"
        raw = _json_object(node, at).get("Raw")
        if not isinstance(raw, str):
            raise FleetKeyspaceError(f"{at}: no Raw unit text; fleet never wrote it")
        if hashlib.sha1(raw.encode("utf-8")).hexdigest() != sha1:
            raise FleetKeyspaceError(
                f"{at}: the text's sha1 is not its key; fleet never wrote it (edited by hand?)"
            )
        texts[sha1] = raw
    return texts


def _unit(name: str, job: Mapping[str, Any], key: str, texts: Mapping[str, str]) -> FleetUnit | str:
    """The job's unit, or the sha1 of its missing contents."""
    parts = _children(job, key)
    obj = _json_object(parts["object"], f"{key}/object")
    if obj.get("Name") != name:
        raise FleetKeyspaceError(f"{key}/object: Name is not {name!r}; fleet never wrote it")
    sha1 = _unit_hash(obj.get("UnitHash"), f"{key}/object")
    state = "inactive"
    if "target-state" in parts:
        state = _value(parts["target-state"], f"{key}/target-state")
        if state not in FLEET_STATES:
            raise FleetKeyspaceError(
                f"{key}/target-state: {state!r} is not one of fleet's states "
                f"({', '.join(FLEET_STATES)})"
            )
    target = _value(parts["target"], f"{key}/target") if "target" in parts else ""
    if sha1 not in texts:
        return sha1
    return FleetUnit(name, texts[sha1], sha1, state, target or None)


def _machine(machine_id: str, node: Mapping[str, Any], key: str) -> FleetMachine | None:
    parts = _children(node, key)
    if "object" not in parts:
        return None  # its lease ended: fleet lists only machines with an object
    obj = _json_object(parts["object"], f"{key}/object")
    if obj.get("ID") != machine_id:
        raise FleetKeyspaceError(f"{key}/object: ID is not {machine_id!r}; fleet never wrote it")
    own = obj.get("Metadata") or {}
    if not isinstance(own, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in own.items()
    ):
        raise FleetKeyspaceError(f"{key}/object: Metadata is not a map of strings")
    metadata = dict(own)
    if "metadata" in parts:  # operators' changes: fleet's mergeMetadata
        for name, item in _children(parts["metadata"], f"{key}/metadata").items():
            value = _value(item, f"{key}/metadata/{name}")
            if value:
                metadata[name] = value
            else:
                metadata.pop(name, None)
    ip = obj.get("PublicIP", "")
    version = obj.get("Version", "")
    if not isinstance(ip, str) or not isinstance(version, str):
        raise FleetKeyspaceError(f"{key}/object: PublicIP or Version is not a string")
    return FleetMachine(machine_id, ip, metadata, version)


def parse_keyspace(root: Mapping[str, Any], prefix: str) -> FleetSnapshot:
    """fleet's desired state from the v2 node of PREFIX, read recursively."""
    top = _children(root, prefix)
    if "job" not in top and "machines" not in top:
        raise FleetKeyspaceError(
            f"no fleet data under {prefix}/ (no job/ or machines/ there; see --fleet-prefix)"
        )
    texts = _contents(top["unit"], f"{prefix}/unit") if "unit" in top else {}
    units: dict[str, FleetUnit] = {}
    missing: dict[str, str] = {}
    jobs = _children(top["job"], f"{prefix}/job") if "job" in top else {}
    for name, job in jobs.items():
        key = f"{prefix}/job/{name}"
        if "object" not in _children(job, key):
            continue  # fleet skipped a job without its object (a destroy's leftover)
        found = _unit(name, job, key, texts)
        if isinstance(found, str):
            missing[name] = found
        else:
            units[name] = found
    machines: dict[str, FleetMachine] = {}
    listed = _children(top["machines"], f"{prefix}/machines") if "machines" in top else {}
    for machine_id, node in listed.items():
        machine = _machine(machine_id, node, f"{prefix}/machines/{machine_id}")
        if machine is not None:
            machines[machine_id] = machine
    return FleetSnapshot(units, machines, missing)


def etcd_base_url(url: str) -> str:
    """etcd's client URL as given to --from-fleet, checked: scheme://host:port."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise FleetKeyspaceError(
            f"--from-fleet {url!r}: not an etcd URL (expected http://HOST:PORT or https://...)"
        )
    try:
        parsed.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise FleetKeyspaceError(f"--from-fleet {url!r}: the port is not a number") from None
    if parsed.query or parsed.fragment or parsed.path.strip("/"):
        raise FleetKeyspaceError(
            f"--from-fleet {url!r}: give etcd's client URL only (the prefix goes in --fleet-prefix)"
        )
    return f"{parsed.scheme}://{parsed.netloc}"


def _get(url: str, timeout: float, where: str) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET; a network failure is one line naming WHERE."""
    # Loaded here: importing this module (the plan's types) must not load http.client.
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(64 * 1024)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FleetKeyspaceError(f"cannot reach fleet's etcd at {where}: {reason}") from None


def read_fleet(
    url: str, prefix: str = DEFAULT_FLEET_PREFIX, timeout: float = 10.0
) -> FleetSnapshot:
    """fleet's keyspace under PREFIX at the etcd of URL, through its v2 API."""
    base = etcd_base_url(url)
    prefix = normalize_fleet_prefix(prefix)
    status, body = _get(f"{base}/version", timeout, base)
    try:
        version = json.loads(body) if status == 200 else None
    except (ValueError, RecursionError):
        version = None
    if not isinstance(version, dict) or "etcdserver" not in version:
        raise FleetKeyspaceError(f"{base} does not answer as etcd does (GET /version)")
    query = urllib.parse.urlencode({"recursive": "true", "sorted": "true"})
    status, body = _get(f"{base}/v2/keys{urllib.parse.quote(prefix)}?{query}", timeout, base)
    if len(body) > MAX_RESPONSE_BYTES:
        raise FleetKeyspaceError(
            f"fleet's keyspace at {base} is over {MAX_RESPONSE_BYTES >> 20} MiB: not fleet's"
        )
    try:
        answer = json.loads(body)
    except RecursionError:
        raise FleetKeyspaceError(
            f"keys under {prefix}/ at {base} nest deeper than fleet's ever did: not fleet's"
        ) from None
    except ValueError:
        answer = None
    if status == 404 and isinstance(answer, dict) and answer.get("errorCode") == 100:
        raise FleetKeyspaceError(f"no fleet data under {prefix}/ at {base} (see --fleet-prefix)")
    if not isinstance(answer, dict) or "node" not in answer:
        if status == 404:
            raise FleetKeyspaceError(
                f"etcd {version['etcdserver']} at {base} does not serve the v2 API fleet "
                "used (etcd 3.4: start it with --enable-v2=true)"
            )
        said = answer.get("message") if isinstance(answer, dict) else None
        why = f": {str(said)[:200]}" if said else ""
        raise FleetKeyspaceError(f"etcd at {base} answered {status} to a v2 read of {prefix}{why}")
    node = answer["node"]
    if not isinstance(node, dict) or not node.get("dir"):
        raise FleetKeyspaceError(
            f"no fleet data under {prefix}/ at {base} (a value, not a directory)"
        )
    return parse_keyspace(node, prefix)
