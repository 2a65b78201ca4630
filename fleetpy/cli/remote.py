"""The verbs run on the machines over ssh: status, journal, ssh."""

from typing import Annotated

import typer

from .. import config
from .options import UnitsArgument
from .output import UsageError, out
from .wiring import edge, globals_of, open_registry

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()


def _ssh_settings(ctx: typer.Context) -> config.SshSettings:
    return config.resolve(globals_of(ctx).etcd_cli, scopes=(config.Scope.SSH,)).ssh


@verbs.command("status")
@edge
def status_command(ctx: typer.Context, units: UnitsArgument) -> None:
    """`systemctl status` of units on their machines (a global unit: on every machine)."""
    from .. import ssh as remote

    registry, settings = open_registry(ctx), _ssh_settings(ctx)
    failures = []
    for name in units:
        for target in remote.unit_targets(registry, name):
            out(f"{name} on {target.label}:")
            try:
                for line in remote.run(settings, target, remote.status_command(name)):
                    out(line, keep="\t")
            except remote.RemoteError as exc:
                failures.append(str(exc))
            out("")
    if failures:
        raise remote.RemoteError("; ".join(failures))


@verbs.command("journal")
@edge
def journal_command(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(help="A submitted unit.", metavar="UNIT")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, max=100_000)] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
) -> None:
    """The unit's journal on its machine (journalctl over ssh)."""
    from .. import ssh as remote

    registry, settings = open_registry(ctx), _ssh_settings(ctx)
    targets = remote.unit_targets(registry, unit)
    if follow and len(targets) > 1:
        shown = ", ".join(t.label for t in targets)
        raise UsageError(f"{unit} runs on {len(targets)} machines ({shown}): --follow takes one")
    for target in targets:
        if len(targets) > 1:
            out(f"{unit} on {target.label}:")
        for line in remote.run(settings, target, remote.journal_command(unit, lines, follow)):
            out(line, keep="\t")


# Options after MACHINE belong to the command run there, not to fleetpy.
@verbs.command(
    "ssh",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
@edge
def ssh_command(
    ctx: typer.Context,
    machine: Annotated[
        str,
        typer.Argument(help="A machine id (or unique prefix), or a unit.", metavar="MACHINE|UNIT"),
    ],
    command: Annotated[
        list[str] | None, typer.Argument(help="A command to run there.", show_default=False)
    ] = None,
) -> None:
    """Open a shell (or run a command) on a machine, or on a unit's machine."""
    from .. import ssh as remote

    registry, settings = open_registry(ctx), _ssh_settings(ctx)
    target = remote.machine_target(registry, machine)
    registry.close()
    remote.exec_ssh(settings, target, command or [])
