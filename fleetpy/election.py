"""The engine's election: one leader at a time, by a lease-bound leader key in etcd.

A candidate holds a lease, campaigns for the leader key with it, and keeps the lease
alive while it leads; losing the lease is losing the leadership (its writes are fenced
by the leader key, so a lost leader's writes are refused whatever it believes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import FleetpyError
from .log import log_event
from .model.events import EngineEvent, WatchBatch
from .registry.roles import EngineRegistry


class LostLeadership(Exception):
    pass


class Election:
    def __init__(
        self, registry: EngineRegistry, candidate: str, ttl: int, stop: threading.Event
    ) -> None:
        self.registry = registry
        self.candidate = candidate
        self.ttl = ttl
        self._stop = stop
        self._lease: int | None = None
        self._last_refresh = 0.0
        self._lost = threading.Event()  # set once the lease is found expired

    def campaign(self) -> bool | None:
        """Wait until this candidate leads: True when it just won the key, False when it
        already held it, None when stopped first."""
        while not self._stop.is_set():
            if self._lease is None or self.registry.refresh_lease(self._lease) <= 0:
                self._lease = self.registry.grant_lease(self.ttl)
                self._lost.clear()
            if self.registry.campaign(self.candidate, self._lease):
                log_event("leader_elected", engine=self.candidate, ttl=self.ttl)
                return True
            if self.registry.leader() == self.candidate:
                return False
            # Someone else leads: wake when the leader key goes, or after a while.
            freed = threading.Event()

            def on_engine(batch: WatchBatch[EngineEvent], freed: threading.Event = freed) -> None:
                if batch.error or any(e.leader_changed and e.leader is None for e in batch.events):
                    freed.set()

            cancel = self.registry.watch_engine(on_engine)
            try:
                deadline = time.monotonic() + self.ttl / 3
                while not (self._stop.is_set() or freed.is_set()) and time.monotonic() < deadline:
                    freed.wait(0.2)
                    self.keep_alive()
            finally:
                cancel()
        return None

    def keep_alive(self) -> None:
        """Renew the lease if a third of its TTL has passed; LostLeadership if it ended."""
        if self._lost.is_set():
            raise LostLeadership("lease expired")
        now = time.monotonic()
        if now - self._last_refresh < self.ttl / 3:
            return
        self._last_refresh = now
        if self._lease is not None and self.registry.refresh_lease(self._lease) <= 0:
            self._lease = None
            self._lost.set()
            raise LostLeadership("lease expired")

    @contextmanager
    def kept(self) -> Iterator[None]:
        """While leading, the lease is renewed from a thread of its own too: a full read
        and a plan of 100,000 units hold the engine's thread for seconds (a 10 s lease
        ran out in them, and each new leadership began with another full read). Fencing
        keeps writes safe either way; this keeps the leadership."""
        done = threading.Event()

        def keeper() -> None:
            while not done.wait(self.ttl / 6):
                try:
                    self.keep_alive()
                except LostLeadership:
                    return  # the engine's thread finds out at its next check
                except FleetpyError:
                    pass  # etcd away: the engine's own calls fail and it retries

        thread = threading.Thread(target=keeper, name="engine-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def resign(self) -> None:
        """Give the lease back (the leader key goes with it), if etcd answers."""
        if self._lease is not None:
            try:
                self.registry.revoke_lease(self._lease)
            except FleetpyError:
                pass
