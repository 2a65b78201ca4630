"""free_port (fleetpy/cluster/etcd.py): ports for throwaway etcds and listeners. Tests run
in pytest-xdist workers at once, each picking ports for its etcds, clusters and
listeners; no two may pick the same one, nor one process the same one twice running."""

from __future__ import annotations

import pytest

from fleetpy.cluster.etcd import _PORT_RANGE, free_port, port_range


def test_outside_xdist_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert port_range() == _PORT_RANGE


def test_each_worker_picks_from_its_own_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    slices = []
    for worker in range(4):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
        low, high = port_range()
        slices.append(range(low, high + 1))
        assert all(low <= free_port() <= high for _ in range(50))
    ports = [port for ports in slices for port in ports]
    assert len(ports) == len(set(ports))  # disjoint
    assert min(ports) >= _PORT_RANGE[0] and max(ports) <= _PORT_RANGE[1]
    assert min(len(s) for s in slices) > 3000


@pytest.mark.parametrize("worker, count", [("gw4", "4"), ("master", "4"), ("gw1", ""), ("", "")])
def test_a_malformed_worker_gets_the_whole_range(
    monkeypatch: pytest.MonkeyPatch, worker: str, count: str
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", count)
    assert port_range() == _PORT_RANGE


def test_a_process_never_hands_out_a_port_twice_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """An etcd's client and peer ports are picked before either is bound: picked at random
    from a slice of ~3,000 they were once in ~3,000 the same."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    picked = [free_port() for _ in range(1000)]
    assert len(set(picked)) == len(picked)
