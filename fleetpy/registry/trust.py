"""The trust record (P/trust/record): which keys sign units beyond each host's root keys,
and which are revoked (fleetpy.trust has the rules). Stored and read as the raw signed
envelope: the registry checks no signature, every agent does."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import RegistryError
from ..model.codecs import utf8_text
from ..model.events import WatchBatch
from ..model.trust import TrustEvent
from .transport import EtcdPermissionDenied
from .watches import Watches

RECORD = "record"  # P/trust/record


class TrustKeys(Watches):
    """Written by operators holding a root key; read and watched by every agent."""

    def trust_record(self) -> tuple[int, str | None, int] | None:
        """(etcd's revision, the raw record or None, its mod revision: 0 when absent);
        None when this client's etcd role may not read it (an agent's role from before
        the record: `fleetpy etcd roles` again grants it)."""
        try:
            _, responses, revision = self._txn([], [self.txn.get(self.key("trust", RECORD))])
        except EtcdPermissionDenied:
            return None
        for value, meta in responses[0]:
            return revision, utf8_text(value), meta.mod_revision
        return revision, None, 0

    def put_trust_record(self, raw: str, expected: int) -> int:
        """Write the record if it is still the one read at mod revision EXPECTED (0: none
        yet): two operators' changes never silently overwrite each other."""
        self.ensure_layout()
        key = self.key("trust", RECORD)
        ok, _, revision = self._txn([self.txn.mod(key, expected)], [self.txn.put(key, raw)])
        if not ok:
            raise RegistryError("the trust record changed meanwhile; run the command again")
        return revision

    def watch_trust(
        self, callback: Callable[[WatchBatch[TrustEvent]], None], start_revision: int | None = None
    ) -> Callable[[], None]:
        """The trust record's changes (one key: an agent wakes only when it changes)."""
        return self._watch(
            "trust",
            lambda rel, raw: TrustEvent(raw) if rel == RECORD else None,
            callback,
            start_revision,
            RECORD,
            exact=True,
        )
