"""[3.2] An etcd restart or pause must never move or stop running units; a host that
really died still has its units moved.

Real etcd (this module's own, so killing it never disturbs other modules), two real
systemd hosts (nspawn) with the real agent at --ttl 5, one `fleetpy engine` process,
plain and docker units spread over both hosts, read every 0.1 s by an observer
(tests/support/outages.py, which bench/bench_outages.py shares). Each scenario here is
one outage with every check; the repetitions that give the figures (medians, maxima)
are the benchmark's: `python bench/bench_outages.py` (bench/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import Host

from support.outages import (
    ACTIVE_BOUND,
    KILL_OUTAGE,
    MOVE_BOUND,
    PAUSE_OUTAGE,
    TTL,
    Cluster,
    kill_etcd,
    kill_host_and_wait_for_moves,
    pause_etcd,
    restart_etcd_then_kill_a_host,
    ride_out,
    ride_out_revocation,
    running_cluster,
)

pytestmark = pytest.mark.hosts


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """This module's own etcd (the hosts fixture uses it): tests here kill and pause it."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def cluster(
    hosts: Callable[..., list[Host]], etcd: EtcdServer, prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    """Two hosts, an engine, 4 plain and 2 docker units spread over both hosts."""
    with running_cluster(hosts(2, ttl=TTL), etcd, prefix, tmp_path) as c:
        yield c


def test_etcd_killed_and_restarted_moves_nothing(cluster: Cluster) -> None:
    # etcd restores leases when it starts: agents back in time keep theirs.
    recovery = ride_out(cluster, lambda: kill_etcd(cluster.etcd, KILL_OUTAGE), leases_lost=False)
    print(f"etcd kill -9 {KILL_OUTAGE:g}s, restart: {recovery}")
    assert recovery.active_again_s <= ACTIVE_BOUND


def test_etcd_paused_longer_than_the_ttl_moves_nothing(cluster: Cluster) -> None:
    recovery = ride_out(cluster, lambda: pause_etcd(cluster.etcd, PAUSE_OUTAGE), leases_lost=True)
    print(f"etcd SIGSTOP {PAUSE_OUTAGE:g}s, SIGCONT: {recovery}")
    assert recovery.active_again_s <= ACTIVE_BOUND


def test_every_lease_revoked_at_once_moves_nothing(cluster: Cluster) -> None:
    recovery = ride_out_revocation(cluster)
    print(f"every lease revoked: {recovery}")
    assert recovery.active_again_s <= ACTIVE_BOUND


def test_dead_host_units_move(cluster: Cluster) -> None:
    seconds = kill_host_and_wait_for_moves(cluster, MOVE_BOUND)
    print(f"host killed: units_moved_s={seconds:.2f}")
    assert seconds <= MOVE_BOUND


def test_dead_host_units_move_right_after_an_etcd_restart(cluster: Cluster) -> None:
    seconds, bound = restart_etcd_then_kill_a_host(cluster)
    print(f"host killed right after an etcd restart: units_moved_s={seconds:.2f}")
    assert seconds <= bound


def test_reported_states_survive_a_daemon_reload(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    host.systemctl("daemon-reload")
    # The point: a window for a wrong report. The agent reports state changes within a
    # few tens of milliseconds, and it logs nothing for a reload that could be waited on.
    time.sleep(1)
    cluster.assert_untouched()  # the units do run on, untouched
    # The next sample (under load one may take longer than the observer's 0.1 s).
    latest = cluster.observer.wait(lambda s: True, time.monotonic(), 10, "a sample")
    assert cluster.all_active(latest), f"reported after a daemon-reload: {dict(latest.states)}"
