"""Is a machine whose lease ended gone, or did the engine see etcd come back from a stall?

A lease ends for two reasons: its agent stopped renewing it (the host died or lost its
link), or etcd could not take the renewals (paused, no leader) and revoked every lease
that ran out meanwhile when it came back. The second needs etcd to have been silent for
longer than 2/3 of the lease's TTL right before the revocation (agents renew every TTL/3),
and the engine, a client of the same etcd, sees that silence too: a `Witness` asks etcd
something every WITNESS_INTERVAL and keeps when it answered. `judge` is a pure function of
what the engine saw: the moment the machine's record went, its TTL, the witness's rounds
and the time now.

- SETTLING: too early. A burst of revocations (etcd revoking every lease it found expired
  in one pass, or an operator revoking them) arrives within milliseconds: BURST_SETTLE
  lets it arrive whole, so the mass-loss rule judges it as one event. Then a round of the
  witness that began after the loss must have ended (the witness asks one thing at a
  time, so a round that straddled a stall has been recorded by then).
- DOUBTFUL: etcd did not answer the engine for longer than TTL/3 within the lease's last
  two TTLs, or is not answering now: the machine gets the grace period, as after a gap in the
  engine's own watch.
- LOST: etcd answered throughout, so the agent could have renewed: its units move now.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .log import log_event

# Revocations of one burst reach the engine within milliseconds of each other (measured:
# 3 leases revoked one after the other by one client, or etcd's own parallel revocations
# after a pause); this leaves room for a loaded machine.
BURST_SETTLE = 0.25
# How often the witness asks etcd while nothing happens. Healthy answers are this far
# apart (plus a round trip); the shortest silence that can cost an agent its lease is
# 2/3 of its TTL (2 s at least: etcd's minimum TTL), and silences longer than TTL/3 count.
WITNESS_INTERVAL = 0.2
# A loss whose confirming round has not ended this long after it was seen is doubtful
# (etcd slow or away right now): the 1 s settle this module replaced.
CONFIRM_LIMIT = 1.0
# A stall that revoked the lease ended shortly before the loss was seen (etcd checks leases
# every 0.5 s); the engine looks back this many TTLs, so that one it saw late still counts.
WINDOW = 2
HISTORY = 4096  # rounds kept: ~14 minutes at the interval, longer than any TTL


class Verdict(StrEnum):
    SETTLING = "settling"
    DOUBTFUL = "doubtful"
    LOST = "lost"


@dataclass(frozen=True)
class Round:
    """One question the witness asked: when it was sent, and when etcd answered (None: it
    did not: an error or a timeout)."""

    sent: float
    answered: float | None


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    until: float | None = None  # SETTLING: judge again then
    silence: float = 0.0  # the longest time etcd did not answer, over the lease's last TTLs


def judge(lost_at: float, ttl: float, rounds: Sequence[Round], now: float) -> Judgement:
    """The verdict on a machine whose record went at LOST_AT (seen by the engine's watch),
    registered with TTL, given the witness's ROUNDS (asked one at a time, in order) at NOW."""
    if now < lost_at + BURST_SETTLE:
        return Judgement(Verdict.SETTLING, lost_at + BURST_SETTLE)
    # The witness asks one thing at a time: its rounds are in the order they were sent.
    after = bisect_left(rounds, lost_at, key=_sent)
    confirm = rounds[after] if after < len(rounds) else None
    if confirm is None:
        if now < lost_at + CONFIRM_LIMIT:
            return Judgement(Verdict.SETTLING, min(now + 0.05, lost_at + CONFIRM_LIMIT))
        return Judgement(Verdict.DOUBTFUL, silence=now - _last_answer(rounds, now, ttl))
    if confirm.answered is None:
        return Judgement(Verdict.DOUBTFUL, silence=now - _last_answer(rounds, now, ttl))
    # The longest time without an answer over the lease's last WINDOW TTLs up to the
    # confirming answer, counted from the window's start, or from the witness's first
    # question if it began later: it begins when this engine leads, right after a full
    # read etcd answered, and a loss the engine's watch reports later was revoked after
    # that read, so a stall that caused it lies within the witness's record.
    start = max(lost_at - WINDOW * ttl, rounds[0].sent)
    silence = 0.0
    previous = start
    # From the last round sent before the window (its answer may fall within it).
    for r in rounds[max(0, bisect_left(rounds, start, key=_sent) - 1) : after + 1]:
        if r.answered is not None:
            silence = max(silence, r.answered - previous)
            previous = max(previous, r.answered)
    verdict = Verdict.LOST if silence <= ttl / 3 else Verdict.DOUBTFUL
    return Judgement(verdict, silence=silence)


def _sent(r: Round) -> float:
    return r.sent


def _last_answer(rounds: Sequence[Round], now: float, ttl: float) -> float:
    answers = [r.answered for r in rounds if r.answered is not None]
    return max(answers, default=now - ttl)


class Witness:
    """Asks etcd (ASK: any request that needs etcd's leader) every WITNESS_INTERVAL while
    ACTIVE says so, one question at a time, on a daemon thread (`start()`, once);
    ends when STOP is set. `poke()` asks at once (a loss was just seen)."""

    def __init__(
        self, ask: Callable[[], object], active: Callable[[], bool], stop: threading.Event
    ) -> None:
        self._ask = ask
        self._active = active
        self._stop = stop
        self._wake = threading.Event()
        self._rounds: deque[Round] = deque(maxlen=HISTORY)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="witness", daemon=True)
                self._thread.start()

    def rounds(self) -> tuple[Round, ...]:
        with self._lock:
            return tuple(self._rounds)

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        unanswered = False  # said once until etcd answers again
        while not self._stop.is_set():
            if self._active():
                sent = time.monotonic()
                try:
                    self._ask()
                    answered: float | None = time.monotonic()
                    unanswered = False
                except Exception as exc:  # etcd away, or a bug: either way no answer
                    answered = None
                    if not (unanswered or self._stop.is_set()):  # not the engine stopping
                        log_event("witness_unanswered", error=type(exc).__name__)
                    unanswered = True
                with self._lock:
                    self._rounds.append(Round(sent, answered))
            self._wake.wait(WITNESS_INTERVAL)
            self._wake.clear()
