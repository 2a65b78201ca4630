"""The daemons' verbs (engine, agent, api) with their settings' options, and the files a
host running the agent needs (agent-files)."""

from enum import StrEnum
from typing import Annotated, Any

import typer

from .. import config
from .output import out
from .wiring import edge, globals_of, with_settings

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()


@verbs.command()
@edge
@with_settings(config.Scope.ENGINE, config.Scope.METRICS)
def engine(ctx: typer.Context, **options: Any) -> None:
    """Run an engine: competes for leadership and places units on machines."""
    settings = config.resolve(
        {**globals_of(ctx).etcd_cli, **options},
        scopes=(config.Scope.ETCD, config.Scope.ENGINE, config.Scope.METRICS),
    )
    from .. import entrypoints as daemons

    daemons.run_engine(settings)


@verbs.command()
@edge
@with_settings(config.Scope.AGENT, config.Scope.METRICS)
def agent(
    ctx: typer.Context,
    config_file: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="YAML file of settings (command line and env override it).",
            show_default=False,
        ),
    ] = None,
    **options: Any,
) -> None:
    """Run an agent: registers this machine and runs the units scheduled on it."""
    file_values = config.load_config_file(config_file) if config_file else None
    settings = config.resolve(
        {**globals_of(ctx).etcd_cli, **options},
        file_values,
        scopes=(config.Scope.ETCD, config.Scope.AGENT, config.Scope.METRICS),
    )
    from .. import entrypoints as daemons

    daemons.run_agent(settings)


@verbs.command("api")
@edge
@with_settings(config.Scope.API)
def api_command(
    ctx: typer.Context,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow a TCP listener without TLS or credentials (anyone reaching it "
            "controls the cluster; said in the log at start).",
        ),
    ] = False,
    **options: Any,
) -> None:
    """Serve fleet's HTTP API v1 (fleetctl --driver=API) from one watch-fed view."""
    settings = config.resolve(
        {**globals_of(ctx).etcd_cli, **options}, scopes=(config.Scope.ETCD, config.Scope.API)
    )
    from .. import entrypoints as daemons

    daemons.run_api(settings, insecure)


class AgentFile(StrEnum):
    unit = "unit"
    config = "config"


@verbs.command("agent-files")
@edge
def agent_files(
    which: Annotated[
        AgentFile,
        typer.Argument(
            metavar="FILE",
            help="unit: the agent's systemd unit, running this installation's fleetpy-agent; "
            "config: the agent's YAML config, every setting explained.",
        ),
    ],
) -> None:
    """Print a file a machine running the agent needs (shipped with fleetpy), e.g.
    `fleetpy agent-files unit > /etc/systemd/system/fleetpy-agent.service`."""
    from .. import hostfiles

    if which is AgentFile.unit:
        out(hostfiles.agent_unit(), nl=False, keep="\n")
    else:
        out(hostfiles.read(hostfiles.CONFIG_EXAMPLE).decode(), nl=False, keep="\n")
