"""The unit verbs: submit, load, start, stop and unload made from one table (the client's
STATE_VERBS, with their words here), destroy, force-reschedule, cat and sign."""

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from ..client import waiting
from ..client.verbs import LOAD, START, STATE_VERBS, STOP, SUBMIT, UNLOAD, StateVerb
from ..client.waiting import WaitTarget
from .options import (
    DEFAULT_BLOCK_ATTEMPTS,
    AttemptsOption,
    BlockOption,
    GlobUnitsArgument,
    SignOption,
    UnitsArgument,
)
from .output import fail, out, say
from .progress import progress_reporter
from .wiring import edge, open_registry, signer_for

if TYPE_CHECKING:  # a verb loads the client library (unit files, gRPC) when it runs, so
    # that `fleetpy --help` and the other verbs do not
    from ..client import plans
    from ..registry import Registry

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()

_REPLACE_HELP = (
    "Replace a submitted unit whose file has other contents, {which}. An instance named "
    "without its file takes its template's contents. With --sign, a file is signed anew "
    "(a newer version) even when its contents are the unit's."
)

# Each state verb's help, and which units its --replace replaces (client.verbs decides).
HELP: dict[StateVerb, tuple[str, str]] = {
    SUBMIT: (
        "Store unit files in the cluster (desired state inactive).",
        "if it is inactive (as fleetctl)",
    ),
    LOAD: (
        "Submit if needed, then place units on machines and load them (desired state loaded).",
        "if it is inactive or loaded (as fleetctl): a loaded one is reloaded where it is placed",
    ),
    START: (
        "Submit if needed, place, load and start units (desired state launched).",
        "in any state: a launched one is restarted on the new contents where it runs",
    ),
    STOP: ("Stop launched units; they stay loaded (desired state loaded).", ""),
    UNLOAD: ("Stop units and take them off their machines (desired state inactive).", ""),
}


def _notes(plan: "plans.CommandPlan") -> None:
    """What the unit files say that fleetpy reads differently (fleet's legacy keys & co.)."""
    for note in plan.notes:
        say(f"fleetpy: warning: {note}")


def _state_command(state_verb: StateVerb) -> Callable[..., None]:
    """The command of one state verb: unit files or names (with --sign and, where the verb
    replaces, --replace), or names and globs; --no-block and --block-attempts if it waits."""

    def command(
        ctx: typer.Context,
        units: list[str],
        no_block: bool = False,
        block_attempts: int = DEFAULT_BLOCK_ATTEMPTS,
        sign: str | None = None,
        replace: bool = False,
    ) -> None:
        from ..client import operations, plans

        signer = signer_for(ctx, sign) if state_verb.from_files else None
        registry = open_registry(ctx)
        plan = plans.plan(registry, state_verb, units, signer, replace)
        _notes(plan)
        operations.apply(registry, plan)
        if state_verb.wait is not None:
            _finish(
                registry, plan.names, state_verb.wait, state_verb.name, no_block, block_attempts
            )

    doc, which = HELP[state_verb]
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [
        inspect.Parameter("ctx", keyword, annotation=typer.Context),
        inspect.Parameter(
            "units",
            keyword,
            annotation=UnitsArgument if state_verb.from_files else GlobUnitsArgument,
        ),
    ]
    if state_verb.wait is not None:
        params += [
            inspect.Parameter("no_block", keyword, default=False, annotation=BlockOption),
            inspect.Parameter(
                "block_attempts", keyword, default=DEFAULT_BLOCK_ATTEMPTS, annotation=AttemptsOption
            ),
        ]
    if state_verb.from_files:
        params.append(inspect.Parameter("sign", keyword, default=None, annotation=SignOption))
    if state_verb.replaces:
        option = typer.Option("--replace", help=_REPLACE_HELP.format(which=which))
        params.append(
            inspect.Parameter("replace", keyword, default=False, annotation=Annotated[bool, option])
        )
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = command.__qualname__ = state_verb.name
    command.__doc__ = doc
    return command


for _verb in STATE_VERBS:
    verbs.command(_verb.name)(edge(_state_command(_verb)))


@verbs.command()
@edge
def destroy(ctx: typer.Context, units: GlobUnitsArgument) -> None:
    """Stop, unload and delete units from the cluster."""
    from ..client import operations

    for name in operations.destroy(open_registry(ctx), units):
        out(f"Destroyed {name}")


@verbs.command("force-reschedule")
@edge
def force_reschedule(
    ctx: typer.Context,
    units: Annotated[
        list[str] | None,
        typer.Argument(
            help="Submitted units whose failures (RescheduleOnFailure=) are forgotten.",
            show_default=False,
            metavar="UNIT",
        ),
    ] = None,
) -> None:
    """Move units off machines that are not reporting, now: ends a pause after a mass
    loss and the engine's grace period (once; later losses are judged anew). With UNIT...:
    forget where those units failed repeatedly (RescheduleOnFailure=), so they may move
    again and go back to machines they had to avoid; nothing else is asked."""
    if not units:
        open_registry(ctx).request_force_reschedule()
        out("Requested: the engine moves units off machines that are not reporting")
        return
    from ..client import operations

    for name, machines in operations.reset_failures(open_registry(ctx), units).items():
        if machines:
            out(f"Reset {name}: its failures on {', '.join(machines)} are forgotten")
        else:
            out(f"Reset {name}: no failures recorded")


@verbs.command()
@edge
def cat(
    ctx: typer.Context,
    unit: Annotated[
        str, typer.Argument(help="Name of a submitted unit (an instance shows its template).")
    ],
    expanded: Annotated[
        bool,
        typer.Option(
            "--expanded", help="A container unit as systemd gets it, not its [Container] source."
        ),
    ] = False,
) -> None:
    """Print the contents of a submitted unit."""
    from ..client import operations

    text = operations.unit_text(open_registry(ctx), unit, expanded=expanded)
    out(text, nl=not text.endswith("\n"), keep="\n\t")


@verbs.command()
@edge
def sign(
    ctx: typer.Context,
    units: Annotated[
        list[str],
        typer.Argument(
            help="Unit files (or instances named beside their template's file) of submitted units.",
            show_default=False,
            metavar="FILE",
        ),
    ],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="The key: a name in the keys directory, or a path (default: the sign_key "
            "setting, env FLEETPY_SIGN_KEY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Add your signature to submitted units without changing them, for agents that
    require several (signatures_required): only where the file's contents are the unit's.
    Nothing restarts; units wait for enough signatures, then run."""
    from ..client.cosign import cosign
    from ..errors import SigningError

    signer = signer_for(ctx, key)
    if signer is None:
        raise SigningError("no signing key: give --key KEY (or set FLEETPY_SIGN_KEY)")
    for done in cosign(open_registry(ctx), units, signer):
        what = "Signed" if done.added else "Already signed"
        out(f"{what} {done.name}: version {done.version}, keys {', '.join(done.key_ids)}")


def _finish(
    registry: "Registry",
    names: Sequence[str],
    target: WaitTarget,
    verb: str,
    no_block: bool,
    attempts: int,
) -> None:
    if not names:
        return
    if no_block:
        for name in names:
            out(f"Triggered unit {name} {verb}")
        return
    reporter = progress_reporter(names, target)
    try:
        result = waiting.wait_for(registry, names, target, attempts, reporter)
    finally:
        reporter.close()
    for unit in result.units:
        if unit.status == "done":
            out(f"Unit {unit.name} {unit.detail}")
    message = result.error_message()
    if message is not None:
        raise fail(message)
