"""test_metrics.py's tests that need the session's etcd or a short-lived helper process (README
"Tests"); what the module covers as a whole: tests/pure/test_metrics.py."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from fleetpy import metrics
from fleetpy.cluster.etcd import EtcdServer, free_port
from fleetpy.registry import (
    Registry,
    RegistryConfig,
)

from support.metrics_text import parse, value

# ----------------------------------------------------------------------------- etcd counters


def test_etcd_requests_and_errors_are_counted_per_endpoint(etcd: EtcdServer, prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = RegistryConfig(endpoints=(dead, etcd.endpoint), prefix=prefix, timeout=5)
    with Registry(config) as registry:
        registry.read_view()
        registry.read_view()
        stats = {s.url: s for s in registry.etcd_stats()}
    assert stats[dead].requests == stats[dead].errors == 1  # tried first, once, then skipped
    assert stats[etcd.endpoint].requests >= 2
    assert stats[etcd.endpoint].errors == 0
    samples = parse(exposition_of(metrics.etcd_metrics(stats.values())))
    assert value(samples, "fleetpy_etcd_request_errors_total", endpoint=dead) == 1
    assert value(samples, "fleetpy_etcd_requests_total", endpoint=etcd.endpoint) >= 2


def exposition_of(families: list[Metric]) -> str:
    class Fixed(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from families

    registry = metrics.new_registry(process=False)
    registry.register(Fixed())
    return metrics.exposition(registry)[0].decode()
