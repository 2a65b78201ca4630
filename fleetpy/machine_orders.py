"""What operators say of one machine, as its agent follows it: their metadata overlay
(global units follow it; PATCH /machines) and their cordon (a drain with
--include-global stops the machine's global units; fleetpy.drain). Both are read at each
of the agent's fresh reads, then watched, each one key of this machine's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .log import log_event
from .metadata import Overlay
from .model.cordons import CordonEvent
from .model.events import MetadataEvent, WatchBatch
from .registry.roles import AgentRegistry


class MachineOrders:
    """An agent's copy of what operators say of its machine."""

    def __init__(self, machine: str) -> None:
        self.machine = machine
        self.overlay: Overlay = {}
        self.globals_off = False  # a drain of this machine includes its global units
        self._overlay_denied = False  # logged once: our etcd role predates the overlay

    def follow(
        self, registry: AgentRegistry, on_batch: Callable[[WatchBatch[Any]], None]
    ) -> list[Callable[[], None]]:
        """Read both and watch each from its read's revision: the watches' cancels. A
        role from before a key existed may not read it: the agent runs on its own metadata
        (said once), or keeps its global units through a drain."""
        cancels = []
        overlay = registry.agent_overlay(self.machine)
        if overlay is None:
            if not self._overlay_denied:
                log_event("metadata_overlay_unreadable", machine=self.machine)
            self._overlay_denied, self.overlay = True, {}
        else:
            revision, self.overlay = overlay
            cancels.append(registry.watch_metadata(on_batch, revision + 1, machine=self.machine))
        cordon = registry.agent_cordon(self.machine)
        if cordon is not None:
            revision, record = cordon
            self.globals_off = record is not None and record.drains_globals
            cancels.append(registry.watch_cordons(on_batch, revision + 1, machine=self.machine))
        return cancels

    def apply(self, event: object) -> bool:
        """Take an event of either watch (True), or leave it to the caller (False)."""
        if isinstance(event, MetadataEvent):
            self.overlay = event.overlay or {}
        elif isinstance(event, CordonEvent):
            self.globals_off = event.record is not None and event.record.drains_globals
        else:
            return False
        return True
