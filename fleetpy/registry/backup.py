"""Backup and restore of the desired state (fleetpy.backup has the file format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import RegistryError
from ..log import log_event
from ..model.audit import AuditTrail, AuditVerb
from ..model.codecs import MalformedRecord, utf8_text
from ..model.records import UnitRecord
from .audit import AuditKeys
from .base import MAX_TXN_OPS, sized_chunks
from .layout import ADOPT
from .transport import EtcdPermissionDenied, prefix_range_end

# What people wrote (a backup's contents), in the order a restore writes it: contents
# before the units that name them, units last (the engine places what it sees). Audit
# trails are history rather than desired state: a restored unit's is written with it.
DESIRED_KINDS = ("content", "global", "metadata", "cordon", "trust", "deploy", "audit", "unit")
AUDIT_PREFIX = "audit/"


class Backups(AuditKeys):
    """The desired state's keys, read at one revision and written back."""

    def read_desired(self) -> tuple[int, dict[str, str]]:
        """Every key of DESIRED_KINDS at one revision: (revision, {"kind/rel": value}),
        but those under a lease (a maintenance window: restored without its lease, it
        would never end)."""
        starts = [self._prefix(kind) for kind in DESIRED_KINDS]
        _, responses, revision = self._txn(
            [], [self.txn.get(s, prefix_range_end(s)) for s in starts]
        )
        found: dict[str, str] = {}
        for kind, start, kvs in zip(DESIRED_KINDS, starts, responses):
            for value, meta in kvs:
                if meta.lease:  # a maintenance window's cordon: it ends with its lease
                    continue
                found[f"{kind}/{self._strip(start, meta.key)}"] = utf8_text(value)
        return revision, found

    def restore_desired(self, keys: Mapping[str, str]) -> int:
        """Write a backup's KEYS ("kind/rel": value) into this prefix; returns how many
        were written. Every record is checked first, and a prefix holding other desired
        state is refused: nothing is written then. Keys already there with the same
        value are skipped, so a restore that was interrupted is finished by running it
        again. Several transactions when it is large, contents first, units last."""
        for rel_key, value in keys.items():
            kind, _, rel = rel_key.partition("/")
            if kind not in DESIRED_KINDS:
                raise RegistryError(f"backup key {rel_key}: not desired state")
            try:
                self.decode(kind, rel, value.encode())
            except MalformedRecord as exc:
                raise RegistryError(f"backup key {rel_key}: {exc}") from None
        _, present = self.read_desired()
        # Trails left by destroyed units are no reason to refuse (and are kept).
        other = sorted(
            k for k, v in present.items() if keys.get(k) != v and not k.startswith(AUDIT_PREFIX)
        )
        if other:
            raise RegistryError(
                f"prefix {self.prefix or '/'} already holds other desired state ({len(other)} "
                f"keys, e.g. {other[0]}): restore into an empty prefix or etcd"
            )
        todo = sorted(
            (k for k in keys if k not in present and not self._restored_with_unit(k, keys)),
            key=lambda k: (DESIRED_KINDS.index(k.partition("/")[0]), k),
        )
        if todo:
            self.ensure_layout()  # a restored prefix is marked before its first key
            # Before the first unit: the engine places each restored unit where an agent
            # reports it still running, instead of anywhere (where it would restart).
            try:
                self._etcd.put(self.key("engine", ADOPT), str(len(todo)))
            except EtcdPermissionDenied:
                self._warn(
                    "this etcd user may not ask the engine to adopt running units (a role "
                    "from before restore asked; `fleetpy cluster up --secure` renews roles): "
                    "restored units are placed anew, and may restart elsewhere"
                )
        # Half as many keys as a transaction takes: a unit's trail goes with it.
        for chunk in sized_chunks(todo, MAX_TXN_OPS // 2, lambda k: len(k) + 2 * len(keys[k])):
            full = [self.key(k) for k in chunk]
            ops = [self.txn.put(f, keys[k]) for f, k in zip(full, chunk)]
            compares = [self.txn.version(f, 0) for f in full]
            self._restore_trails(chunk, keys, compares, ops)
            succeeded, _, _ = self._txn(compares, ops)
            if not succeeded:
                raise RegistryError(
                    f"prefix {self.prefix or '/'} was written to while restoring; run restore again"
                )
        if todo:
            log_event("desired_state_restored", prefix=self.prefix, keys=len(todo))
        return len(todo)

    @staticmethod
    def _restored_with_unit(key: str, keys: Mapping[str, str]) -> bool:
        """A trail whose unit the backup holds: written in that unit's transaction."""
        return key.startswith(AUDIT_PREFIX) and "unit/" + key[len(AUDIT_PREFIX) :] in keys

    def _restore_trails(
        self, chunk: Sequence[str], keys: Mapping[str, str], compares: list[Any], ops: list[Any]
    ) -> None:
        """Each restored unit's trail, in its transaction, with a `restore` entry: the one
        in the prefix (a destroyed unit's, newer), else the backup's, else a new one."""
        names = [k.partition("/")[2] for k in chunk if k.startswith("unit/")]
        if not names:
            return
        for name, trail in self.unit_histories(names).items():
            backed_up = keys.get(AUDIT_PREFIX + name)
            if not trail.revision and backed_up is not None:
                trail = AuditTrail.from_json(name, backed_up.encode())
            record = UnitRecord.from_json(name, keys["unit/" + name].encode())
            guard, put = self._audit_append(trail, self._audit_entry(AuditVerb.RESTORE, record))
            compares.append(guard)
            ops.append(put)
