"""The registry's plumbing, shared by its key families: keys, decoding (every value read
is checked), raw reads and transactions, the layout marker, retries of lost races."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ..errors import RegistryError
from ..log import log_event
from ..model.audit import AuditTrail
from ..model.codecs import (
    SCHEMA_VERSION,
    MalformedRecord,
    Newer,
    RecordTooNew,
    check_content_hash,
    check_machine_id,
    check_unit_name,
    overlay_from_json,
    utf8_text,
)
from ..model.cordons import CordonRecord
from ..model.failures import FailureRecord
from ..model.records import DeploymentRecord, MachineRecord, ScheduleEntry, UnitRecord, UnitState
from .layout import LAYOUT_KEY, LAYOUT_VALUE, ancestor_markers, ancestors, join
from .transport import (
    Compare,
    DeleteOp,
    EtcdCompacted,
    EtcdTransport,
    GetOp,
    KeyValue,
    PutOp,
    RangeResult,
    TxnOp,
    prefix_range_end,
)

# etcd's default --max-txn-ops is 128; stay under it with room for guards.
MAX_TXN_OPS = 120
# etcd's default --max-request-bytes is 1.5 MiB; keep each transaction well under it.
MAX_TXN_BYTES = 1024 * 1024
CONFLICT_RETRIES = 50

T = TypeVar("T")


def sized_chunks(
    items: Sequence[T],
    limit: int,
    size: Callable[[T], int],
    weight: Callable[[T], int] = lambda item: 1,
) -> Iterator[Sequence[T]]:
    """Runs of ITEMS for one transaction each: at most LIMIT of their WEIGHT (by default,
    LIMIT items) and MAX_TXN_BYTES of their SIZE (a single larger item goes alone)."""
    chunk: list[T] = []
    total = weighed = 0
    for item in items:
        bytes_, ops = size(item), weight(item)
        if chunk and (weighed + ops > limit or total + bytes_ > MAX_TXN_BYTES):
            yield chunk
            chunk, total, weighed = [], 0, 0
        chunk.append(item)
        total += bytes_
        weighed += ops
    if chunk:
        yield chunk


def unit_names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def partial_message(
    done: Sequence[str],
    rest: Sequence[str],
    exc: Exception,
    verb: str = "wrote",
    participle: str = "written",
) -> str:
    """A command of several transactions failed after some: say what was written."""
    total = len(done) + len(rest)
    return (
        f"{verb} {len(done)} of {total} units ({unit_names(done)}) before an error; "
        f"not {participle}: {unit_names(rest)}: {exc}"
    )


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PrefixError(RegistryError):
    """The etcd prefix lies inside another fleetpy prefix, or holds one."""


class TxnConflict(Exception):
    """A guarded transaction lost a race; the caller re-reads and retries."""


class RegistryBase:
    """What every key family of the registry stands on. Thread-safe: the underlying gRPC
    client is."""

    def __init__(
        self, etcd: EtcdTransport, prefix: str, warn: Callable[[str], None] | None = None
    ) -> None:
        self.prefix = prefix
        self._layout_checked = False
        self._layout_unmarked = False  # the next client write puts our layout marker
        self._warn = warn or (lambda message: log_event("record_skipped", detail=message))
        self._warn_newer = warn  # None: a structured line of its own (_left_alone)
        self._warned: set[tuple[str, str]] = set()
        self._warn_lock = threading.Lock()
        self._etcd = etcd
        # Operation builders for transactions (the engine batches its own).
        self.txn = _Ops()

    # -- keys

    def key(self, *parts: str) -> str:
        return join(self.prefix, *parts)

    def _prefix(self, *parts: str) -> str:
        return self.key(*parts) + "/"

    def _strip(self, prefix: str, key: bytes | str) -> str:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        return text[len(prefix) :]

    # -- decoding: every value read is checked; what fleetpy did not write is skipped

    def _skip(self, key: str, why: str) -> None:
        """One warning per malformed key and problem, however often it is read."""
        with self._warn_lock:
            if (key, why) in self._warned:
                return
            self._warned.add((key, why))
        self._warn(f"skipped {key}: not a fleetpy record ({why})")

    def _left_alone(self, key: str, version: int) -> None:
        """One line per key and version too new to read, however often it is read."""
        with self._warn_lock:
            if (key, f"v{version}") in self._warned:
                return
            self._warned.add((key, f"v{version}"))
        if self._warn_newer is not None:
            self._warn_newer(f"left {key} alone: {RecordTooNew(version)}")
        else:
            log_event(
                "record_too_new",
                key=key,
                version=version,
                reads=SCHEMA_VERSION,
                action="left alone",
            )

    def decode(self, kind: str, rel: str, value: bytes, revision: int = 0) -> Any:
        """The record stored at P/<kind>/<rel>; raises MalformedRecord.

        unit: UnitRecord, machines: MachineRecord, metadata: an overlay (dict), schedule
        ("machine/unit") and global: ScheduleEntry, state ("machine/unit"): UnitState,
        reason and content: str, deploy: DeploymentRecord, failure ("machine/unit"):
        FailureRecord, cordon: CordonRecord, audit: AuditTrail.
        """
        if kind == "unit":
            return UnitRecord.from_json(rel, value, revision)
        if kind == "machines":
            return MachineRecord.from_json(rel, value)
        if kind == "metadata":
            return overlay_from_json(rel, value)
        if kind == "schedule":
            machine, _, unit = rel.partition("/")
            check_machine_id(machine)
            return ScheduleEntry.from_json(unit, value)
        if kind == "global":
            return ScheduleEntry.from_json(rel, value)
        if kind == "state":
            machine, _, unit = rel.partition("/")
            return UnitState.from_json(unit, machine, value)
        if kind == "reason":
            check_unit_name(rel)
            return utf8_text(value)
        if kind == "content":
            check_content_hash(rel)
            return utf8_text(value)
        if kind == "deploy":
            return DeploymentRecord.from_json(rel, value, revision)
        if kind == "failure":
            machine, _, unit = rel.partition("/")
            return FailureRecord.from_json(machine, unit, value)
        if kind == "cordon":
            return CordonRecord.from_json(rel, value)
        if kind == "audit":
            return AuditTrail.from_json(rel, value, revision)
        return utf8_text(value)

    def _decoded(
        self, kind: str, start: str, key: bytes, value: bytes, revision: int = 0
    ) -> tuple[str, Any] | None:
        """(key relative to P/<kind>/, record), or None after warning about a bad one
        (or one too new to read: where that must not read as absent, _found)."""
        item = self._found(kind, start, key, value, revision)
        return None if item is None or isinstance(item[1], Newer) else item

    def _found(
        self, kind: str, start: str, key: bytes, value: bytes, revision: int = 0
    ) -> tuple[str, Any] | None:
        """_decoded, but a record too new to read is (rel, Newer(version)), said once."""
        full = key.decode("utf-8", "replace")
        try:
            rel = utf8_text(key)[len(start) :]
        except MalformedRecord as exc:
            self._skip(full, str(exc))
            return None
        try:
            return rel, self.decode(kind, rel, value, revision)
        except RecordTooNew as exc:
            self._left_alone(full, exc.version)
            return rel, Newer(exc.version)
        except MalformedRecord as exc:
            self._skip(full, str(exc))
            return None

    def _read_kind(self, kind: str) -> list[tuple[str, Any]]:
        start = self._prefix(kind)
        found = []
        for value, meta in self._range(start):
            item = self._decoded(kind, start, meta.key, value, meta.mod_revision)
            if item is not None:
                found.append(item)
        return found

    # -- raw reads

    def _range(self, prefix: str, keys_only: bool = False) -> list[tuple[bytes, KeyValue]]:
        result = self._etcd.range(prefix, prefix_range_end(prefix), keys_only=keys_only)
        return [(kv.value, kv) for kv in result.kvs]

    def _get(self, key: str) -> KeyValue | None:
        kvs = self._etcd.range(key).kvs
        return kvs[0] if kvs else None

    def _txn(
        self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> tuple[bool, list[Any], int]:
        """A transaction: (succeeded, responses, etcd's revision after it). A range
        response is a list of (value, KeyValue); the revision lets watches resume exactly
        where a read left off."""
        result = self._etcd.txn(compare, success, failure)
        responses: list[Any] = [
            [(kv.value, kv) for kv in item.kvs] if isinstance(item, RangeResult) else item
            for item in result.responses
        ]
        return result.succeeded, responses, result.revision

    # -- layout: one fleetpy prefix never lies inside another

    def _ancestors(self) -> list[str]:
        """'/a/b' -> ['/a', ''] (the root prefix last)."""
        return ancestors(self.prefix)

    def _layout_gets(self) -> list[Any]:
        keys = [self.key(LAYOUT_KEY), *ancestor_markers(self.prefix)]
        return [self.txn.get(key) for key in keys]

    def _check_layout(self, responses: Sequence[Any]) -> None:
        own, *ancestors = responses
        for ancestor, kvs in zip(self._ancestors(), ancestors):
            if kvs:
                raise PrefixError(
                    f"etcd prefix {self.prefix} lies inside the fleetpy prefix {ancestor or '/'}; "
                    "use a prefix outside it (each would read the other's keys as its own)"
                )
        if not own:
            # First use of this prefix: it must not hold another fleetpy prefix either.
            start = self.prefix + "/"
            for _, meta in self._range(start, keys_only=True):
                key = meta.key.decode("utf-8", "replace")
                if key.endswith("/" + LAYOUT_KEY) and key != self.key(LAYOUT_KEY):
                    nested = key[: -len(LAYOUT_KEY) - 1]
                    raise PrefixError(
                        f"etcd prefix {self.prefix or '/'} holds the fleetpy prefix {nested}; "
                        "use a prefix outside it (each would read the other's keys as its own)"
                    )
            self._layout_unmarked = True
        self._layout_checked = True

    def wait_for_layout(self, stop: threading.Event | None = None, mark: bool = True) -> None:
        """ensure_layout for a daemon starting while etcd may still be away: retry until
        etcd answers; a nested prefix (PrefixError) is fatal."""
        while True:
            try:
                self.ensure_layout(mark)
                return
            except PrefixError:
                raise
            except RegistryError as exc:
                log_event("etcd_unreachable", error=str(exc), retry_in="1s")
                if stop is not None and stop.wait(1.0):
                    return
                if stop is None:
                    time.sleep(1.0)

    def ensure_layout(self, mark: bool = True) -> None:
        """Refuse a nested prefix, and mark ours (daemons call this once at start).
        Agents do not mark (MARK false): a prefix without its marker is one whose data
        etcd lost, and an agent must not make it look like an empty cluster."""
        if self._layout_checked and not self._layout_unmarked:
            return
        if not self._layout_checked:
            _, responses, _ = self._txn([], self._layout_gets())
            self._check_layout(responses)
        if self._layout_unmarked and mark:
            key = self.key(LAYOUT_KEY)
            self._txn([self.txn.version(key, 0)], [self.txn.put(key, LAYOUT_VALUE)])
            self._layout_unmarked = False

    def layout_present(self, revision: int = 0) -> bool:
        """Whether the prefix holds fleetpy's marker (at REVISION, if etcd still has it):
        written with the first unit, gone only when etcd lost fleetpy's data (wiped,
        restored from before, a new etcd)."""
        try:
            kvs = self._etcd.range(self.key(LAYOUT_KEY), revision=revision).kvs
        except EtcdCompacted:
            kvs = self._etcd.range(self.key(LAYOUT_KEY)).kvs
        return bool(kvs)

    def _retry(self, attempt: Callable[[], T]) -> T:
        for _ in range(CONFLICT_RETRIES):
            try:
                return attempt()
            except TxnConflict:
                continue
        raise RegistryError("gave up after repeated conflicting updates from other clients")


class _Ops:
    """Builders of transaction guards and operations (keys and values as text)."""

    @staticmethod
    def get(key: str, range_end: bytes | None = None) -> GetOp:
        return GetOp(key.encode(), range_end)

    @staticmethod
    def put(key: str, value: str, lease: int = 0) -> PutOp:
        return PutOp(key.encode(), value.encode(), lease)

    @staticmethod
    def delete(key: str) -> DeleteOp:
        return DeleteOp(key.encode())

    @staticmethod
    def mod(key: str, revision: int) -> Compare:
        return Compare.mod(key, revision)

    @staticmethod
    def version(key: str, version: int) -> Compare:
        return Compare.version(key, version)

    @staticmethod
    def value(key: str, value: str) -> Compare:
        return Compare.value_is(key, value)
