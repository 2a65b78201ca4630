"""An agent's trusted keys as they change while it runs (fleetpy.trust has the rules).

It rescans the host's trusted directory (the root keys) every RESCAN seconds: a stat of
each *.pub, a file read again only when its stat changed. A key file that is replaced
by a symlink, a FIFO or anything but a regular file, or that stops being a readable
ed25519 key, is refused with one log line and the key it held before stays (nothing that
ran stops; nothing new is read from it); a file removed is a key removed. A directory
that vanishes or can no longer be read keeps the last good set, said once: a machine
never trusts more than before because of it.

It follows the trust record (read at each of the agent's fresh reads, then watched),
and keeps the record it accepted in a file of its own on the host (CACHE, written
atomically, 0600), so neither an agent restart nor a record deleted or replayed in etcd
brings a revoked key back. The set in force changes, and the agent screens its units
again (start's ON_CHANGE), when a root key comes or goes, a record is accepted, or a release
key's expiry passes."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, SigningError
from .files import display_path
from .log import log_event
from .model.codecs import MalformedRecord, read_record, typed_field, versioned_json
from .model.events import WatchBatch
from .model.trust import SignedTrust, TrustEvent, TrustRecord
from .registry.roles import AgentRegistry
from .trust import Accepted, Refused, admit, effective, next_expiry, open_record
from .unitfile.signing import PUBLIC_SUFFIX, TrustedKey, TrustedKeys, key_id, load_public_key

RESCAN = 1.0  # seconds between stats of the trusted directory
MAX_CACHE_BYTES = 128 * 1024

_Stamp = tuple[int, int, int, int, int]  # (device, inode, size, mtime ns, mode)


@dataclass(frozen=True)
class _Seen:
    stamp: _Stamp | None  # None: refused (the key below, if any, is from before)
    key: TrustedKey | None


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


class HostTrust:
    """The keys whose signatures count on this host, now. Thread-safe."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        cache: str | os.PathLike[str],
        machine: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(os.path.expanduser(os.fspath(directory)))
        self.cache = Path(cache)
        self.machine = machine
        self.on_change: Callable[[], None] = lambda: None
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._said: set[str] = set()  # problems logged once, until they are gone
        self._record: Accepted | None = None
        self._received = 0.0  # this host's clock when it accepted the record in force
        self._current = TrustedKeys()
        self._expiry: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._denied = False
        self._last_refused: str | None = None
        if not self.directory.is_dir():  # a typo must not leave a machine running nothing
            raise ConfigError(
                f"cannot read trusted keys directory {display_path(self.directory)}: "
                "no such directory"
            )
        self.rescan(quiet=True)  # said in trusted_keys_loaded below
        self._load_cache()
        self._recompute()
        log_event(
            "trusted_keys_loaded",
            machine=machine,
            directory=str(self.directory),
            keys=",".join(sorted(self._current.keys)) or "none",
            serial=self.serial,
        )
        if not self._current.keys:
            self._say("empty", f"no usable key in {self.directory}: every unit will be rejected")

    # -- what the agent reads

    def current(self) -> TrustedKeys:
        """The keys that count now (an expiry that passed since is applied here too)."""
        with self._lock:
            if self._expiry is not None and self._clock() >= self._expiry:
                self._recompute()
            return self._current

    @property
    def serial(self) -> int:
        return 0 if self._record is None else self._record.record.serial

    # -- lifecycle: the rescans and the expiry timer

    def start(self, on_change: Callable[[], None]) -> HostTrust:
        """Rescan and watch expiries from now on; ON_CHANGE when the keys in force change."""
        self.on_change = on_change
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"trust-{self.machine[:8]}"
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(RESCAN):
            changed = self.rescan()
            with self._lock:
                if self._expiry is not None and self._clock() >= self._expiry:
                    self._recompute()
                    changed = True
            if changed:
                self.on_change()

    # -- the directory

    def _say(self, what: str, detail: str, event: str = "trusted_keys_warning") -> None:
        if what not in self._said:
            self._said.add(what)
            log_event(event, machine=self.machine, detail=detail)

    def _clear(self, what: str) -> None:
        """A problem gone (and, for a file, any of its problems): said again if it recurs."""
        self._said = {
            said for said in self._said if said != what and not said.startswith(what + ":")
        }

    def rescan(self, quiet: bool = False) -> bool:
        """Stat the directory again; whether the root keys changed (logged unless QUIET)."""
        try:
            entries = sorted(e for e in os.listdir(self.directory) if e.endswith(PUBLIC_SUFFIX))
        except OSError as exc:
            kept = len({s.key.key_id for s in self._seen.values() if s.key is not None})
            self._say(
                "directory",
                f"trusted keys directory {display_path(self.directory)} is unreadable "
                f"({exc.strerror or exc}): keeping the {kept} keys read before",
            )
            return False
        self._clear("directory")
        seen: dict[str, _Seen] = {}
        for entry in entries:
            seen[entry] = self._scan_file(entry, self._seen.get(entry))
        for gone in set(self._seen) - set(seen):
            self._clear(f"file:{gone}")
        before = self._roots()
        self._seen = seen
        if before == self._roots():
            return False
        with self._lock:
            self._recompute()
        if quiet:
            return True
        log_event(
            "trusted_keys_changed",
            machine=self.machine,
            roots=",".join(sorted(self._roots())) or "none",
        )
        return True

    def _scan_file(self, entry: str, before: _Seen | None) -> _Seen:
        path = self.directory / entry
        kept = before.key if before is not None else None
        try:
            st = os.lstat(path)
        except OSError:
            return _Seen(None, kept)  # gone between the listing and now: next rescan
        if not stat.S_ISREG(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            self._refuse(entry, f"trusted key file {display_path(path)} is {kind}", kept)
            return _Seen(None, kept)
        if before is not None and before.stamp == _stamp(st):
            return before
        try:
            public = load_public_key(path)
        except SigningError as exc:
            self._refuse(entry, str(exc), kept)
            return _Seen(None, kept)
        self._clear(f"file:{entry}")
        return _Seen(_stamp(st), TrustedKey(key_id(public), public, str(path)))

    def _refuse(self, entry: str, why: str, kept: TrustedKey | None) -> None:
        action = f"keeping key {kept.key_id} read before" if kept else "skipped"
        self._say(f"file:{entry}:{why}", f"trusted key refused: {why}; {action}")

    def _roots(self) -> dict[str, TrustedKey]:
        roots: dict[str, TrustedKey] = {}
        for seen in self._seen.values():
            if seen.key is not None:
                roots.setdefault(seen.key.key_id, seen.key)
        return roots

    def _recompute(self) -> None:  # with the lock held
        """The keys in force now. Expiries are on the record's writer's clock: judged by
        how long ago, on this host's clock, the record was accepted (fleetpy.trust)."""
        record = None if self._record is None else self._record.record
        offset = 0.0 if record is None else record.at - self._received
        now = self._clock() + offset  # now, on the writer's clock
        self._current = effective(TrustedKeys(self._roots(), str(self.directory)), record, now)
        ahead = next_expiry(record, now)
        self._expiry = None if ahead is None else ahead - offset

    # -- the record

    def follow(
        self, registry: AgentRegistry, on_batch: Callable[[WatchBatch[Any]], None]
    ) -> list[Callable[[], None]]:
        """Read the record and watch it from that read: the watch's cancel. A role that
        may not read it (from before the record) keeps the record cached here, said once."""
        found = registry.trust_record()
        if found is None:
            if not self._denied:
                log_event("trust_record_unreadable", machine=self.machine, serial=self.serial)
            self._denied = True
            return []
        revision, raw, _ = found
        self.offer(raw)
        return [registry.watch_trust(on_batch, revision + 1)]

    def apply(self, event: object) -> bool:
        """Take a record's event (True), or leave it to the caller (False)."""
        if not isinstance(event, TrustEvent):
            return False
        self.offer(event.raw)
        return True

    def offer(self, raw: str | None) -> bool:
        """The record as etcd has it now: whether the keys in force changed."""
        if raw is None:
            if self._record is not None:
                self._say(
                    "missing",
                    f"the trust record is gone from etcd: serial {self.serial} stays in force",
                    "trust_record_missing",
                )
            return False
        self._clear("missing")
        with self._lock:
            in_force = self._record
            roots = self._roots()
        opened = open_record(raw, roots, None if in_force is None else in_force.record)
        outcome = opened if isinstance(opened, Refused) else admit(opened, in_force)
        if outcome is None:
            return False
        if isinstance(outcome, Refused):
            if raw != self._last_refused:  # once per record, however often it is read
                self._last_refused = raw
                log_event(
                    "trust_record_refused",
                    machine=self.machine,
                    reason=outcome.reason,
                    detail=outcome.detail,
                    serial=self.serial,
                    action="ignored; the keys in force stay",
                )
            return False
        received = self._clock()
        if not self._save(outcome, received):
            return False  # not kept on disk: not in force either (a restart would lose it)
        with self._lock:
            self._record, self._received = outcome, received
            self._recompute()
            keys = ",".join(sorted(self._current.keys)) or "none"
        record = outcome.record
        log_event(
            "trust_record_accepted",
            machine=self.machine,
            serial=record.serial,
            keys=keys,
            revoked=",".join(r.key_id for r in record.revoked) or "none",
            by=record.by,
        )
        return True

    def _save(self, accepted: Accepted, received: float) -> bool:
        kept = {"envelope": accepted.envelope.to_json(), "received": received}
        data = versioned_json(kept).encode("utf-8")
        temporary = self.cache.with_name(f".{self.cache.name}.tmp")
        try:
            self.cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.cache)
            directory = os.open(self.cache.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            self._say(
                "cache",
                f"cannot keep the trust record in {self.cache}: {exc.strerror or exc}; "
                f"serial {self.serial} stays in force",
                "trust_record_not_kept",
            )
            return False
        self._clear("cache")
        return True

    def _load_cache(self) -> None:
        """The record this host accepted before. It was checked when accepted and lives
        in the host's own state directory: if the root key that signed it has left the
        trusted directory since, it stays in force all the same (said once), or a
        restart would bring back the keys it revoked."""
        try:
            st = os.lstat(self.cache)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read {self.cache}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CACHE_BYTES:
            raise ConfigError(f"{self.cache} is not the trust record fleetpy keeps; remove it")
        try:
            kept = read_record(self.cache.read_bytes())
            raw = typed_field(kept, "envelope", str)
            received = float(typed_field(kept, "received", (int, float)))
        except (MalformedRecord, OSError) as exc:
            raise ConfigError(
                f"{self.cache} is not the trust record fleetpy keeps ({exc}); remove it"
            ) from None
        opened = open_record(raw, self._roots(), None)
        if isinstance(opened, Refused):
            why = opened.detail
            try:
                envelope = SignedTrust.from_json(raw.encode("utf-8"))
                opened = Accepted(envelope, TrustRecord.from_body(envelope.body))
            except MalformedRecord as exc:
                raise ConfigError(
                    f"{self.cache} is not the trust record fleetpy keeps ({exc}); remove it"
                ) from None
            log_event(
                "trust_record_kept_unverified",
                machine=self.machine,
                serial=opened.record.serial,
                detail=why,
            )
        self._record, self._received = opened, received


class FixedTrust:
    """Keys given once (or None: no check), for agents built without a trusted directory
    (tests, simulated clusters): HostTrust's interface, nothing ever changes."""

    def __init__(self, keys: TrustedKeys | None) -> None:
        self.keys = keys

    def current(self) -> TrustedKeys | None:
        return self.keys

    def start(self, on_change: Callable[[], None]) -> FixedTrust:
        return self

    def close(self) -> None:
        pass

    def follow(
        self, registry: AgentRegistry, on_batch: Callable[[WatchBatch[Any]], None]
    ) -> list[Callable[[], None]]:
        return []

    def apply(self, event: object) -> bool:
        return False


def trust_source(trusted: TrustedKeys | HostTrust | FixedTrust | None) -> HostTrust | FixedTrust:
    return trusted if isinstance(trusted, HostTrust | FixedTrust) else FixedTrust(trusted)
