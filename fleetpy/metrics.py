"""Prometheus metrics: every fleetpy metric's name and help, and serving them.

Nothing is global: a process makes its own `CollectorRegistry` (`new_registry`) and
passes it to what adds metrics to it; prometheus_client's default registry is never used.

Hot paths stay as fast as they were. The engine, the agent and the etcd client already
count what they do (EngineStats, AgentStats, the transport's per-endpoint counters); the
collectors here read those counters at scrape time. What is observed as it happens is
one histogram observe per engine pass and per D-Bus call, and a counter increment per
failed systemd job.

Only the daemons with `--metrics-listen` and the API server import this module, so the
others never load prometheus_client.

    registry = new_registry()
    registry.register(ClusterCollector(live_view))     # the API server: a ClusterView getter
    body, content_type = exposition(registry)          # what GET /metrics answers
"""

from __future__ import annotations

import socket
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, make_wsgi_app
from prometheus_client.registry import Collector

from .errors import ConfigError
from .model.records import ClusterView
from .scheduler import ReasonKind, reason_kind
from .states import PLACED_STATES, ActiveState, DesiredState

if TYPE_CHECKING:  # only for types: the engine and agent never import this module
    from .agent import Agent
    from .engine import Engine
    from .registry.transport import EndpointStats

PREFIX = "fleetpy_"
METRICS_PATH = "/metrics"

# Seconds. An engine pass over 10,000 units plans in well under a second; a D-Bus call
# takes ~0.1-1 ms, a daemon-reload ~0.2 s.
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DBUS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


# The label of a reported ActiveState fleetpy does not know: states come from etcd, where
# anyone with write access could put any text, and labels stay a closed set.
OTHER_ACTIVE = "other"
ACTIVE_LABELS = (*(state.value for state in ActiveState), OTHER_ACTIVE)
_KNOWN_ACTIVE = frozenset(ActiveState)


def active_label(text: str) -> str:
    return text if text in _KNOWN_ACTIVE else OTHER_ACTIVE


class JobResult(StrEnum):
    """Label values of failed systemd jobs: JobRemoved's results other than done and
    skipped, `error` when systemd refused the job outright, `other` for the unknown."""

    CANCELED = "canceled"
    TIMEOUT = "timeout"
    FAILED = "failed"
    DEPENDENCY = "dependency"
    INVALID = "invalid"
    ERROR = "error"
    OTHER = "other"


_RESULTS = {result.value: result for result in JobResult}


class DBusMethod(StrEnum):
    """The D-Bus calls the agent's systemd unit manager makes (label values)."""

    LOAD_UNIT = "LoadUnit"
    GET_ALL = "GetAll"
    START_UNIT = "StartUnit"
    STOP_UNIT = "StopUnit"
    RESET_FAILED_UNIT = "ResetFailedUnit"
    RELOAD = "Reload"
    OTHER = "other"


_METHODS = {method.value: method for method in DBusMethod}


def new_registry(process: bool = True) -> CollectorRegistry:
    """A registry of this process's own; `process`: with its CPU, memory and open files
    (prometheus_client's process_* metrics, read from /proc at scrape time)."""
    registry = CollectorRegistry()
    if process:
        ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """(body, Content-Type) of a scrape: Prometheus' text format, or OpenMetrics when
    `accept` (the request's Accept header) asks for it."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


# ----------------------------------------------------------------------------- the cluster


def cluster_metrics(view: ClusterView) -> list[Metric]:
    """The cluster as one etcd read shows it (pure: what ClusterCollector yields)."""
    desired = GaugeMetricFamily(
        PREFIX + "units", "Units submitted, by desired state.", labels=["desired"]
    )
    by_desired = Tally(record.desired for record in view.units.values())
    for state in DesiredState:
        desired.add_metric([state.value], by_desired[state])

    states = GaugeMetricFamily(
        PREFIX + "unit_states",
        "Units as their machines report them (one per unit and machine), by ActiveState.",
        labels=["active"],
    )
    by_active = Tally(
        active_label(state.active)
        for machines in view.states.values()
        for state in machines.values()
    )
    for active in ACTIVE_LABELS:
        states.add_metric([active], by_active[active])

    unplaced = GaugeMetricFamily(
        PREFIX + "units_unplaced",
        "Units that should be on a machine and are not, by kind of reason "
        "(pending: the engine has not given one yet).",
        labels=["reason"],
    )
    by_reason = Tally(
        reason_kind(view.reasons[name]) if name in view.reasons else ReasonKind.PENDING
        for name, record in view.units.items()
        if record.desired in PLACED_STATES and not record.is_global and name not in view.schedule
    )
    for kind in ReasonKind:
        unplaced.add_metric([kind.value], by_reason[kind])

    owners = {record.owner for record in view.units.values() if record.owner}
    return [
        desired,
        states,
        unplaced,
        GaugeMetricFamily(
            PREFIX + "units_scheduled",
            "Units placed on a machine by the engine.",
            value=len(view.schedule),
        ),
        GaugeMetricFamily(
            PREFIX + "machines_alive",
            "Machines whose agent holds a lease (reporting).",
            value=len(view.machines),
        ),
        GaugeMetricFamily(
            PREFIX + "deployments",
            "Deployments that own at least one unit (fleetpy apply).",
            value=len(owners),
        ),
        GaugeMetricFamily(
            PREFIX + "cluster_revision",
            "etcd revision of the view these cluster metrics describe.",
            value=view.revision,
        ),
    ]


class ClusterCollector(Collector):
    """Cluster-level gauges from a ClusterView getter, called once per scrape (the API
    server's live view; `Registry.read_view` works too, at one etcd read per scrape)."""

    def __init__(self, view: Callable[[], ClusterView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from cluster_metrics(self._view())


# ----------------------------------------------------------------------------- etcd


def etcd_metrics(stats: Iterable[EndpointStats]) -> list[Metric]:
    requests = CounterMetricFamily(
        PREFIX + "etcd_requests",
        "etcd calls this process sent (retries on another endpoint included), by endpoint.",
        labels=["endpoint"],
    )
    errors = CounterMetricFamily(
        PREFIX + "etcd_request_errors",
        "etcd calls that failed (unreachable, refused, or an error answer), by endpoint.",
        labels=["endpoint"],
    )
    for endpoint in stats:
        requests.add_metric([endpoint.url], endpoint.requests)
        errors.add_metric([endpoint.url], endpoint.errors)
    return [requests, errors]


class CountersCollector(Collector):
    """Metrics made at scrape time by a function (no registry state between scrapes)."""

    def __init__(self, make: Callable[[], Iterable[Metric]]) -> None:
        self._make = make

    def collect(self) -> Iterator[Metric]:
        yield from self._make()


# ----------------------------------------------------------------------------- the engine


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, help_text, value=value)


class EngineMetrics:
    """The engine's metrics: give `observe_pass` to `Engine(on_pass=...)`, then `bind`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._plan = Histogram(
            PREFIX + "engine_plan_seconds",
            "Time to plan one reconcile pass (scheduler.plan_placements).",
            registry=registry,
            buckets=PASS_BUCKETS,
        )
        self._pass = Histogram(
            PREFIX + "engine_reconcile_seconds",
            "Time of one whole reconcile pass: planning and writing the changes to etcd.",
            registry=registry,
            buckets=PASS_BUCKETS,
        )
        self._observe_plan = self._plan.observe
        self._observe_pass = self._pass.observe

    def observe_pass(self, plan_seconds: float, pass_seconds: float) -> None:
        self._observe_plan(plan_seconds)
        self._observe_pass(pass_seconds)

    def bind(self, engine: Engine) -> None:
        """Add what the engine counts anyway, read at each scrape."""
        self.registry.register(CountersCollector(lambda: engine_metrics(engine)))


def engine_metrics(engine: Engine) -> list[Metric]:
    stats = engine.stats
    return [
        GaugeMetricFamily(
            PREFIX + "engine_leader",
            "1 while this engine leads (places units), else 0.",
            value=1 if engine.is_leader.is_set() else 0,
        ),
        _counter(
            "engine_placements",
            "Units placed on a machine or moved to another one by this engine.",
            stats.placements,
        ),
        _counter(
            "engine_changes", "Changes this engine wrote (placements, reasons, ...).", stats.changes
        ),
        _counter("engine_passes", "Reconcile passes.", stats.passes),
        _counter("engine_full_reads", "Full reads of the cluster from etcd.", stats.full_reads),
        _counter("engine_transactions", "etcd transactions of placements.", stats.transactions),
        _counter(
            "engine_elections_won", "Times this engine became the leader.", stats.became_leader
        ),
        *etcd_metrics(engine.registry.etcd_stats()),
    ]


# ----------------------------------------------------------------------------- the agent


class AgentMetrics:
    """The agent's metrics: give `observe_dbus_call` and `job_failed` to the systemd
    unit manager, then `bind` the agent."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        dbus = Histogram(
            PREFIX + "agent_dbus_call_seconds",
            "Round trip of the agent's D-Bus calls to systemd, by method.",
            ["method"],
            registry=registry,
            buckets=DBUS_BUCKETS,
        )
        jobs = Counter(
            PREFIX + "agent_systemd_job_failures",
            "systemd jobs for the agent's units that did not succeed, by result.",
            ["result"],
            registry=registry,
        )
        # Children made once: an observation is a dict lookup and the observe itself.
        self._dbus = {method: dbus.labels(method.value).observe for method in DBusMethod}
        self._jobs = {result: jobs.labels(result.value).inc for result in JobResult}

    def observe_dbus_call(self, method: str, seconds: float) -> None:
        self._dbus[_METHODS.get(method, DBusMethod.OTHER)](seconds)

    def job_failed(self, result: str) -> None:
        self._jobs[_RESULTS.get(result, JobResult.OTHER)]()

    def bind(self, agent: Agent) -> None:
        self.registry.register(CountersCollector(lambda: agent_metrics(agent)))


def agent_metrics(agent: Agent) -> list[Metric]:
    owned = agent.manager.observe()
    units = GaugeMetricFamily(
        PREFIX + "agent_units",
        "Units this agent owns on its machine, by ActiveState.",
        labels=["active"],
    )
    by_active = Tally(active_label(unit.active) for unit in owned.values())
    for active in ACTIVE_LABELS:
        units.add_metric([active], by_active[active])
    stats = agent.stats
    return [
        GaugeMetricFamily(
            PREFIX + "agent_units_owned", "Units this agent owns on its machine.", value=len(owned)
        ),
        units,
        _counter(
            "agent_reconciles",
            "Rounds of the agent comparing desired and actual units.",
            stats.reconciles,
        ),
        _counter(
            "agent_actions",
            "Unit actions (write, start, stop, remove) the agent took.",
            stats.actions,
        ),
        _counter(
            "agent_resyncs", "Fresh reads of this machine's schedule from etcd.", stats.resyncs
        ),
        _counter("agent_wakeups", "Watch responses on this machine's schedule.", stats.wakeups),
        *etcd_metrics(agent.registry.etcd_stats()),
    ]


# ----------------------------------------------------------------------------- serving


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up the daemon's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per scrape would drown the daemon's own log


@dataclass(frozen=True)
class MetricsServer:
    """`/metrics` served on one address, from a thread of its own."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _app(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"fleetpy serves only /metrics here\n"]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve `registry` at http://HOST:PORT/metrics (that address only); ConfigError,
    one line, when the address cannot be listened on."""

    class Server(_Server):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = make_server(host, port, _app(registry), Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {_address(host, port)}: {exc.strerror or exc}"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsServer(host, server.server_port, server, thread)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
