"""[6] bad input: `cluster up|status|down` and the remote verbs (status, journal, ssh)
refuse it in one line, exit non-zero, and make nothing: no cluster directory, no link,
no namespace, nothing in etcd.

Here: `cluster up`, whose checks look at the machine's links with `ip` (the system tier's);
the other cases, fleetpy in process against the session's etcd only:
tests/integration/hostile/test_hostile_cluster.py."""

from __future__ import annotations

import pytest

from fleetpy.cluster.local import STATE_ROOT

from support.cluster_harness import machine_links
from support.hostile_harness import Hostile

UP_CASES = [
    (["--name", "Bad"], r"invalid cluster name 'Bad'"),
    (["--name", "toolongname"], r"invalid cluster name"),
    (["--name", "a/../b"], r"invalid cluster name"),
    (["--name", "h1", "--subnet", "8.8.8.0/24"], r"must be a private range"),
    (["--name", "h1", "--subnet", "10.0.0.0/30"], r"at least /28"),
    (["--name", "h1", "--subnet", "10.0.0.1/24"], r"invalid --subnet"),
    (["--name", "h1", "--subnet", "nonsense"], r"invalid --subnet"),
    (["--name", "h1", "--etcd-members", "2"], r"--etcd-members is 1 or 3"),
]


def _links() -> list[str]:
    return machine_links()  # other tests' local clusters left out: they run meanwhile


@pytest.mark.parametrize("args, match", UP_CASES, ids=[f"up{i}" for i in range(len(UP_CASES))])
def test_bad_cluster_up_makes_nothing(seeded: Hostile, args: list[str], match: str) -> None:
    links = _links()
    seeded.rejects("cluster", "up", *args, match=match)
    assert not (STATE_ROOT / "h1").exists()
    assert _links() == links
