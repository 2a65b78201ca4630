"""Units and their contents (clients write them; the engine deletes unused contents):
P/unit, P/global and P/content; each change of a unit appends to its P/audit trail in the
same transaction (audit.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..errors import FleetpyError, PartialWriteError, StateError, UnknownUnitError
from ..model.audit import TRAIL_BYTES, AuditTrail, AuditVerb, verb_of
from ..model.changes import UnitChange
from ..model.codecs import CONTENT_HASH, SCHEMA_VERSION, MalformedRecord, RecordTooNew
from ..model.global_rolls import GlobalVersion, after_write
from ..model.records import DeploymentSession, ScheduleEntry, UnitRecord
from ..states import DesiredState
from .audit import AuditKeys
from .base import MAX_TXN_OPS, chunks, partial_message, sized_chunks
from .deployments import DeploymentKeys
from .layout import LAYOUT_KEY, LAYOUT_VALUE
from .transport import prefix_range_end


def _unit_chunks(changes: Sequence[UnitChange]) -> Iterator[Sequence[UnitChange]]:
    """Transactions of at most MAX_TXN_OPS operations, and as many guards (_change_ops), and
    MAX_TXN_BYTES of unit text (a global unit's text is written twice) and trails."""
    return sized_chunks(
        changes,
        MAX_TXN_OPS,
        lambda change: len(change.text or "") * (2 if change.is_global else 1) + TRAIL_BYTES,
        _change_ops,
    )


def _change_ops(change: UnitChange) -> int:
    """A change's operations or guards, whichever are more: its record and trail (put and
    guard each), its content (a put) or its template (a guard), its global entry (both).
    3 for most: 40 units a transaction."""
    return 2 + (change.text is not None or change.template is not None) + change.is_global


class UnitKeys(DeploymentKeys, AuditKeys):
    """Units and contents (on DeploymentKeys: an apply's unit writes are guarded by its
    deployment record; on AuditKeys: each change is recorded in the unit's trail)."""

    def get_unit(self, name: str) -> UnitRecord | None:
        meta = self._get(self.key("unit", name))
        if meta is None:
            return None
        return self._unit_record(name, meta.key, meta.value, meta.mod_revision)

    def _unit_record(self, name: str, key: bytes, value: bytes, revision: int) -> UnitRecord | None:
        """A unit record a client asked for by name: None if malformed (skipped, as a
        listing would); a newer fleetpy's is an error, never taken for absent or rewritten."""
        try:
            return UnitRecord.from_json(name, value, revision)
        except RecordTooNew as exc:
            raise StateError(
                f"unit {name} was written by a newer fleetpy (record version "
                f"{exc.version}; this one reads up to {SCHEMA_VERSION}): left as it is; "
                "use the newer fleetpy for it"
            ) from None
        except MalformedRecord as exc:
            self._skip(key.decode("utf-8", "replace"), str(exc))
            return None

    def _client_range(self, kind: str) -> list[tuple[bytes, Any]]:
        """A range read by a client about to write: the layout check rides along."""
        start = self._prefix(kind)
        layout = [] if self._layout_checked else self._layout_gets()
        get = self.txn.get(start, prefix_range_end(start))
        _, responses, _ = self._txn([], [get, *layout])
        if layout:
            self._check_layout(responses[1:])
        return list(responses[0])

    def list_units(self) -> dict[str, UnitRecord]:
        start = self._prefix("unit")
        found = {}
        for value, meta in self._client_range("unit"):
            item = self._decoded("unit", start, meta.key, value, meta.mod_revision)
            if item is not None:
                found[item[0]] = item[1]
        return found

    def unit_keys(self) -> list[str]:
        """Names of every key under P/unit/, records fleetpy can read or not: what
        destroy selects from, so a malformed record can still be removed."""
        start = self._prefix("unit")
        return [
            meta.key.decode("utf-8", "replace")[len(start) :]
            for _, meta in self._client_range("unit")
        ]

    def get_content(self, content_hash: str) -> str | None:
        meta = self._get(self.key("content", content_hash))
        if meta is None:
            return None
        item = self._decoded("content", self._prefix("content"), meta.key, meta.value)
        return None if item is None else item[1]

    def get_contents(self, hashes: Sequence[str]) -> dict[str, str]:
        """Many content blobs, MAX_TXN_OPS per request."""
        found: dict[str, str] = {}
        for chunk in chunks(list(hashes), MAX_TXN_OPS):
            _, responses, _ = self._txn([], [self.txn.get(self.key("content", h)) for h in chunk])
            start = self._prefix("content")
            for kvs in responses:
                for value, meta in kvs:
                    item = self._decoded("content", start, meta.key, value)
                    if item is not None:
                        found[item[0]] = item[1]
        return found

    def get_units(self, names: Sequence[str]) -> dict[str, UnitRecord | None]:
        """The named unit records (None where absent), MAX_TXN_OPS per request."""
        found: dict[str, UnitRecord | None] = {}
        for chunk in chunks(list(dict.fromkeys(names)), MAX_TXN_OPS):
            gets = [self.txn.get(self.key("unit", n)) for n in chunk]
            # Clients read before they write: check the layout in the same request.
            layout = [] if self._layout_checked else self._layout_gets()
            _, responses, _ = self._txn([], gets + layout)
            if layout:
                self._check_layout(responses[len(gets) :])
                responses = responses[: len(gets)]
            for name, kvs in zip(chunk, responses):
                found[name] = None
                for value, meta in kvs:
                    found[name] = self._unit_record(name, meta.key, value, meta.mod_revision)
        return found

    def change_units(
        self,
        changes: Sequence[UnitChange],
        known: Mapping[str, UnitRecord | None] | None = None,
        session: DeploymentSession | None = None,
    ) -> list[UnitRecord]:
        """Submit units and/or set their desired state, all-or-nothing per transaction.

        Each unit's record is guarded by the revision read, so concurrent clients
        never overwrite each other; on a lost race the batch is re-read and retried.
        Submitting different content under an existing name is an error (fleet:
        contents are immutable; destroy first). Batches larger than one etcd
        transaction allows are split into several transactions.

        `known`: records the caller just read (get_units), used for the first attempt
        so a command costs one read and one write; a lost race re-reads.

        Each change appends to the unit's audit trail in the same transaction. The first
        attempt reads only the trails of units that exist (a new unit's trail is written
        if there is none: the rare name used before loses the race once); a lost race
        re-reads records and trails in one request.
        """
        results: list[UnitRecord] = []
        for chunk in _unit_chunks(changes):
            first: list[Mapping[str, UnitRecord | None] | None] = [known]
            hopeful = [True]

            def attempt(
                chunk: Sequence[UnitChange] = chunk,
                first: list[Mapping[str, UnitRecord | None] | None] = first,
                hopeful: list[bool] = hopeful,
            ) -> list[UnitRecord]:
                records, first[0] = first[0], None
                new_trails, hopeful[0] = hopeful[0], False
                return self._change_chunk(chunk, records, session, new_trails)

            try:
                results.extend(self._retry(attempt))
            except FleetpyError as exc:
                if not results:
                    raise
                written = [r.name for r in results]
                raise PartialWriteError(
                    partial_message(
                        written, [c.name for c in changes if c.name not in set(written)], exc
                    )
                ) from None
        return results

    def _change_chunk(
        self,
        chunk: Sequence[UnitChange],
        known: Mapping[str, UnitRecord | None] | None,
        session: DeploymentSession | None,
        new_trails: bool = False,
    ) -> list[UnitRecord]:
        """One transaction of change_units. NEW_TRAILS: take units without a record to
        have no trail either (guarded so: a wrong guess fails the transaction)."""
        names = [c.name for c in chunk]
        templates = sorted({c.template for c in chunk if c.template})
        wanted = [*names, *templates]
        trails: dict[str, AuditTrail] = {}
        if known is None or any(n not in known for n in wanted):
            if new_trails:
                known = self.get_units(wanted)
            else:
                known, trails = self._units_and_trails(wanted, names)
        existing = {n: r for n in wanted if (r := known[n]) is not None}
        unread = [n for n in names if n not in trails and (n in existing or not new_trails)]
        if unread:  # the trails of units that exist (all, after a lost race)
            trails.update(self.unit_histories(unread))
        for name in names:
            trails.setdefault(name, AuditTrail(name))

        compares: list[Any] = []
        ops: list[Any] = []
        results: list[UnitRecord] = []
        unchanged: list[UnitRecord] = []
        contents_put: set[str] = set()
        for change in chunk:
            current = existing.get(change.name)
            key = self.key("unit", change.name)
            if current is not None:
                record = current
                if change.hash is not None and change.hash != current.hash:
                    if not change.replace or change.text is None:
                        raise StateError.different_contents(change.name, current.hash, change.hash)
                    if change.is_global != current.is_global:
                        raise StateError.global_changes(change.name, change.is_global)
                    # A new version under the same name: the engine retargets it in place
                    # and the agent stops the old contents and starts the new.
                    record = replace(
                        current, hash=change.hash, origin=change.origin, signature=change.signature
                    )
                    if change.hash not in contents_put:
                        contents_put.add(change.hash)
                        ops.append(self.txn.put(self.key("content", change.hash), change.text))
                elif change.replace and change.origin is not None:
                    record = replace(current, origin=change.origin)
                if change.signature is not None:
                    record = replace(record, signature=change.signature)  # also a re-signing
                compares.append(self.txn.mod(key, current.revision))
            else:
                if change.hash is not None and change.text is not None:
                    record = UnitRecord(
                        change.name,
                        change.hash,
                        DesiredState.INACTIVE,
                        change.is_global,
                        change.owner,
                        change.origin,
                        signature=change.signature,
                    )
                    if change.hash not in contents_put:
                        contents_put.add(change.hash)
                        ops.append(self.txn.put(self.key("content", change.hash), change.text))
                elif change.template and change.template in existing:
                    tmpl = existing[change.template]
                    # Not the template's signature: it covers the template's name only.
                    record = UnitRecord(
                        change.name,
                        tmpl.hash,
                        DesiredState.INACTIVE,
                        tmpl.is_global,
                        change.owner,
                        signature=change.signature,
                    )
                    compares.append(self.txn.mod(self.key("unit", change.template), tmpl.revision))
                else:
                    raise UnknownUnitError.not_submitted(change.name, change.template)
                compares.append(self.txn.version(key, 0))
            if change.desired is not None:
                record = replace(record, desired=change.desired)
            if current is None or record != current:
                ops.append(self.txn.put(key, record.to_json()))
                verb = verb_of(
                    current.hash if current else None,
                    current.desired if current else None,
                    current.signature if current else None,
                    record.hash,
                    record.desired,
                    record.signature,
                )
                detail = f"rolling over {len(change.rolling)} machines" if change.rolling else ""
                guard, put = self._audit_append(
                    trails[change.name], self._audit_entry(verb, record, detail)
                )
                compares.append(guard)
                ops.append(put)
                if record.is_global:
                    put, guard = self._global_put(record, change)
                    ops.append(put)
                    compares.append(guard)
            else:
                unchanged.append(record)
            results.append(record)
        if not ops:
            return results
        marking = self._layout_unmarked
        if marking:
            ops.append(self.txn.put(self.key(LAYOUT_KEY), LAYOUT_VALUE))
        revision = self._guarded(compares, ops, session)
        if marking:
            self._layout_unmarked = False
        # What was written now has this mod_revision (a reader can wait for it to show).
        return [r if r in unchanged else replace(r, revision=revision) for r in results]

    def _units_and_trails(
        self, wanted: Sequence[str], names: Sequence[str]
    ) -> tuple[dict[str, UnitRecord | None], dict[str, AuditTrail]]:
        """The records of WANTED and the trails of NAMES in one request (a chunk of
        change_units: at most 40 names and their templates)."""
        gets = [self.txn.get(self.key("unit", n)) for n in wanted]
        trail_gets = self._audit_gets(names)
        # Clients read before they write: check the layout in the same request.
        layout = [] if self._layout_checked else self._layout_gets()
        _, responses, _ = self._txn([], [*gets, *trail_gets, *layout])
        if layout:
            self._check_layout(responses[len(gets) + len(trail_gets) :])
        found: dict[str, UnitRecord | None] = {}
        for name, kvs in zip(wanted, responses):
            found[name] = None
            for value, meta in kvs:
                found[name] = self._unit_record(name, meta.key, value, meta.mod_revision)
        return found, self._audit_read(names, responses[len(gets) : len(gets) + len(trail_gets)])

    def owned_units(self, owner: str) -> dict[str, UnitRecord]:
        return {name: record for name, record in self.list_units().items() if record.owner == owner}

    def _global_put(self, record: UnitRecord, change: UnitChange) -> tuple[Any, Any]:
        """The global entry's put, and the guard on the entry as read: it carries a
        rolling update (model.global_rolls), which a concurrent step must not lose."""
        key = self.key("global", record.name)
        meta = self._get(key)
        current: ScheduleEntry | None = None
        if meta is not None:
            item = self._decoded("global", self._prefix("global"), meta.key, meta.value)
            current = None if item is None else item[1]
        guard = self.txn.mod(key, meta.mod_revision) if meta else self.txn.version(key, 0)
        text = change.text if change.hash == record.hash and change.text is not None else None
        if text is None:
            same = current is not None and current.hash == record.hash
            text = current.text if current is not None and same else None
        if text is None:
            text = self.get_content(record.hash) or ""
        was = (
            None
            if current is None
            else GlobalVersion(current.hash, current.text, current.signature)
        )
        roll = after_write(current.roll if current else None, was, record.hash, change.rolling)
        entry = ScheduleEntry(
            record.name, record.hash, record.desired, text, record.signature, roll
        )
        return self.txn.put(key, entry.to_json()), guard

    def destroy_units(
        self, names: Sequence[str], session: DeploymentSession | None = None
    ) -> list[str]:
        """Delete unit records (and global entries) in one transaction per chunk.

        The engine then unschedules them and agents stop them; content blobs no unit
        refers to are garbage-collected by the engine.
        """
        if not self._layout_checked:
            _, responses, _ = self._txn([], self._layout_gets())
            self._check_layout(responses)
        destroyed: list[str] = []
        for chunk in chunks(list(names), MAX_TXN_OPS // 3):
            try:
                destroyed.extend(self._destroy_chunk(chunk, session))
            except FleetpyError as exc:
                if not destroyed:
                    raise
                gone = set(destroyed)
                raise PartialWriteError(
                    partial_message(
                        destroyed,
                        [n for n in names if n not in gone],
                        exc,
                        "destroyed",
                        "destroyed",
                    )
                ) from None
        return destroyed

    def _destroy_chunk(
        self, chunk: Sequence[str], session: DeploymentSession | None = None
    ) -> list[str]:
        def attempt() -> list[str]:
            gets = [self.txn.get(self.key("unit", n)) for n in chunk]
            _, responses, _ = self._txn([], [*gets, *self._audit_gets(chunk)])
            trails = self._audit_read(chunk, responses[len(gets) :])
            compares: list[Any] = []
            ops: list[Any] = []
            done: list[str] = []
            for name, kvs in zip(chunk, responses):
                for _value, meta in kvs:
                    compares.append(self.txn.mod(self.key("unit", name), meta.mod_revision))
                    ops.append(self.txn.delete(self.key("unit", name)))
                    ops.append(self.txn.delete(self.key("global", name)))
                    guard, put = self._audit_append(
                        trails[name], self._audit_entry(AuditVerb.DESTROY, None)
                    )
                    compares.append(guard)
                    ops.append(put)
                    done.append(name)
            if ops:
                self._guarded(compares, ops, session)
            return done

        return self._retry(attempt)

    def count(self, kind: str) -> int:
        """How many keys P/<kind>/ holds, without transferring them."""
        start = self._prefix(kind)
        return self._etcd.range(start, prefix_range_end(start), count_only=True).count

    def list_content(self) -> dict[str, int]:
        """Content hash -> mod_revision of its blob (keys that are not hashes skipped)."""
        start = self._prefix("content")
        found: dict[str, int] = {}
        for _, meta in self._range(start, keys_only=True):
            rel = self._strip(start, meta.key)
            if CONTENT_HASH.fullmatch(rel):
                found[rel] = int(meta.mod_revision)
            else:
                self._skip(self._strip("", meta.key), "not a content hash")
        return found

    def delete_content(self, revisions: Mapping[str, int]) -> int:
        """Delete content blobs that nobody re-wrote since they were listed.

        A client submitting the same content re-puts the blob in the same transaction
        as its unit record, which bumps the blob's revision and so protects it here.
        """
        deleted = 0
        for content_hash, revision in revisions.items():
            key = self.key("content", content_hash)
            ok, _, _ = self._txn([self.txn.mod(key, revision)], [self.txn.delete(key)])
            deleted += ok
        return deleted
