"""When the engine leader compacts etcd's history, as a pure schedule.

Every write adds a revision and etcd keeps every old value until it is compacted: left
alone, the database grows with the number of writes until it reaches its quota and etcd
refuses all writes (the NOSPACE alarm). kube-apiserver compacts every five minutes to the
revision it saw five minutes earlier; the leader does the same. Keeping one interval of
history means a watcher that fell behind by less than that resumes where it was; one
further behind gets "compacted" and resyncs from a fresh read, which every watcher in
fleetpy does anyway after a broken watch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

RETRY_AFTER = 10.0  # seconds after a failed compaction (etcd away) before the next try


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    revision: int


def compaction_target(
    samples: tuple[Sample, ...], now: float, interval: float, compacted: int
) -> int | None:
    """The revision to compact to now: the newest sample at least INTERVAL old, if it
    is past what was COMPACTED already; None when nothing is due (or INTERVAL is 0:
    compaction is off)."""
    if interval <= 0:
        return None
    old_enough = [s.revision for s in samples if now - s.at >= interval]
    if not old_enough:
        return None
    target = max(old_enough)
    return target if target > compacted else None


class CompactionSchedule:
    """The leader's samples of etcd's revision and what it compacted last (its state;
    the decision is compaction_target's)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.compacted = 0
        self._not_before = 0.0
        self._samples: deque[Sample] = deque()

    def observe(self, now: float, revision: int) -> None:
        if revision < max(self.compacted, self._samples[-1].revision if self._samples else 0):
            # History was rewound (etcd restored from a snapshot): what was sampled or
            # compacted names revisions this etcd has not reached; start afresh.
            self._samples.clear()
            self.compacted = 0
        if self._samples and self._samples[-1].revision >= revision:
            return  # nothing written since: the older sample says the same
        self._samples.append(Sample(now, revision))

    def due(self, now: float) -> int | None:
        if now < self._not_before:
            return None
        return compaction_target(tuple(self._samples), now, self.interval, self.compacted)

    def failed(self, now: float) -> None:
        self._not_before = now + RETRY_AFTER

    def done(self, revision: int) -> None:
        """REVISION is compacted: forget the samples it covers."""
        self.compacted = max(self.compacted, revision)
        while self._samples and self._samples[0].revision <= self.compacted:
            self._samples.popleft()
