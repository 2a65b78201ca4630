"""The engine's verdict on a machine whose lease ended (fleetpy/machine_loss.py): gone, or
etcd coming back from a stall. A pure function of what the engine saw: when the record
went, the lease's TTL, when etcd answered the engine's witness, and the time now."""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import pytest

from fleetpy.machine_loss import (
    BURST_SETTLE,
    CONFIRM_LIMIT,
    WITNESS_INTERVAL,
    Judgement,
    Round,
    Verdict,
    Witness,
    judge,
)

LOST_AT = 100.0


def answered(start: float, end: float, every: float = WITNESS_INTERVAL) -> list[Round]:
    """The witness answering promptly from START to END (a round trip of 5 ms)."""
    count = int((end - start) / every + 1e-9) + 1
    return [Round(start + i * every, start + i * every + 0.005) for i in range(count)]


def confirmed(at: float = LOST_AT + 0.01) -> list[Round]:
    return [Round(at, at + 0.005)]


CALM = answered(LOST_AT - 20, LOST_AT - 0.1)


@pytest.mark.parametrize(
    ("case", "ttl", "rounds", "now", "expected"),
    [
        # A host killed while etcd answered throughout: moved once the burst settle is over
        # and the confirming round is in.
        ("just seen", 5, CALM, LOST_AT, (Verdict.SETTLING, LOST_AT + BURST_SETTLE)),
        ("killed, TTL 5", 5, CALM + confirmed(), LOST_AT + BURST_SETTLE, Verdict.LOST),
        ("killed, TTL 2", 2, CALM + confirmed(), LOST_AT + BURST_SETTLE, Verdict.LOST),
        # The confirming round not yet back: wait a little, then (etcd slow or away now)
        # the grace period.
        ("unconfirmed", 5, CALM, LOST_AT + BURST_SETTLE, Verdict.SETTLING),
        ("never confirmed", 5, CALM, LOST_AT + CONFIRM_LIMIT, Verdict.DOUBTFUL),
        (
            "confirmation failed",
            5,
            [*CALM, Round(LOST_AT + 0.01, None)],
            LOST_AT + BURST_SETTLE,
            Verdict.DOUBTFUL,
        ),
        # etcd paused 40 s (SIGSTOP), every lease revoked when it resumed at LOST_AT - 0.3:
        # the round that straddled the pause ended with it, after 40 s.
        (
            "40 s pause",
            5,
            [
                *answered(LOST_AT - 60, LOST_AT - 40.3),
                Round(LOST_AT - 40.2, LOST_AT - 0.29),
                *confirmed(),
            ],
            LOST_AT + BURST_SETTLE,
            Verdict.DOUBTFUL,
        ),
        # The same with every question failing (5 s timeouts) during the pause.
        (
            "40 s pause, timeouts",
            5,
            [
                *answered(LOST_AT - 60, LOST_AT - 40.3),
                *(Round(LOST_AT - 40.2 + 5 * i, None) for i in range(8)),
                Round(LOST_AT - 0.2, LOST_AT - 0.19),
                *confirmed(),
            ],
            LOST_AT + BURST_SETTLE,
            Verdict.DOUBTFUL,
        ),
        # The shortest pause that can revoke a live agent's lease: 2/3 of its TTL, here
        # resumed 0.5 s (etcd's lease check period) before the revocation was seen.
        (
            "2/3 TTL pause, TTL 2",
            2,
            [
                *answered(LOST_AT - 20, LOST_AT - 0.5 - 4 / 3),
                Round(LOST_AT - 0.5 - 4 / 3 + 0.01, LOST_AT - 0.49),
                *confirmed(),
            ],
            LOST_AT + BURST_SETTLE,
            Verdict.DOUBTFUL,
        ),
        (
            "2/3 TTL pause, TTL 5",
            5,
            [
                *answered(LOST_AT - 20, LOST_AT - 0.5 - 10 / 3),
                Round(LOST_AT - 0.5 - 10 / 3 + 0.01, LOST_AT - 0.49),
                *confirmed(),
            ],
            LOST_AT + BURST_SETTLE,
            Verdict.DOUBTFUL,
        ),
        # A silence just under TTL/3 (a loaded engine, a slow round) is not a stall that
        # can cost a lease; just over it counts.
        (
            "silence under TTL/3",
            3,
            [*answered(LOST_AT - 20, LOST_AT - 2), *answered(LOST_AT - 1.05, LOST_AT - 0.1)],
            LOST_AT + BURST_SETTLE,
            Verdict.SETTLING,
        ),
        (
            "silence under TTL/3, confirmed",
            3,
            [
                *answered(LOST_AT - 20, LOST_AT - 2),
                *answered(LOST_AT - 1.05, LOST_AT - 0.1),
                *confirmed(),
            ],
            LOST_AT + BURST_SETTLE,
            Verdict.LOST,
        ),
        (
            "silence over TTL/3",
            3,
            [
                *answered(LOST_AT - 20, LOST_AT - 2),
                *answered(LOST_AT - 0.95, LOST_AT - 0.1),
                *confirmed(),
            ],
            LOST_AT + BURST_SETTLE,
            Verdict.DOUBTFUL,
        ),
        # A silence older than two of the lease's TTL (an etcd restart a while ago) is not
        # this lease's business.
        (
            "old silence",
            2,
            [
                *answered(LOST_AT - 20, LOST_AT - 10),
                *answered(LOST_AT - 5, LOST_AT - 0.1),
                *confirmed(),
            ],
            LOST_AT + BURST_SETTLE,
            Verdict.LOST,
        ),
        # The witness began (a new leader, after its full read) within the lease's last
        # TTLs: its record counts from its first question.
        (
            "new witness",
            5,
            [*answered(LOST_AT - 2, LOST_AT - 0.1), *confirmed()],
            LOST_AT + BURST_SETTLE,
            Verdict.LOST,
        ),
        # ... which may have waited out a stall.
        (
            "new witness, stalled at once",
            2,
            [Round(LOST_AT - 3, LOST_AT - 0.3), *confirmed()],
            LOST_AT + BURST_SETTLE,
            Verdict.DOUBTFUL,
        ),
        ("no witness at all", 5, [], LOST_AT + CONFIRM_LIMIT, Verdict.DOUBTFUL),
    ],
)
def test_judge(
    case: str,
    ttl: int,
    rounds: list[Round],
    now: float,
    expected: Verdict | tuple[Verdict, float],
) -> None:
    judgement = judge(LOST_AT, ttl, rounds, now)
    if isinstance(expected, tuple):
        assert judgement == Judgement(expected[0], expected[1]), case
    else:
        assert judgement.verdict is expected, case
        if expected is Verdict.SETTLING:
            assert judgement.until is not None and now < judgement.until, case


def test_a_confirming_round_must_have_begun_after_the_loss() -> None:
    """A round sent before the loss was seen proves nothing about the moments after it:
    only one sent at or after LOST_AT confirms."""
    straddling = Round(LOST_AT - 0.1, LOST_AT + 0.05)
    assert judge(LOST_AT, 5, [*CALM, straddling], LOST_AT + BURST_SETTLE).verdict is (
        Verdict.SETTLING
    )
    after = [*CALM, straddling, *confirmed(LOST_AT + 0.06)]
    assert judge(LOST_AT, 5, after, LOST_AT + BURST_SETTLE).verdict is Verdict.LOST


def test_every_silence_long_enough_to_cost_a_lease_is_doubtful() -> None:
    """Agents renew every TTL/3, so a stall revokes a live agent's lease only if it lasted
    over 2/3 of the TTL; whenever it ended within one TTL before the loss was seen (etcd
    revokes within 0.5 s of coming back; the rest is the engine being late), the verdict is
    not LOST."""
    for ttl in (2, 3, 5, 10):
        for ended in (0.0, 0.3, 0.5, 1.0, ttl):
            pause = 2 * ttl / 3
            resumed = LOST_AT - ended
            rounds = [
                *answered(LOST_AT - 3 * ttl, resumed - pause),
                Round(resumed - pause + 0.01, resumed + 0.001),
                *answered(resumed + 0.2, LOST_AT - 0.05),
                *confirmed(),
            ]
            seen = judge(LOST_AT, ttl, rounds, LOST_AT + BURST_SETTLE)
            assert seen.verdict is Verdict.DOUBTFUL, (ttl, ended, seen)


def test_the_witness_asks_one_thing_at_a_time_and_records_each_answer_or_failure() -> None:
    stop = threading.Event()
    answers = iter([None, RuntimeError("etcd away"), None])
    asked = threading.Event()

    def ask() -> None:
        outcome = next(answers, None)
        asked.set()
        if isinstance(outcome, Exception):
            raise outcome

    witness = Witness(ask, lambda: True, stop)
    witness.start()
    witness.start()  # once only
    deadline = time.monotonic() + 5
    while len(witness.rounds()) < 3 and time.monotonic() < deadline:
        witness.poke()
        time.sleep(0.01)
    stop.set()
    rounds = witness.rounds()[:3]
    assert [r.answered is not None for r in rounds] == [True, False, True]
    assert all(a.sent <= (a.answered or a.sent) <= b.sent for a, b in pairwise(rounds))
