"""migrate-host: this host handed over from fleetd to fleetpy's agent, its units kept
running (fleetpy.fleet_handover); run as root on each host after `fleetpy migrate`."""

from typing import Annotated

import typer

from ..fleet_keyspace import DEFAULT_FLEET_PREFIX
from .options import FleetPrefixOption, FromFleetOption
from .output import out, say
from .wiring import edge

verbs = typer.Typer()

DEFAULT_CONFIG = "/etc/fleetpy/agent.yaml"


@verbs.command("migrate-host")
@edge
def migrate_host(
    from_fleet: FromFleetOption,
    fleet_prefix: FleetPrefixOption = DEFAULT_FLEET_PREFIX,
    agent_config: Annotated[
        str, typer.Option("--config", help="This host's fleetpy agent config.")
    ] = DEFAULT_CONFIG,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds to wait for the agent to take every unit over."),
    ] = 120.0,
) -> None:
    """Hand this host over from fleetd to fleetpy's agent without restarting a unit:
    fleet's engine frozen (it moves nothing any more), fleetd killed so that it does not
    stop its units (its SIGTERM would), disabled, fleetpy's agent started; it takes over
    every unit fleetpy schedules here, the running ones keep their MainPID. Units fleetpy
    does not run here stay under fleet's last state, and are listed. Running it again
    finishes an interrupted hand-over."""
    from ..fleet_handover import hand_over

    report = hand_over(agent_config, from_fleet, fleet_prefix, timeout)
    out(f"Machine {report.machine}: fleetd {report.fleetd}, {len(report.taken)} units taken over")
    for name in report.taken:
        out(f"+ {name}")
    for name in report.left_to_fleet:
        out(f"= {name}  left running under fleet's last state (fleetpy does not run it here)")
    for name, why in report.refused.items():
        out(f"! {name}  refused by fleetpy's agent here: {why}")
    for name in report.failed:
        out(f"! {name}  did not start here (fleetpy's agent started it: see list-units)")
    if report.failed:
        say(f"fleetpy: warning: {len(report.failed)} unit(s) failed to start on this machine")
    if report.held_until is not None:
        say(
            f"fleetpy: machine {report.machine} is held in a maintenance window until {report.held_until} "
            f"(the migration's hold): once every host is handed over, "
            f"`fleetpy uncordon {report.machine}` ends it"
        )
    if report.left_to_fleet:
        say(
            f"fleetpy: warning: {len(report.left_to_fleet)} unit(s) still run from fleet's "
            "files on this machine"
        )
