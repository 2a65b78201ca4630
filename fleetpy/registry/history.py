"""etcd's history and space (the whole etcd's, not only this prefix's): revisions,
compaction, members' status, NOSPACE's runbook, and this client's requests."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RegistryError
from ..log import log_event
from .base import RegistryBase
from .transport import Alarm, EndpointStats, EtcdPermissionDenied, MemberStatus


class History(RegistryBase):
    """etcd's history and space."""

    def etcd_stats(self) -> tuple[EndpointStats, ...]:
        """Requests this client sent to each etcd endpoint, and the failed ones."""
        return self._etcd.stats()

    def revision(self) -> int:
        """etcd's current revision."""
        return self._etcd.range(self.key("layout"), limit=1, keys_only=True).revision

    def compact_history(self, revision: int) -> bool:
        """Drop etcd's history before REVISION (values overwritten or deleted earlier).
        False: etcd's access control refused this client's user."""
        try:
            self._etcd.compact(revision)
        except EtcdPermissionDenied:
            return False
        return True

    def etcd_status(self) -> tuple[tuple[MemberStatus, ...], tuple[Alarm, ...]]:
        """Each member's database size and revision, and the alarms raised."""
        return tuple(self._etcd.member_status()), tuple(self._etcd.alarms())

    def reclaim_space(self) -> ReclaimReport:
        """What an operator does for etcd's NOSPACE alarm (etcd's own runbook): compact
        the history at the current revision, defragment each member in turn (each blocks
        while it rewrites its file), then disarm the NOSPACE alarms. A member that does
        not answer is left as it was and named in the report."""
        before = {status.url: status for status in self._etcd.member_status()}
        revision = self.revision()
        self._etcd.compact(revision, physical=True)
        unreachable = []
        for url, status in before.items():
            if status.error:
                unreachable.append(f"{url} ({status.error})")
                continue
            try:
                self._etcd.defragment(url)
            except EtcdPermissionDenied:
                who = self._etcd.identity
                raise RegistryError(
                    "defragmenting etcd and disarming its alarms take etcd's root user"
                    + (f" (this client acts as {who})" if who else "")
                    + ": run reclaim with root's credentials (its history is compacted)"
                ) from None
            except RegistryError as exc:
                unreachable.append(f"{url} ({exc})")
        disarmed = []
        for alarm in self._etcd.alarms():
            if alarm.kind == "NOSPACE":
                self._etcd.disarm(alarm)
                disarmed.append(alarm)
        after = {status.url: status for status in self._etcd.member_status()}
        log_event("etcd_reclaimed", revision=revision, disarmed=len(disarmed))
        return ReclaimReport(
            revision=revision,
            sizes=tuple(
                (url, before[url].db_size, after[url].db_size)
                for url in before
                if not before[url].error and not after[url].error
            ),
            disarmed=tuple(disarmed),
            unreachable=tuple(unreachable),
        )


@dataclass(frozen=True)
class ReclaimReport:
    revision: int  # history before it is gone
    sizes: tuple[tuple[str, int, int], ...]  # member URL, database bytes before, after
    disarmed: tuple[Alarm, ...]
    unreachable: tuple[str, ...]  # members left as they were: URL (reason)
