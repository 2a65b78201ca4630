"""The daemons' entry points: the one place that wires settings to objects.

`fleetpy engine`, `fleetpy agent` and `fleetpy-agent` (the agent without the CLI's
typer/rich, for hosts) come here with typed settings; library modules never read
settings or the environment themselves.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .accepted_versions import AcceptedVersions
from .agent import Agent, agent_instance
from .config import (
    AgentSettings,
    ListenAddress,
    Scope,
    Settings,
    UnitManagerKind,
    add_arguments,
    load_config_file,
    read_machine_id,
    resolve,
)
from .errors import ConfigError, FleetpyError
from .health import DockerHealth
from .host_trust import HostTrust
from .log import escape_controls, log_event
from .registry import Registry
from .unitmanager import SimulatedUnitManager, UnitManager

if TYPE_CHECKING:  # metrics (prometheus_client) is imported only when metrics are on
    from prometheus_client import CollectorRegistry

    from .api.server import Route
    from .live_view import LiveView
    from .metrics import AgentMetrics, EngineMetrics, MetricsServer
    from .model.records import ClusterView

# Debian's packages for the systemd unit manager's imports (dbus-python, PyGObject).
_SYSTEMD_PACKAGES = "python3-dbus python3-gi"


def make_unit_manager(settings: AgentSettings, metrics: AgentMetrics | None = None) -> UnitManager:
    """The unit manager the settings choose (the one place the choice is made)."""
    if settings.unit_manager is UnitManagerKind.SIMULATED:
        return SimulatedUnitManager()
    try:
        from .systemd import SystemdUnitManager  # dbus and gi: only on hosts
    except ImportError as exc:
        raise ConfigError(
            f"the systemd unit manager needs D-Bus and GLib bindings ({exc.name or exc} is "
            f"missing): apt-get install {_SYSTEMD_PACKAGES}, in a venv made with "
            "--system-site-packages, or pip install 'fleetpy[agent]'"
        ) from None
    if metrics is None:
        return SystemdUnitManager(settings.unit_dir)
    return SystemdUnitManager(
        settings.unit_dir,
        on_dbus_call=metrics.observe_dbus_call,
        on_job_failed=metrics.job_failed,
    )


def _metrics_registry(listen: ListenAddress | None) -> CollectorRegistry | None:
    """A registry for this daemon's metrics, if they are on (--metrics-listen)."""
    if listen is None:
        return None
    from .metrics import new_registry

    return new_registry()


def _serve_metrics(
    collectors: CollectorRegistry | None, listen: ListenAddress | None, **fields: object
) -> MetricsServer | None:
    if collectors is None or listen is None:
        return None
    from .metrics import serve

    server = serve(collectors, listen.host, listen.port)
    log_event("metrics_serving", address=str(listen), **fields)
    return server


def _close(server: MetricsServer | None) -> None:
    if server is not None:
        server.close()


def trusted_keys(settings: AgentSettings, machine_id: str) -> HostTrust | None:
    """The agent's trusted keys: its directory's root keys and the trust record, followed
    while it runs (fleetpy.host_trust); the record it accepted is kept beside its instance
    token, so a restart never brings back a revoked key."""
    if settings.trusted_keys is None:
        return None
    cache = instance_file(settings, machine_id).with_name(f"trust-{machine_id}.json")
    return HostTrust(settings.trusted_keys, cache, machine_id)


def _check_layout(registry: Registry, manager: UnitManager | None = None) -> None:
    """A nested prefix ends the daemon before it starts (one line, nothing logged). An
    agent (with its MANAGER) does not mark the prefix: see Registry.ensure_layout."""
    try:
        registry.wait_for_layout(mark=manager is None)
    except BaseException:
        registry.close()
        if manager is not None:
            manager.close()
        raise


def instance_file(agent: AgentSettings, machine_id: str) -> Path:
    """Where an agent keeps its instance token: on the host's disk for systemd (it must
    survive reboots); a simulated agent's beside its unit directory."""
    if agent.unit_manager is UnitManagerKind.SYSTEMD:
        return Path("/var/lib/fleetpy") / f"agent-{machine_id}.instance"
    return Path(agent.unit_dir).parent / f"agent-{machine_id}.instance"


def run_engine(settings: Settings) -> None:
    """`fleetpy engine`: compete for leadership and place units until interrupted."""
    from .engine import Engine  # and the scheduler: the engine's, not an agent's memory

    collectors = _metrics_registry(settings.metrics.listen)
    instruments: EngineMetrics | None = None
    if collectors is not None:
        from .metrics import EngineMetrics

        instruments = EngineMetrics(collectors)
    registry = Registry(settings.etcd)
    engine = Engine(
        registry,
        settings.engine,
        on_pass=instruments.observe_pass if instruments is not None else None,
    )
    if instruments is not None:
        instruments.bind(engine)
    _check_layout(registry)
    server = None
    try:
        server = _serve_metrics(collectors, settings.metrics.listen, engine=engine.candidate)
        log_event("engine_starting", engine=engine.candidate, pid=os.getpid())
        engine.start()
        while not engine.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        engine.stop()
        _close(server)
        registry.close()
        log_event("engine_stopped", engine=engine.candidate)


def run_agent(settings: Settings) -> None:
    """`fleetpy agent`: register this machine and run the units placed on it."""
    machine_id = settings.agent.machine_id or read_machine_id()
    trusted = trusted_keys(settings.agent, machine_id)
    # Beside the instance token, on the host's disk: it must survive restarts and reboots.
    versions_file = instance_file(settings.agent, machine_id).with_suffix(".versions")
    versions = None if trusted is None else AcceptedVersions(versions_file)
    collectors = _metrics_registry(settings.metrics.listen)
    instruments: AgentMetrics | None = None
    if collectors is not None:
        from .metrics import AgentMetrics

        instruments = AgentMetrics(collectors)
    manager = make_unit_manager(settings.agent, instruments)
    try:
        registry = Registry(settings.etcd)
    except BaseException:
        manager.close()
        raise
    agent = Agent(
        registry,
        manager,
        replace(settings.agent, machine_id=machine_id),
        trusted=trusted,
        instance=agent_instance(instance_file(settings.agent, machine_id)),
        versions=versions,
        # Containers' health where systemd runs them (a simulated host has no docker).
        health=None if settings.agent.unit_manager is UnitManagerKind.SIMULATED else DockerHealth(),
    )
    if instruments is not None:
        instruments.bind(agent)
    _check_layout(registry, manager)
    server = None
    try:
        server = _serve_metrics(collectors, settings.metrics.listen, machine=machine_id)
        log_event(
            "agent_starting",
            machine=machine_id,
            manager=settings.agent.unit_manager,
            verify=trusted is not None,
            pid=os.getpid(),
        )
        agent.start()
        agent.wait()
    except KeyboardInterrupt:
        pass
    finally:
        # On a clean shutdown units keep running; the lease expires by itself so a
        # quick restart (the same process coming back) does not trigger a reschedule.
        agent.stop(revoke=False)
        _close(server)
        manager.close()
        registry.close()
        log_event("agent_stopped", machine=machine_id)


def api_metrics_route(registry: Registry, view: Callable[[], ClusterView]) -> Route:
    """`/metrics` of `fleetpy api`: the cluster as its live view shows it, and this
    process's etcd calls (Prometheus' text format)."""
    from .api.messages import ApiRequest, ApiResponse
    from .api.server import Route
    from .metrics import ClusterCollector, CountersCollector, etcd_metrics, exposition, new_registry

    collectors = new_registry()
    collectors.register(ClusterCollector(view))
    collectors.register(CountersCollector(lambda: etcd_metrics(registry.etcd_stats())))

    def scrape(request: ApiRequest) -> ApiResponse:
        body, content_type = exposition(collectors)
        return ApiResponse(200, body, content_type)

    return Route("/metrics", scrape)


def run_api(settings: Settings, insecure: bool = False) -> None:
    """`fleetpy api`: serve fleet's HTTP API v1, /metrics and the dashboard until interrupted."""
    from .api import ApiServer, serve_view  # the HTTP server's imports are only this daemon's

    # Options checked and the socket bound before etcd is asked anything: a bad --listen or
    # a missing certificate or token file is one error line at once, even with etcd away.
    server = ApiServer(replace(settings.api, insecure=insecure))
    try:
        registry = Registry(settings.etcd)
    except BaseException:
        server.close()
        raise
    try:
        _check_layout(registry)
        views: list[LiveView] = []  # the view serve_view makes; /metrics reads it, never etcd
        metrics_route = api_metrics_route(registry, lambda: views[0].current())
        live = serve_view(server, registry, [metrics_route])
        views.append(live)
    except BaseException:
        server.close()
        registry.close()
        raise
    try:
        log_event("api_starting", pid=os.getpid(), units=len(live.current().units))
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        live.close()
        registry.close()
        log_event("api_stopped")


def agent_main(argv: Sequence[str] | None = None) -> int:
    """`fleetpy-agent`: the agent without the CLI's typer/rich (a smaller daemon)."""
    parser = argparse.ArgumentParser(prog="fleetpy-agent", description=agent_main.__doc__)
    parser.add_argument("--config", dest="config_file", help="YAML file of settings")
    add_arguments(parser, (Scope.ETCD, Scope.AGENT, Scope.METRICS))
    args = vars(parser.parse_args(argv))
    try:
        config_file = args.pop("config_file")
        file_values = load_config_file(config_file) if config_file else None
        run_agent(resolve(args, file_values, scopes=(Scope.ETCD, Scope.AGENT, Scope.METRICS)))
    except FleetpyError as exc:
        print(escape_controls(f"fleetpy-agent: error: {exc}"), file=sys.stderr)
        return 1
    return 0


def agent_entry() -> None:
    """The `fleetpy-agent` console script: agent_main, then leave at once."""
    from .exits import exit_process

    exit_process(agent_main())


if __name__ == "__main__":
    agent_entry()
