"""The fleetpy command line: argument parsing and printing only; the work is in the client library (fleetpy.client).

Global options (etcd, ssh, signing) go before or after the verb, as with fleetctl. They,
and the agent's and engine's options, are generated from config.SETTINGS so CLI,
environment and YAML stay one table. Every FleetpyError becomes one `fleetpy: error: ...`
line on stderr; usage errors exit EXIT_USAGE.
"""

import copy
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar, get_type_hints

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperCommand, TyperGroup

from . import __version__, config
from .client import listings, operations, plans, waiting
from .client.waiting import WaitTarget
from .errors import FleetpyError
from .log import escape_controls
from .registry import Registry
from .registry.access import OPERATOR
from .signing import Signer
from .states import DesiredState, verb

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BLOCK_ATTEMPTS = 60
# Every verb's usage errors (a mistyped option, a missing argument, an unknown field) exit
# with sysexits' EX_USAGE, never Click's 2: `plan`'s 2 means only "changes", so a CI
# script that applies on 2 must not apply on a typo. 1 stays "it failed".
EXIT_USAGE = 64


class UsageError(FleetpyError):
    """Bad command-line usage found after parsing (exit EXIT_USAGE, as Click's own)."""


class OutputError(FleetpyError):
    """Standard output cannot be written (a full disk, /dev/full, a closed pipe)."""


class Output(StrEnum):
    table = "table"
    json = "json"


@dataclass(frozen=True)
class Globals:
    """The global options (config.SETTINGS of the etcd, ssh and sign scopes) given before
    or after the verb; a name that is not here was not given."""

    etcd_cli: Mapping[str, Any]


# ----------------------------------------------------------------------------- helpers


def _settings_params(scope: config.Scope) -> list[inspect.Parameter]:
    """Keyword parameters (typer options) for every setting of one scope."""
    params = []
    for setting in config.SETTINGS:
        if setting.scope != scope:
            continue
        value = config.default(setting)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        default = "" if value in (None, "", {}) else f"; default {value}"
        # Values stay strings here: config.resolve parses them, with env and file values.
        option = typer.Option(
            None,
            setting.option,
            show_default=False,
            metavar="[true|false]" if setting.option in config.SWITCHES else setting.name.upper(),
            help=f"{setting.help} (env {setting.env}{default})",
        )
        params.append(
            inspect.Parameter(
                setting.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str | None
            )
        )
    return params


def with_settings(*scopes: config.Scope) -> Callable[[F], F]:
    """Add the options of config.SETTINGS' `scopes` to a command; they arrive in **kwargs."""

    def decorate(fn: F) -> F:
        hints = {k: v for k, v in _type_hints(fn).items() if k != "return"}
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(fn).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        params = own + [p for scope in scopes for p in _settings_params(scope)]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return get_type_hints(fn, include_extras=True)


def _say(message: str) -> None:
    """One line on stderr; text from outside (names, etcd values) cannot steer the terminal."""
    typer.echo(escape_controls(message), err=True)


def _out(text: str, nl: bool = True, keep: str = "") -> None:
    """Standard output, escaped; a failed write is one clean error, not a traceback."""
    try:
        typer.echo(escape_controls(text, keep), nl=nl)
    except OSError as exc:
        # The unwritten text stays buffered; send it to /dev/null so the interpreter's
        # final flush does not fail again with a traceback of its own.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise OutputError(f"cannot write output: {exc.strerror or exc}") from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    _say(f"fleetpy: error: {message}")
    return typer.Exit(code)


@contextmanager
def _edge() -> Iterator[None]:
    """The one place user errors turn into a line on stderr and an exit code."""
    try:
        yield
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except FleetpyError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def edge(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _edge():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _globals(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Globals) else Globals({})


def _registry(ctx: typer.Context) -> Registry:
    settings = config.resolve(_globals(ctx).etcd_cli, scopes=(config.Scope.ETCD,))
    registry = Registry(
        settings.etcd.registry_config(), warn=lambda message: _say(f"fleetpy: warning: {message}")
    )
    return ctx.with_resource(registry)


def _sign_settings(ctx: typer.Context) -> config.SignSettings:
    return config.resolve(_globals(ctx).etcd_cli, scopes=(config.Scope.SIGN,)).sign


def _signer(ctx: typer.Context, key: str | None) -> Signer | None:
    """The key given with --sign, else the sign_key setting; None: do not sign. Loaded
    before anything is written, so a bad key writes nothing."""
    from .signing import load_signer

    settings = _sign_settings(ctx)
    spec = key or settings.sign_key
    if spec is None:
        return None
    return load_signer(spec, settings.keys_dir, lambda m: _say(f"fleetpy: warning: {m}"))


def _version(value: bool) -> None:
    if value:
        _out(f"fleetpy {__version__}")
        raise typer.Exit()


# ----------------------------------------------------------------------------- app

GLOBAL_OPTION = "global option"  # the param_type_name of a global option after a verb


def _switches(args: Sequence[str]) -> list[str]:
    """Boolean settings as fleetctl's switches: a bare `--strict-host-key-checking` is
    `=true`; `=false` (or a following true/false word, fleetpy's older spelling) sets it.
    Arguments after `--` are not options."""
    out: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            return [*out, arg, *rest]
        if arg in config.SWITCHES:
            arg += "=" + (rest.pop(0) if rest and config.is_boolean_word(rest[0]) else "true")
        out.append(arg)
    return out


def _after_verb(ctx: typer.Context, param: Any, value: Any) -> Any:
    """A global option given after the verb: as if given before it (and later, so it
    wins over the same option before the verb, as a repeated option does)."""
    if value is not None:
        setting = param.name.removeprefix("global_")
        ctx.find_root().obj = Globals({**_globals(ctx).etcd_cli, setting: value})
    return value


def _global_option(option: Any) -> Any:
    """The root's option of a setting, for a verb: same flag, metavar, help and parsing;
    its value goes where the root's does (_after_verb), not to the verb's function."""
    clone = copy.copy(option)
    clone.name = f"global_{option.name}"  # apart from the verb's own parameter names
    clone.expose_value = False
    clone.callback = _after_verb
    clone.param_type_name = GLOBAL_OPTION
    return clone


class _Verb(TyperCommand):
    """A verb's help: its own options, then the global ones it also takes (as fleetctl's
    GLOBAL OPTIONS)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        super().format_options(ctx, formatter)  # arguments and options, not GLOBAL_OPTION
        records = [
            p.get_help_record(ctx) for p in self.params if p.param_type_name == GLOBAL_OPTION
        ]
        if records:
            with formatter.section("Global options (also before the verb)"):
                formatter.write_dl([r for r in records if r is not None])


def _verbs(commands: Iterable[Any]) -> Iterator[Any]:
    for command in commands:
        if isinstance(command, TyperGroup):
            yield from _verbs(command.commands.values())
        else:
            yield command


class _Group(TyperGroup):
    """fleetpy itself. Every verb also takes the global options after its name, as
    fleetctl's verbs do; a verb's own option of the same name wins there (the global one
    still goes before the verb). Click's own errors (unknown option, bad value) are one
    line too, like ours."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        settings = [p for p in self.params if p.name in config.SETTINGS_BY_NAME]
        for command in _verbs(self.commands.values()):
            own = {flag for p in command.params for flag in (*p.opts, *p.secondary_opts)}
            command.params += [_global_option(p) for p in settings if not own & set(p.opts)]
            if type(command) is TyperCommand:
                command.__class__ = _Verb  # only its help differs

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        args = _switches(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            result = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )
            code = result if isinstance(result, int) else 0
        except NoArgsIsHelpError as exc:
            exc.show()
            code = EXIT_USAGE
        except ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            _say(f"fleetpy: error: {' '.join(exc.format_message().split())}{hint}")
            code = EXIT_USAGE if isinstance(exc, ClickUsageError) else exc.exit_code
        except typer.Abort:
            code = 1
        except FleetpyError as exc:  # raised outside a command, e.g. by --version
            _say(f"fleetpy: error: {exc}")
            code = 1
        sys.exit(code)


app = typer.Typer(
    name="fleetpy",
    cls=_Group,
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Schedule systemd units across a cluster of machines (fleetctl's verbs over etcd).",
)


@app.callback()
@with_settings(config.Scope.ETCD, config.Scope.SSH, config.Scope.SIGN)
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = None,
    **etcd: Any,
) -> None:
    ctx.obj = Globals(dict(etcd))


@app.command("version")
def version_command() -> None:
    """Print fleetpy's version (as --version; fleetctl has both too)."""
    _out(f"fleetpy {__version__}")


BlockOption = Annotated[
    bool,
    typer.Option(
        "--no-block",
        help=("Return once the desired state is written; do not wait for the cluster."),
    ),
]
AttemptsOption = Annotated[
    int,
    typer.Option(
        "--block-attempts",
        min=0,
        help=("Seconds to wait for the cluster to reach the state; 0 waits forever."),
    ),
]
UnitsArgument = Annotated[
    list[str],
    typer.Argument(
        help="Unit files, or names of submitted units.", show_default=False, metavar="UNIT"
    ),
]
SignOption = Annotated[
    str | None,
    typer.Option(
        "--sign",
        metavar="KEY",
        help="Sign the units with this key: a name in the keys directory, or a path "
        "(default: the sign_key setting, env FLEETPY_SIGN_KEY).",
        show_default=False,
    ),
]

_REPLACE_HELP = (
    "Replace a submitted unit whose file has other contents, {which}. An instance named "
    "without its file takes its template's contents."
)
SubmitReplaceOption = Annotated[
    bool,
    typer.Option("--replace", help=_REPLACE_HELP.format(which="if it is inactive (as fleetctl)")),
]
LoadReplaceOption = Annotated[
    bool,
    typer.Option(
        "--replace",
        help=_REPLACE_HELP.format(
            which="if it is inactive or loaded (as fleetctl): a loaded one is reloaded where "
            "it is placed"
        ),
    ),
]
StartReplaceOption = Annotated[
    bool,
    typer.Option(
        "--replace",
        help=_REPLACE_HELP.format(
            which="in any state: a launched one is restarted on the new contents where it runs"
        ),
    ),
]
GlobUnitsArgument = Annotated[
    list[str],
    typer.Argument(
        help="Names or globs of submitted units, or unit files.", show_default=False, metavar="UNIT"
    ),
]


def _notes(plan: plans.CommandPlan) -> None:
    """What the unit files say that fleetpy reads differently (fleet's legacy keys & co.)."""
    for note in plan.notes:
        _say(f"fleetpy: warning: {note}")


@app.command()
@edge
def submit(
    ctx: typer.Context,
    units: UnitsArgument,
    sign: SignOption = None,
    replace: SubmitReplaceOption = False,
) -> None:
    """Store unit files in the cluster (desired state inactive)."""
    signer = _signer(ctx, sign)
    registry = _registry(ctx)
    plan = plans.plan_submit(registry, units, None, signer, replace)
    _notes(plan)
    operations.apply(registry, plan)


@app.command()
@edge
def load(
    ctx: typer.Context,
    units: UnitsArgument,
    no_block: BlockOption = False,
    block_attempts: AttemptsOption = DEFAULT_BLOCK_ATTEMPTS,
    sign: SignOption = None,
    replace: LoadReplaceOption = False,
) -> None:
    """Submit if needed, then place units on machines and load them (desired state loaded)."""
    _submit_and_wait(
        ctx, units, DesiredState.LOADED, _signer(ctx, sign), replace, no_block, block_attempts
    )


@app.command()
@edge
def start(
    ctx: typer.Context,
    units: UnitsArgument,
    no_block: BlockOption = False,
    block_attempts: AttemptsOption = DEFAULT_BLOCK_ATTEMPTS,
    sign: SignOption = None,
    replace: StartReplaceOption = False,
) -> None:
    """Submit if needed, place, load and start units (desired state launched)."""
    _submit_and_wait(
        ctx, units, DesiredState.LAUNCHED, _signer(ctx, sign), replace, no_block, block_attempts
    )


def _submit_and_wait(
    ctx: typer.Context,
    units: list[str],
    desired: DesiredState,
    signer: Signer | None,
    replace: bool,
    no_block: bool,
    attempts: int,
) -> None:
    """load and start: submit what is new (or replaced), set the desired state, wait."""
    registry = _registry(ctx)
    plan = plans.plan_submit(registry, units, desired, signer, replace)
    _notes(plan)
    operations.apply(registry, plan)
    target = WaitTarget.LAUNCHED if desired is DesiredState.LAUNCHED else WaitTarget.LOADED
    _finish(registry, plan.names, target, verb(desired), no_block, attempts)


@app.command()
@edge
def stop(
    ctx: typer.Context,
    units: GlobUnitsArgument,
    no_block: BlockOption = False,
    block_attempts: AttemptsOption = DEFAULT_BLOCK_ATTEMPTS,
) -> None:
    """Stop launched units; they stay loaded (desired state loaded)."""
    registry = _registry(ctx)
    plan = plans.plan_stop(registry, units)
    operations.apply(registry, plan)
    _finish(registry, plan.names, WaitTarget.STOPPED, "stop", no_block, block_attempts)


@app.command()
@edge
def unload(
    ctx: typer.Context,
    units: GlobUnitsArgument,
    no_block: BlockOption = False,
    block_attempts: AttemptsOption = DEFAULT_BLOCK_ATTEMPTS,
) -> None:
    """Stop units and take them off their machines (desired state inactive)."""
    registry = _registry(ctx)
    plan = plans.plan_unload(registry, units)
    operations.apply(registry, plan)
    _finish(registry, plan.names, WaitTarget.UNLOADED, "unload", no_block, block_attempts)


@app.command()
@edge
def destroy(ctx: typer.Context, units: GlobUnitsArgument) -> None:
    """Stop, unload and delete units from the cluster."""
    for name in operations.destroy(_registry(ctx), units):
        _out(f"Destroyed {name}")


@app.command("force-reschedule")
@edge
def force_reschedule(ctx: typer.Context) -> None:
    """Move units off machines that are not reporting, now: ends a pause after a mass
    loss and the engine's grace period (once; later losses are judged anew)."""
    _registry(ctx).request_force_reschedule()
    _out("Requested: the engine moves units off machines that are not reporting")


@app.command()
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
    text = operations.unit_text(_registry(ctx), unit, expanded=expanded)
    _out(text, nl=not text.endswith("\n"), keep="\n\t")


# ----------------------------------------------------------------------------- blocking


def _finish(
    registry: Registry,
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
            _out(f"Triggered unit {name} {verb}")
        return
    reporter = _progress_reporter(names, target)
    try:
        result = waiting.wait_for(registry, names, target, attempts, reporter)
    finally:
        reporter.close()
    for unit in result.units:
        if unit.status == "done":
            _out(f"Unit {unit.name} {unit.detail}")
    message = result.error_message()
    if message is not None:
        raise _fail(message)


class _PlainReporter:
    """On anything but a terminal: one stderr line per unit whenever its status changes."""

    def __init__(self, names: Sequence[str], target: WaitTarget) -> None:
        self.seen: dict[str, tuple[str, str]] = {}
        _say(f"waiting for {len(names)} unit{'s' if len(names) != 1 else ''} to be {target}")

    def __call__(self, progress: list[waiting.UnitProgress]) -> None:
        for unit in progress:
            now = (unit.status, unit.detail)
            if self.seen.get(unit.name) != now:
                self.seen[unit.name] = now
                _say(f"{unit.name}: {unit.detail}")

    def close(self) -> None:
        pass


class _RichReporter:
    """A live display on a terminal's stderr: one row per unit, or a summary for many."""

    MAX_ROWS = 12

    def __init__(self, console: Any, names: Sequence[str], target: WaitTarget) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.target = target
        # markup=False: engine reasons and systemd messages may hold [brackets].
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.rows = len(names) <= self.MAX_ROWS
        if self.rows:
            self.tasks = {n: self.progress.add_task(escape_controls(n), total=1) for n in names}
        else:
            self.summary = self.progress.add_task(f"to be {target}", total=len(names))
        self.progress.start()

    def __call__(self, progress: list[waiting.UnitProgress]) -> None:
        if self.rows:
            for unit in progress:
                self.progress.update(
                    self.tasks[unit.name],
                    completed=unit.status != "waiting",
                    description=escape_controls(f"{unit.name}: {unit.detail}"),
                )
        else:
            done = sum(u.status != "waiting" for u in progress)
            pending = next((u for u in progress if u.status == "waiting"), None)
            detail = f" ({pending.name}: {pending.detail})" if pending else ""
            self.progress.update(
                self.summary,
                completed=done,
                description=escape_controls(f"to be {self.target}{detail}"),
            )

    def close(self) -> None:
        self.progress.stop()


def _progress_reporter(names: Sequence[str], target: WaitTarget) -> _PlainReporter | _RichReporter:
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        return _RichReporter(console, names, target)
    return _PlainReporter(names, target)


# ----------------------------------------------------------------------------- listings


FieldsOption = Annotated[
    str | None,
    typer.Option("--fields", help="Comma-separated columns to show.", show_default=False),
]
NoLegendOption = Annotated[bool, typer.Option("--no-legend", help="Do not print the header row.")]
FullOption = Annotated[bool, typer.Option("--full", "-l", help="Do not shorten ids and hashes.")]
OutputOption = Annotated[
    Output,
    typer.Option("--output", "-o", help="table, or json (an array of objects; ignores --fields)."),
]


def _fields(spec: str | None, valid: Sequence[str], default: Sequence[str]) -> list[str]:
    if spec is None:
        return list(default)
    fields = [f.strip().lower() for f in spec.split(",") if f.strip()]
    if not fields:
        raise UsageError(f"--fields is empty (valid fields: {', '.join(valid)})")
    for field in fields:
        if field not in valid:
            raise UsageError(f"unknown field {field!r} (valid fields: {', '.join(valid)})")
    return fields


def _print_table(fields: Sequence[str], rows: Sequence[Mapping[str, str]], no_legend: bool) -> None:
    lines = [] if no_legend else [[f.upper() for f in fields]]
    # Escape before measuring, so columns line up with what is shown.
    lines += [[escape_controls(row[f]) for f in fields] for row in rows]
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(fields))]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths)] + [line[-1]]
        _out("  ".join(cells).rstrip() if len(cells) > 1 else cells[0])


def _print_json(items: Sequence[Mapping[str, Any]]) -> None:
    _out(json.dumps(list(items), indent=2), keep="\n")


@app.command("list-unit-files")
@edge
def list_unit_files(
    ctx: typer.Context,
    fields: FieldsOption = None,
    no_legend: NoLegendOption = False,
    full: FullOption = False,
    output: OutputOption = Output.table,
) -> None:
    """List submitted units: hash, desired state, reported state, target machine (and,
    with --fields, why an unplaced unit is not placed, the deployment that owns a unit
    and the commit it came from)."""
    valid = ("unit", "hash", "dstate", "state", "target", "reason", "owner", "origin")
    chosen = _fields(fields, valid, valid[:5])
    registry = _registry(ctx)
    rows = listings.unit_file_rows(registry.read_view(with_text=False))
    if output is Output.json:
        _print_json(
            [
                {
                    "unit": r.unit,
                    "hash": r.hash,
                    "desired_state": r.desired_state,
                    "state": r.state,
                    "machine": r.machine,
                    "reason": r.reason,
                    "owner": r.owner,
                    "origin": r.origin,
                }
                for r in rows
            ]
        )
        return
    _print_table(
        chosen,
        [
            {
                "unit": r.unit,
                "hash": r.hash if full else r.hash[:7],
                "dstate": r.desired_state,
                "state": r.state,
                "target": "-" if r.machine is None else (r.machine if full else r.machine[:8]),
                "reason": r.reason or "-",
                "owner": r.owner or "-",
                "origin": (r.origin if full else (r.origin or "")[:12]) or "-",
            }
            for r in rows
        ],
        no_legend,
    )


@app.command("list-units")
@edge
def list_units(
    ctx: typer.Context,
    fields: FieldsOption = None,
    no_legend: NoLegendOption = False,
    full: FullOption = False,
    output: OutputOption = Output.table,
) -> None:
    """List the units machines report, with systemd's LOAD/ACTIVE/SUB."""
    chosen = _fields(
        fields,
        ("unit", "machine", "load", "active", "sub", "hash", "message"),
        ("unit", "machine", "active", "sub"),
    )
    registry = _registry(ctx)
    rows = listings.unit_rows(registry.read_view(with_text=False))
    if output is Output.json:
        _print_json(
            [
                {
                    "unit": r.unit,
                    "machine": r.machine,
                    "load": r.load,
                    "active": r.active,
                    "sub": r.sub,
                    "message": r.message,
                }
                for r in rows
            ]
        )
        return

    def machine(row: listings.UnitRow) -> str:
        shown = row.machine if full else row.machine[:8]
        return f"{shown}/{row.ip}" if row.ip else shown

    _print_table(
        chosen,
        [
            {
                "unit": r.unit,
                "machine": machine(r),
                "load": r.load or "-",
                "active": r.active or "-",
                "sub": r.sub or "-",
                "hash": (r.hash if full else r.hash[:7]) or "-",
                "message": r.message or "-",
            }
            for r in rows
        ],
        no_legend,
    )


@app.command("list-machines")
@edge
def list_machines(
    ctx: typer.Context,
    fields: FieldsOption = None,
    no_legend: NoLegendOption = False,
    full: FullOption = False,
    output: OutputOption = Output.table,
) -> None:
    """List the machines alive in the cluster."""
    valid = ("machine", "ip", "metadata")
    chosen = _fields(fields, valid, valid)
    rows = listings.machine_rows(_registry(ctx))
    if output is Output.json:
        _print_json(
            [{"machine": r.machine, "ip": r.ip, "metadata": dict(r.metadata)} for r in rows]
        )
        return
    _print_table(
        chosen,
        [
            {
                "machine": r.machine if full else r.machine[:8],
                "ip": r.ip or "-",
                "metadata": ",".join(f"{k}={v}" for k, v in sorted(r.metadata.items())) or "-",
            }
            for r in rows
        ],
        no_legend,
    )


# ----------------------------------------------------------------------------- deployments

DirectoryArgument = Annotated[
    str,
    typer.Argument(
        help="A deployment directory: fleetpy.yaml and its unit templates.",
        show_default=False,
        metavar="DIR",
    ),
]
PruneOption = Annotated[
    bool,
    typer.Option(
        "--prune", help="Destroy units this deployment created before and no longer renders."
    ),
]
CommitOption = Annotated[
    str | None,
    typer.Option(
        "--commit",
        help="The git commit being deployed (default: a digest of the rendered units).",
        show_default=False,
    ),
]


def _plan(
    ctx: typer.Context,
    directory: str,
    prune: bool,
    commit: str | None,
    signer: Signer | None = None,
) -> tuple[Registry, Any, Any, Any]:
    from . import deployment, rollout

    loaded = deployment.load_deployment(directory)
    units = deployment.render_deployment(loaded)  # all or nothing, before etcd is asked
    registry = _registry(ctx)
    plan = rollout.plan_deployment(
        registry, loaded.name, units, commit or deployment.digest(units), prune, signer
    )
    return registry, loaded, units, plan


def _styled(line: str, colour: str | None) -> None:
    """A line of the plan; coloured only on a terminal (escaped first, always)."""
    text = escape_controls(line, "\t")
    if colour is not None and sys.stdout.isatty():
        text = typer.style(text, fg=colour)
    try:
        typer.echo(text)
    except OSError as exc:
        raise OutputError(f"cannot write output: {exc.strerror or exc}") from None


def _print_plan(plan: Any, output: Output) -> None:
    from .rollout import ChangeKind

    if output is Output.json:
        _print_json(
            [
                {
                    "deployment": plan.deployment,
                    "origin": plan.origin,
                    "last_applied": plan.last_applied or None,
                    "applying": plan.applying or None,
                    "changes": [
                        {
                            "unit": c.name,
                            "kind": c.kind.value,
                            "old_hash": c.old_hash,
                            "new_hash": c.new_hash,
                            "source": c.source or None,
                            "diff": c.diff or None,
                        }
                        for c in plan.changes
                    ],
                    "unchanged": list(plan.unchanged),
                }
            ]
        )
        return
    counts = {kind: len(plan.of(kind)) for kind in ChangeKind}
    last = f"; last applied {plan.last_applied}" if plan.last_applied else ""
    running = f"; an apply of {plan.applying} is running or died" if plan.applying else ""
    _out(
        f"deployment {plan.deployment} at {plan.origin}: {counts[ChangeKind.ADD]} to add, "
        f"{counts[ChangeKind.CHANGE]} to change, {counts[ChangeKind.REMOVE]} to remove, "
        + (f"{counts[ChangeKind.SIGN]} to re-sign, " if counts[ChangeKind.SIGN] else "")
        + f"{len(plan.unchanged)} unchanged{last}{running}"
    )
    marks = {
        ChangeKind.ADD: ("+", "green"),
        ChangeKind.CHANGE: ("~", "yellow"),
        ChangeKind.REMOVE: ("-", "red"),
        ChangeKind.ORPHAN: ("?", None),
        ChangeKind.SIGN: ("~", "cyan"),
    }
    for change in plan.changes:
        mark, colour = marks[change.kind]
        note = change.source
        if change.kind is ChangeKind.ORPHAN:
            note = "no longer rendered; kept (--prune destroys it)"
        elif change.kind is ChangeKind.REMOVE:
            note = "no longer rendered; destroyed"
        _styled(f"{mark} {change.name}  {note}".rstrip(), colour)
        for line in change.diff.splitlines():
            diff_colour = (
                "green" if line.startswith("+") else "red" if line.startswith("-") else None
            )
            _styled("    " + line, diff_colour)


@app.command("plan")
@edge
def plan_command(
    ctx: typer.Context,
    directory: DirectoryArgument,
    prune: PruneOption = False,
    commit: CommitOption = None,
    output: OutputOption = Output.table,
    sign: SignOption = None,
) -> None:
    """Show what apply would do: units added, changed (with a diff) and removed.
    Exit code 0: nothing would change; 2: something would; 1: an error; 64: a usage
    error (a mistyped option or a missing argument)."""
    _, _, _, plan = _plan(ctx, directory, prune, commit, _signer(ctx, sign))
    _print_plan(plan, output)
    raise typer.Exit(2 if plan.has_changes else 0)


@app.command("apply")
@edge
def apply_command(
    ctx: typer.Context,
    directory: DirectoryArgument,
    prune: PruneOption = False,
    commit: CommitOption = None,
    max_unavailable: Annotated[
        int | None,
        typer.Option(
            "--max-unavailable",
            min=1,
            help="Units replaced at once (fleetpy.yaml, else 1).",
            show_default=False,
        ),
    ] = None,
    min_ready: Annotated[
        float | None,
        typer.Option(
            "--min-ready",
            min=0,
            max=3600,
            help="Seconds a new version must stay active "
            "before the next is touched (fleetpy.yaml, else 5).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            max=86400,
            help="Seconds a new version may take to become active (fleetpy.yaml, else 120).",
            show_default=False,
        ),
    ] = None,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback", help="On a failure, put the failed units' previous version back."
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only plan.")] = False,
    sign: SignOption = None,
) -> None:
    """Start new units, replace changed ones one step at a time (a rolling update), and
    with --prune destroy the units this deployment no longer renders. With a signing key
    every unit written is signed, and units signed otherwise are re-signed."""
    from .rollout import ApplyOptions, apply_deployment

    signer = _signer(ctx, sign)
    registry, loaded, units, plan = _plan(ctx, directory, prune, commit, signer)
    if dry_run or not plan.has_changes:
        _print_plan(plan, Output.table)
        if dry_run:
            raise typer.Exit(2 if plan.has_changes else 0)
        return
    _print_plan(plan, Output.table)
    options = ApplyOptions(
        max_unavailable=max_unavailable or loaded.rollout.max_unavailable,
        min_ready=loaded.rollout.min_ready if min_ready is None else min_ready,
        timeout=timeout or loaded.rollout.timeout,
        rollback=rollback,
    )
    result = apply_deployment(registry, plan, units, options, _apply_reporter(), signer)
    _out(
        f"applied {plan.origin} to deployment {plan.deployment}: {len(result.added)} added, "
        f"{len(result.replaced)} replaced, {len(result.removed)} removed in "
        f"{result.seconds:.1f}s"
    )


def _apply_reporter() -> Callable[[Any], None]:
    """One stderr line per step of an apply or restart."""

    def report(event: Any) -> None:
        if event.step == "done":
            return
        shown = ", ".join(event.units[:4]) + (" ..." if len(event.units) > 4 else "")
        progress = f" [{event.done}/{event.total}]" if event.total else ""
        detail = f" ({event.detail})" if event.detail and event.step != "failed" else ""
        if event.step != "failed":
            _say(f"{event.step}{progress}: {shown}{detail}")

    return report


@app.command("restart")
@edge
def restart_command(
    ctx: typer.Context,
    units: GlobUnitsArgument,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=1,
            max=86400,
            help="Seconds each machine's units may take to stop and to become active again.",
        ),
    ] = 120.0,
) -> None:
    """Restart launched units in place, one machine at a time, waiting until they are
    active again before the next machine."""
    from .rollout import restart

    for name in restart(_registry(ctx), units, timeout, _apply_reporter()):
        _out(f"Restarted {name}")


# ----------------------------------------------------------------------------- backup

BACKUP_LIMIT = 512 * 1024 * 1024  # bytes: a backup file restore reads at most
BackupFileArgument = Annotated[
    str,
    typer.Argument(help="The backup file ('-': standard output or input).", show_default=False),
]


@app.command("backup")
@edge
def backup_command(ctx: typer.Context, file: BackupFileArgument) -> None:
    """Write the cluster's desired state to FILE: every unit (contents, desired state,
    signature), operators' machine metadata and deployments, read at one revision.
    Not the schedule, machines or states: the cluster rebuilds them."""
    from . import backup
    from .files import write_file_atomically

    taken = backup.take(_registry(ctx))
    text = backup.encode(taken)
    if file == "-":
        _out(text, nl=False)
        return
    write_file_atomically(file, text)
    _out(
        f"Backed up {taken.count('unit')} units, {taken.count('content')} unit files, "
        f"{taken.count('metadata')} machines' metadata and {taken.count('deploy')} "
        f"deployments at etcd revision {taken.revision} to {file}"
    )


@app.command("restore")
@edge
def restore_command(ctx: typer.Context, file: BackupFileArgument) -> None:
    """Restore a backup into an empty prefix (an emptied or a rebuilt etcd): the engine
    places the units again, and agents keep the ones still running on their hosts."""
    from . import backup
    from .files import read_text_file

    if file == "-":
        text, source = sys.stdin.read(), "standard input"
    else:
        text, source = read_text_file(file, limit=BACKUP_LIMIT, what="backup"), file
    loaded = backup.decode(text, source)
    written = backup.restore(_registry(ctx), loaded)
    _out(
        f"Restored {loaded.count('unit')} units from {source} "
        f"({written} keys written, {len(loaded.keys) - written} already there)"
    )


# ----------------------------------------------------------------------------- etcd

etcd_app = typer.Typer(
    name="etcd",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="etcd's own state: each member's database size, the alarms, reclaiming space.",
)
app.add_typer(etcd_app)


def _size(count: int) -> str:
    """Bytes as etcdctl shows them (binary units, one decimal)."""
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@etcd_app.command("status")
@edge
def etcd_status(
    ctx: typer.Context,
    no_legend: NoLegendOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Each etcd member's version, database size and revision, and the alarms raised
    (NOSPACE: etcd refuses writes until `fleetpy etcd reclaim`)."""
    members, alarms = _registry(ctx).etcd_status()
    urls = {m.member_id: m.url for m in members if not m.error}
    if output is Output.json:
        _print_json(
            [
                {
                    "endpoint": m.url,
                    "id": f"{m.member_id:x}" if not m.error else None,
                    "version": m.version or None,
                    "db_size": m.db_size if not m.error else None,
                    "revision": m.revision if not m.error else None,
                    "leader": not m.error and m.member_id == m.leader,
                    "alarms": [
                        a.kind for a in alarms if not m.error and a.member_id == m.member_id
                    ],
                    "error": m.error or None,
                }
                for m in members
            ]
        )
        return
    _print_table(
        ("endpoint", "version", "db size", "revision", "leader"),
        [
            {
                "endpoint": m.url,
                "version": m.version or "-",
                "db size": _size(m.db_size) if not m.error else f"- ({m.error})",
                "revision": str(m.revision) if not m.error else "-",
                "leader": "yes" if not m.error and m.member_id == m.leader else "no",
            }
            for m in members
        ],
        no_legend,
    )
    for alarm in alarms:
        where = urls.get(alarm.member_id, f"member {alarm.member_id:x}")
        _say(f"fleetpy: warning: etcd alarm {alarm.kind} on {where}")


@etcd_app.command("reclaim")
@edge
def etcd_reclaim(ctx: typer.Context) -> None:
    """What etcd's NOSPACE alarm asks of an operator: compact etcd's history at its
    current revision, defragment each member in turn, then disarm the NOSPACE alarms.
    Watchers behind that revision read afresh; no unit stops."""
    report = _registry(ctx).reclaim_space()
    _out(f"Compacted etcd's history before revision {report.revision}")
    for url, before, after in report.sizes:
        _out(f"Defragmented {url}: {_size(before)} -> {_size(after)}")
    for alarm in report.disarmed:
        _out(f"Disarmed {alarm.kind} on member {alarm.member_id:x}")
    if report.unreachable:
        raise FleetpyError(
            "not defragmented, run reclaim again when they answer: " + ", ".join(report.unreachable)
        )


# ----------------------------------------------------------------------------- git

keys_app = typer.Typer(
    name="keys",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Signing keys for units (the agents' --trusted-keys hold their .pub files).",
)
app.add_typer(keys_app)


@keys_app.command("generate")
@edge
def keys_generate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)],
) -> None:
    """Make an ed25519 key pair NAME.key (mode 0600) and NAME.pub in the keys directory;
    prints the public key's path and id. Never replaces a key."""
    from .signing import generate_key

    info = generate_key(_sign_settings(ctx).keys_dir, name)
    _out(f"{info.public_path}  {info.key_id}")


@keys_app.command("list")
@edge
def keys_list(
    ctx: typer.Context,
    no_legend: NoLegendOption = False,
    output: OutputOption = Output.table,
) -> None:
    """List the keys in the keys directory: name, id, whether the private key is there."""
    from .signing import list_keys

    keys = list_keys(_sign_settings(ctx).keys_dir)
    for key in keys:
        if key.problem:
            _say(f"fleetpy: warning: key {key.name}: {key.problem}")
    if output is Output.json:
        _print_json(
            [
                {
                    "name": k.name,
                    "id": k.key_id or None,
                    "private": k.has_private,
                    "public_key": str(k.public_path) if k.public_path.exists() else None,
                }
                for k in keys
            ]
        )
        return
    _print_table(
        ("name", "id", "private"),
        [
            {"name": k.name, "id": k.key_id or "-", "private": "yes" if k.has_private else "no"}
            for k in keys
        ],
        no_legend,
    )


git_app = typer.Typer(
    name="git",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Deploy from git: hooks on a bare repository, or a watcher.",
)
app.add_typer(git_app)

BranchOption = Annotated[str, typer.Option("--branch", help="The branch that deploys.")]
DirOption = Annotated[
    str,
    typer.Option(
        "--dir",
        help="The deployment's directory in the repository, from its top (default: the "
        "top itself, for a repository that holds one deployment).",
        show_default=False,
    ),
]


def _settings_args(ctx: typer.Context) -> list[str]:
    """The global etcd settings as command-line options, for a hook or a watcher to run
    fleetpy as this command would."""
    settings = config.resolve(_globals(ctx).etcd_cli, scopes=(config.Scope.ETCD,)).etcd
    args = [
        "--endpoint",
        ",".join(settings.endpoints),
        "--etcd-prefix",
        settings.prefix or "/",
        "--request-timeout",
        f"{settings.request_timeout:g}",
    ]
    for option, value in (
        ("--ca-file", settings.ca_file),
        ("--cert-file", settings.cert_file),
        ("--key-file", settings.key_file),
        ("--username", settings.username),
        ("--password", settings.password),
    ):
        if value is not None:
            args += [option, os.path.abspath(value) if option.endswith("-file") else value]
    sign = _sign_settings(ctx)
    # A hook or watcher signs what it applies as this command would (paths made absolute:
    # it runs elsewhere).
    if sign.sign_key is not None:
        key = sign.sign_key
        args += [
            "--keys-dir",
            os.path.abspath(os.path.expanduser(sign.keys_dir)),
            "--sign-key",
            os.path.abspath(os.path.expanduser(key)) if "/" in key else key,
        ]
    return args


@git_app.command("install-hooks")
@edge
def git_install_hooks(
    ctx: typer.Context,
    repository: Annotated[str, typer.Argument(help="A bare git repository.", metavar="BARE_REPO")],
    branch: BranchOption = "main",
    directory: DirOption = ".",
    prune: PruneOption = False,
) -> None:
    """Install hooks: a push to the branch is rendered and validated (an invalid push is
    rejected, the branch does not move), then applied; the result goes back to the pusher."""
    from .gitops import HookConfig, hook_command, install_hooks

    command = hook_command(_settings_args(ctx))
    hooks = install_hooks(
        repository, HookConfig(branch, directory, command, ("--prune",) if prune else ())
    )
    for hook in hooks:
        _out(f"Installed {hook}")


@git_app.command("watch")
@edge
def git_watch(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Argument(help="The repository to follow (URL or path).", metavar="REPO_URL")
    ],
    branch: BranchOption = "main",
    directory: DirOption = ".",
    interval: Annotated[
        float, typer.Option("--interval", min=1, max=86400, help="Seconds between fetches.")
    ] = 30.0,
    workdir: Annotated[
        str | None,
        typer.Option(
            "--workdir",
            help="Where the clone is kept (default: ~/.cache/fleetpy/git).",
            show_default=False,
        ),
    ] = None,
    prune: PruneOption = False,
    once: Annotated[bool, typer.Option("--once", help="Fetch and apply once, then exit.")] = False,
) -> None:
    """Follow a branch: when it moves, plan and apply its deployment. Several watchers
    may run; one applies at a time (an etcd lease), the last applied commit is in etcd."""
    from pathlib import Path

    from .gitops import WatchConfig, hook_command, watch

    command = hook_command(_settings_args(ctx))
    status = watch(
        WatchConfig(
            url,
            branch,
            directory,
            interval,
            Path(workdir) if workdir else None,
            ("--prune",) if prune else (),
        ),
        command,
        lambda: _registry(ctx),
        once=once,
    )
    raise typer.Exit(status)


# ----------------------------------------------------------------------------- remote


def _ssh_settings(ctx: typer.Context) -> config.SshSettings:
    return config.resolve(_globals(ctx).etcd_cli, scopes=(config.Scope.SSH,)).ssh


@app.command("status")
@edge
def status_command(ctx: typer.Context, units: UnitsArgument) -> None:
    """`systemctl status` of units on their machines (a global unit: on every machine)."""
    from . import remote

    registry, settings = _registry(ctx), _ssh_settings(ctx)
    failures = []
    for name in units:
        for target in remote.unit_targets(registry, name):
            _out(f"{name} on {target.label}:")
            try:
                for line in remote.run(settings, target, remote.status_command(name)):
                    _out(line, keep="\t")
            except remote.RemoteError as exc:
                failures.append(str(exc))
            _out("")
    if failures:
        raise remote.RemoteError("; ".join(failures))


@app.command("journal")
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
    from . import remote

    registry, settings = _registry(ctx), _ssh_settings(ctx)
    targets = remote.unit_targets(registry, unit)
    if follow and len(targets) > 1:
        shown = ", ".join(t.label for t in targets)
        raise UsageError(f"{unit} runs on {len(targets)} machines ({shown}): --follow takes one")
    for target in targets:
        if len(targets) > 1:
            _out(f"{unit} on {target.label}:")
        for line in remote.run(settings, target, remote.journal_command(unit, lines, follow)):
            _out(line, keep="\t")


# Options after MACHINE belong to the command run there, not to fleetpy.
@app.command(
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
    from . import remote

    registry, settings = _registry(ctx), _ssh_settings(ctx)
    target = remote.machine_target(registry, machine)
    registry.close()
    remote.exec_ssh(settings, target, command or [])


# ----------------------------------------------------------------------------- cluster

cluster_app = typer.Typer(
    name="cluster",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="A whole cluster on this machine (root): etcd, engines, hosts with their own IPs.",
)
app.add_typer(cluster_app)
NameOption = Annotated[
    str, typer.Option("--name", help="The cluster's name (1-8 lowercase letters and digits).")
]


@cluster_app.command("up")
@edge
def cluster_up(
    name: NameOption = "fleetpy",
    hosts: Annotated[int, typer.Option("--hosts", min=1, max=200)] = 3,
    etcd_members: Annotated[int, typer.Option("--etcd-members", min=1, max=3)] = 1,
    subnet: Annotated[
        str, typer.Option("--subnet", help="A private IPv4 range.")
    ] = "10.213.0.0/24",
    ttl: Annotated[int, typer.Option("--ttl", min=2, max=3600, help="The agents' TTL.")] = 5,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="etcd over TLS only (clients and peers), with its auth on: a role per kind "
            "of client, a client certificate per engine, agent and you (in the env file).",
        ),
    ] = False,
) -> None:
    """Start etcd, two engines and HOSTS hosts (real systemd, sshd, docker, the agent),
    each in its own network namespace with its own address; print how to use it."""
    from .cluster import local

    state = local.up(
        name,
        hosts,
        etcd_members,
        subnet,
        ttl,
        log=lambda m: _say(f"cluster: {m}"),
        secure=secure,
    )
    _out(
        f"cluster {name} is up in {state.up_seconds:.1f}s: {len(state.hosts)} hosts on "
        f"{state.subnet}"
    )
    for host in state.hosts:
        meta = ",".join(f"{k}={v}" for k, v in sorted(host.metadata.items()))
        _out(f"  {host.name}  {host.address}  {host.machine_id}  {meta}")
    _out(f"endpoint:     {','.join(state.endpoints)}")
    _out(f"ssh user:     {local.SSH_USER}")
    _out(f"ssh key:      {state.identity}")
    _out(f"known hosts:  {state.known_hosts}")
    if state.operator_tls:
        _out(f"CA:           {state.operator_tls['FLEETPY_CA_FILE']}")
        _out(f"you (etcd):   {state.operator_tls['FLEETPY_CERT_FILE']} (user {OPERATOR})")
    _out(f"to use it:    . {state.env_file}   (sets all of the above for fleetpy)")
    _out(f"to end it:    fleetpy cluster down --name {name}")


@cluster_app.command("status")
@edge
def cluster_status(name: NameOption = "fleetpy") -> None:
    """What the cluster runs: etcd members, engines, hosts (alive or not)."""
    from .cluster import local

    state, rows = local.status(name)
    secure = ", etcd TLS and roles" if state.pki else ""
    _out(f"cluster {name}: {state.subnet}{secure}, env file {state.env_file or '-'}")
    _print_table(
        ["what", "name", "alive", "detail"],
        [
            {
                "what": r.what,
                "name": r.name,
                "alive": "yes" if r.alive else "NO",
                "detail": r.detail,
            }
            for r in rows
        ],
        no_legend=False,
    )


@cluster_app.command("down")
@edge
def cluster_down(name: NameOption = "fleetpy") -> None:
    """Remove everything the cluster made, and nothing else; what is gone already counts
    as removed. Exits non-zero only if something could not be removed."""
    from .cluster import local

    local.down(name, say=_out)


# ----------------------------------------------------------------------------- render


@app.command()
@edge
def render(
    template: Annotated[str, typer.Argument(help="Jinja unit template file.")],
    values: Annotated[
        str | None,
        typer.Option("--values", help="YAML file of template values.", show_default=False),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="key=value, overrides --values; repeatable.", show_default=False
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write to this file instead of stdout.", show_default=False
        ),
    ] = None,
) -> None:
    """Render a Jinja unit template with values."""
    from . import template as templating
    from .files import write_file_atomically

    # In a child process with a time and memory limit: a template is untrusted input.
    text = templating.render_bounded(template, _template_values(templating, values, set_ or []))
    if output is None:
        _out(text, nl=False, keep="\n\t")
    else:
        write_file_atomically(output, text)


def _template_values(
    templating: Any, values_file: str | None, sets: Sequence[str]
) -> dict[str, Any]:
    overrides = templating.parse_set(sets)  # check the command line before reading files
    base = templating.load_values(values_file) if values_file else {}
    return dict(templating.merge_values(base, overrides))


# ----------------------------------------------------------------------------- daemons


@app.command()
@edge
@with_settings(config.Scope.ENGINE, config.Scope.METRICS)
def engine(ctx: typer.Context, **options: Any) -> None:
    """Run an engine: competes for leadership and places units on machines."""
    settings = config.resolve(
        {**_globals(ctx).etcd_cli, **options},
        scopes=(config.Scope.ETCD, config.Scope.ENGINE, config.Scope.METRICS),
    )
    from . import daemons  # lazily: the daemons' imports are not the CLI's

    daemons.run_engine(settings)


@app.command()
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
        {**_globals(ctx).etcd_cli, **options},
        file_values,
        scopes=(config.Scope.ETCD, config.Scope.AGENT, config.Scope.METRICS),
    )
    from . import daemons

    daemons.run_agent(settings)


@app.command("api")
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
        {**_globals(ctx).etcd_cli, **options}, scopes=(config.Scope.ETCD, config.Scope.API)
    )
    from . import daemons

    daemons.run_api(settings, insecure)


class AgentFile(StrEnum):
    unit = "unit"
    config = "config"


@app.command("agent-files")
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
    from . import hostfiles

    if which is AgentFile.unit:
        _out(hostfiles.agent_unit(), nl=False, keep="\n")
    else:
        _out(hostfiles.read(hostfiles.CONFIG_EXAMPLE).decode(), nl=False, keep="\n")


def main(argv: Sequence[str] | None = None) -> None:
    """The `fleetpy` command. Ends the process itself (see fleetpy.process)."""
    from .process import exit_process

    try:
        app(args=None if argv is None else list(argv), prog_name="fleetpy")
    except SystemExit as exc:
        exit_process(exc.code)
    exit_process(0)


if __name__ == "__main__":
    main()
