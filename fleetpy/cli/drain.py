"""cordon, uncordon and drain (with --no-move, a maintenance window): the operator's
record written through the client library, a drain's progress printed."""

from typing import Annotated

import typer

from .output import fail, out, say
from .wiring import edge, open_registry

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()

MachineArgument = Annotated[
    str, typer.Argument(help="A machine id, or a unique prefix of one (as list-machines shows).")
]
DEFAULT_TIMEOUT = 600.0


@verbs.command()
@edge
def cordon(ctx: typer.Context, machine: MachineArgument) -> None:
    """Place no new units on a machine; what runs there stays (ends a drain or a
    maintenance window on it)."""
    from ..client import drain

    out(f"Cordoned machine {drain.cordon(open_registry(ctx), machine)}")


@verbs.command()
@edge
def uncordon(ctx: typer.Context, machine: MachineArgument) -> None:
    """Let a machine take new units again (ends a drain or a maintenance window on it;
    units already moved off stay where they went)."""
    from ..client import drain

    found, was = drain.uncordon(open_registry(ctx), machine)
    out(f"Uncordoned machine {found}" if was else f"Machine {found} was not cordoned")


@verbs.command("drain")
@edge
def drain_command(
    ctx: typer.Context,
    machine: MachineArgument,
    max_unavailable: Annotated[
        int,
        typer.Option(
            "--max-unavailable",
            help="Units moved at a time: at most this many moved and not yet active "
            "where they went.",
        ),
    ] = 1,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds to wait for the drain; then say what is left and exit non-zero "
            "(the engine goes on: run drain again to wait).",
        ),
    ] = DEFAULT_TIMEOUT,
    no_block: Annotated[
        bool, typer.Option("--no-block", help="Ask for the drain and return at once.")
    ] = False,
    include_global: Annotated[
        bool,
        typer.Option(
            "--include-global",
            help="Stop the machine's global units too (they stay on it otherwise).",
        ),
    ] = False,
    no_move: Annotated[
        bool,
        typer.Option(
            "--no-move",
            help="Maintenance instead: move nothing; the machine's units stay on it while "
            "it reboots, for --window. Nothing new goes there meanwhile.",
        ),
    ] = False,
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            help="With --no-move: how long the machine may stop reporting without its "
            "units moving (900, 15m, 1h30m); after it, they move as off a lost machine.",
        ),
    ] = None,
) -> None:
    """Cordon a machine and move its units elsewhere, a few at a time, each active where
    it went before the next moves (MachineOf= units with theirs; units that can go nowhere
    stay, with the reason). Or, with --no-move, a maintenance window."""
    from ..client import drain
    from ..errors import DrainError

    registry = open_registry(ctx)
    if no_move or window is not None:
        if include_global:
            raise DrainError("--include-global drains: it does not go with --no-move")
        if not no_move or window is None:
            raise DrainError("--no-move and --window go together: a maintenance window")
        record = drain.start_maintenance(registry, machine, drain.parse_window(window))
        from ..drain import until_text

        out(
            f"Machine {record.machine} in maintenance until {until_text(record)}: its units "
            "stay on it while it reboots (`fleetpy uncordon` ends the window)"
        )
        return
    if timeout <= 0:
        raise DrainError(f"--timeout {timeout:g}: expected seconds, more than 0")
    found = drain.start_drain(registry, machine, max_unavailable, include_global)
    if no_block:
        out(f"Draining machine {found}")
        return
    progress = drain.wait_drain(registry, found, timeout, lambda p: say(p.summary()))
    if progress.stuck:
        for unit, why in sorted(progress.stuck.items()):
            out(f"Unit {unit} stays on machine {found}: {why}")
        raise fail(
            f"machine {found} drained but for {len(progress.stuck)} unit(s) that cannot "
            "leave it (named above)"
        )
    out(f"Machine {found} drained")
