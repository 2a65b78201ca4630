"""Units' audit trails (P/audit/<name>, fleetpy.model.audit): read them, and the put and
guard that append an entry inside the transaction of the change it records (units.py)."""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Sequence
from typing import Any

from ..model.audit import AuditEntry, AuditTrail, AuditVerb
from ..model.codecs import MalformedRecord, RecordTooNew
from ..model.records import UnitRecord
from ..unitfile.signing import signature_key_id
from .base import RegistryBase
from .transport import Compare, GetOp, PutOp


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry for the uid
        return ""


class AuditKeys(RegistryBase):
    """Audit trails: one key per unit name, appended to in the transaction of each change."""

    # Who this client writes as in etcd: --username, else its client certificate's CN
    # (what etcd takes the user from); None on an etcd without auth. Set by Registry.
    etcd_user: str | None = None
    _client: tuple[str, str] | None = None  # (login, host name), read once

    def _client_identity(self) -> tuple[str, str]:
        """This client's login and host name (read once: a batch has one writer)."""
        if self._client is None:
            self._client = (_local_user(), socket.gethostname())
        return self._client

    def unit_history(self, name: str) -> AuditTrail | None:
        """NAME's trail (None: no entry was ever written for it, or it is unreadable)."""
        meta = self._get(self.key("audit", name))
        if meta is None:
            return None
        return self._trail(name, meta.value, int(meta.mod_revision))

    def _trail(self, name: str, value: bytes, revision: int) -> AuditTrail | None:
        try:
            return AuditTrail.from_json(name, value, revision)
        except RecordTooNew as exc:
            self._left_alone(self.key("audit", name), exc.version)
        except MalformedRecord as exc:
            self._skip(self.key("audit", name), str(exc))
        return None

    def _audit_gets(self, names: Sequence[str]) -> list[GetOp]:
        return [self.txn.get(self.key("audit", n)) for n in names]

    def _audit_read(self, names: Sequence[str], responses: Sequence[Any]) -> dict[str, AuditTrail]:
        """The trails of NAMES from their gets' responses (absent: an empty trail at
        revision 0; unreadable: an empty trail at the key's revision, which the next
        entry replaces — the guard still holds)."""
        trails: dict[str, AuditTrail] = {}
        for name, kvs in zip(names, responses):
            trails[name] = AuditTrail(name)
            for value, meta in kvs:
                revision = int(meta.mod_revision)
                trails[name] = self._trail(name, value, revision) or AuditTrail(name, (), revision)
        return trails

    def _audit_entry(
        self, verb: AuditVerb, record: UnitRecord | None, detail: str = ""
    ) -> AuditEntry:
        """An entry by this client, now, for RECORD as written (None: destroyed)."""
        # Several signatures are one text, separated by spaces: each one's key.
        texts = (record.signature or "").split(" ") if record is not None else []
        kids = tuple(kid for text in texts if (kid := signature_key_id(text)))
        login, host = self._client_identity()
        return AuditEntry(
            verb,
            round(time.time(), 3),
            self.etcd_user,
            login,
            host,
            record.hash if record is not None else None,
            record.desired if record is not None else None,
            kids,
            record.origin if record is not None else None,
            detail,
        )

    def _audit_append(self, trail: AuditTrail, entry: AuditEntry) -> tuple[Compare, PutOp]:
        """The guard on the trail as read, and the put of it with ENTRY appended: two
        writers of the same unit cannot both append to the same trail."""
        return self._audit_write(trail, trail.appended(entry))

    def _audit_write(self, trail: AuditTrail, written: AuditTrail) -> tuple[Compare, PutOp]:
        """The guard on TRAIL as read, and the put of WRITTEN in its place."""
        key = self.key("audit", trail.unit)
        guard = self.txn.mod(key, trail.revision) if trail.revision else self.txn.version(key, 0)
        return guard, self.txn.put(key, written.to_json())

    def unit_histories(self, names: Sequence[str]) -> dict[str, AuditTrail]:
        """Several trails in one request (a unit without one: an empty trail)."""
        _, responses, _ = self._txn([], self._audit_gets(names))
        return self._audit_read(names, responses)


__all__ = ["AuditKeys"]
