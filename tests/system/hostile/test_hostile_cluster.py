"""[6] bad input: `cluster up|status|down` and the remote verbs (status, journal, ssh)
refuse it in one line, exit non-zero, and make nothing: no cluster directory, no link,
no namespace, nothing in etcd."""

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


@pytest.mark.parametrize(
    "args, code, match",
    [
        (["cluster", "up", "--hosts", "0"], 64, r"--hosts"),
        (["cluster", "up", "--ttl", "1"], 64, r"--ttl"),
        (["cluster", "status", "--name", "nothere"], 1, r"no local cluster named nothere"),
        (["cluster", "down", "--name", "Bad"], 1, r"invalid cluster name 'Bad'"),
        (["cluster", "status", "--name", "a/../b"], 1, r"invalid cluster name"),
    ],
)
def test_bad_cluster_arguments(seeded: Hostile, args: list[str], code: int, match: str) -> None:
    seeded.rejects(*args, code=code, match=match)


REMOTE_CASES = [
    (["status", "nothere.service"], 1, r"nothere.service"),
    (["status", "db.service"], 1, r"db.service runs on no machine"),
    (["journal", "hello.service"], 1, r"hello.service runs on no machine"),
    (["journal", "--lines", "0", "hello.service"], 64, r"--lines"),
    (["ssh", "zzzz"], 1, r"no machine with an id starting 'zzzz'"),
    (["ssh", "web@9.service"], 1, r"web@9.service"),
    (["--tunnel", "-oProxyCommand=touch /tmp/x", "ssh", "zzzz"], 1, r"--tunnel"),
    (["--ssh-username", "a b", "ssh", "zzzz"], 1, r"--ssh-username"),
    (["--ssh-port", "0", "ssh", "zzzz"], 1, r"--ssh-port"),
    (["--strict-host-key-checking=maybe", "ssh", "zzzz"], 1, r"expected true or false"),
    (["ssh", "--strict-host-key-checking=maybe", "zzzz"], 1, r"expected true or false"),
    (["--strict-host-key-checking", "maybe", "ssh", "zzzz"], 64, r"No such command 'maybe'"),
]


@pytest.mark.parametrize(
    "args, code, match", REMOTE_CASES, ids=[f"remote{i}" for i in range(len(REMOTE_CASES))]
)
def test_bad_remote_verbs(seeded: Hostile, args: list[str], code: int, match: str) -> None:
    seeded.rejects(*args, code=code, match=match)
