"""migrate: a fleet v1.0 cluster's desired state read from its etcd and written into
fleetpy's (the work is in fleetpy.client.migration)."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..fleet_keyspace import DEFAULT_FLEET_PREFIX
from .options import FleetPrefixOption, FromFleetOption, OutputOption
from .output import Output, out, print_json, say
from .wiring import edge, open_registry

if TYPE_CHECKING:
    from ..fleet_import import MigrationPlan

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()


def _plan_json(
    url: str, prefix: str, plan: "MigrationPlan", written: list[str], froze: bool
) -> dict[str, Any]:
    return {
        "from": url,
        "fleet_prefix": prefix,
        "units": [
            {
                "unit": u.name,
                "desired": u.desired.value,
                "global": u.is_global,
                "machine": u.machine,
                "hash": u.hash,
                "note": u.note or None,
            }
            for u in plan.units
        ],
        "metadata": {machine: dict(items) for machine, items in plan.metadata.items()},
        "holds": list(plan.holds),
        "refused": [{"unit": left.name, "reason": left.why} for left in plan.refused],
        "kept": [{"name": left.name, "reason": left.why} for left in plan.kept],
        "unchanged": list(plan.unchanged),
        "written": written,
        "froze_fleet_engine": froze,
    }


def _print_plan(plan: "MigrationPlan", hold: str) -> None:
    for unit in plan.units:
        where = ", global" if unit.is_global else f" on {unit.machine}" if unit.machine else ""
        note = f"  ({unit.note})" if unit.note else ""
        out(f"+ {unit.name}  {unit.desired.value}{where}{note}")
    for machine, items in plan.metadata.items():
        shown = ",".join(f"{k}={v}" for k, v in sorted(items.items()))
        out(f"+ machine {machine}  metadata {shown}")
    for machine in plan.holds:
        out(f"+ machine {machine}  held for its hand-over (maintenance cordon, {hold})")
    for left in plan.refused:
        out(f"! {left.name}  refused, stays under fleet: {left.why}")
    for left in plan.kept:
        out(f"= {left.name}  {left.why}")


@verbs.command("migrate")
@edge
def migrate_command(
    ctx: typer.Context,
    from_fleet: FromFleetOption,
    fleet_prefix: FleetPrefixOption = DEFAULT_FLEET_PREFIX,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only print what would be written.")
    ] = False,
    hold: Annotated[
        str,
        typer.Option(
            "--hold",
            help="How long machines fleet placed units on keep them while their hosts are "
            "handed over (a maintenance cordon; `fleetpy uncordon` ends it), e.g. 1h, 90m.",
        ),
    ] = "1h",
    output: OutputOption = Output.table,
) -> None:
    """Write a fleet v1.0 cluster's units, desired states, placements and machine
    metadata into fleetpy, each placed unit on the machine fleet ran it on. Units fleetpy
    refuses are listed and left to fleet; what fleetpy has already is left as it is, so
    running it again finishes an interrupted migration. With --dry-run, exit code 0:
    nothing to write; 2: something to write; 1: an error."""
    from ..client.drain import parse_window
    from ..client.migration import migrate

    seconds = parse_window(hold, "--hold")
    done = migrate(open_registry(ctx), from_fleet, fleet_prefix, dry_run=dry_run, hold=seconds)
    plan = done.plan
    if output is Output.json:
        print_json([_plan_json(from_fleet, fleet_prefix, plan, list(done.written), done.froze)])
    else:
        out(
            f"fleet at {from_fleet} ({len(done.fleet.units)} units, {len(done.fleet.machines)} "
            f"machines): {len(plan.units)} to add, {len(plan.unchanged)} unchanged, "
            f"{len(plan.refused)} refused, {len(plan.metadata)} machines' metadata, "
            f"{len(plan.holds)} hand-over holds"
        )
        _print_plan(plan, hold)
        if done.froze:
            out("Froze fleet's engines (its engine version set above v1.0's): none moves a unit")
        if not dry_run and plan.has_changes:
            out(f"Migrated {len(done.written)} units from fleet")
    if not dry_run and plan.refused:
        say(
            f"fleetpy: warning: {len(plan.refused)} of fleet's units not migrated "
            "(listed with `!`): they stay under fleet"
        )
    if dry_run and plan.has_changes:
        raise typer.Exit(2)
