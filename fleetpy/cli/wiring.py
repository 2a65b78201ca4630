"""The app and its option wiring: the root command with the global options (etcd, ssh,
signing) from config.SETTINGS, the same options after every verb (as fleetctl), the one
edge where user errors become a line and an exit code, and what a verb gets from the
global options (a registry, a signer)."""

import copy
import functools
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_type_hints

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer._coercion import RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_choice
from typer.core import TyperCommand, TyperGroup

from .. import __version__, config
from ..errors import FleetpyError
from .output import UsageError, fail, out, say

if TYPE_CHECKING:  # gRPC and the unit-file grammar: loaded by the verbs that use them
    from ..registry import Registry
    from ..unitfile.signing import Signer

F = TypeVar("F", bound=Callable[..., Any])

# Every verb's usage errors (a mistyped option, a missing argument, an unknown field) exit
# with sysexits' EX_USAGE, never Click's 2: `plan`'s 2 means only "changes", so a CI
# script that applies on 2 must not apply on a typo. 1 stays "it failed".
EXIT_USAGE = 64


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


@contextmanager
def _edge() -> Iterator[None]:
    """The one place user errors turn into a line on stderr and an exit code."""
    try:
        yield
    except UsageError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except FleetpyError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def edge(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _edge():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Globals) else Globals({})


def open_registry(ctx: typer.Context) -> "Registry":
    from ..registry import Registry

    settings = config.resolve(globals_of(ctx).etcd_cli, scopes=(config.Scope.ETCD,))
    registry = Registry(settings.etcd, warn=lambda message: say(f"fleetpy: warning: {message}"))
    return ctx.with_resource(registry)


def sign_settings(ctx: typer.Context) -> config.SignSettings:
    return config.resolve(globals_of(ctx).etcd_cli, scopes=(config.Scope.SIGN,)).sign


def signer_for(ctx: typer.Context, key: str | None) -> "Signer | None":
    """The key given with --sign, else the sign_key setting; None: do not sign. Loaded
    before anything is written, so a bad key writes nothing."""
    from ..unitfile.signing import load_signer

    settings = sign_settings(ctx)
    spec = key or settings.sign_key
    if spec is None:
        return None
    return load_signer(spec, settings.keys_dir, lambda m: say(f"fleetpy: warning: {m}"))


def _version(value: bool) -> None:
    if value:
        out(f"fleetpy {__version__}")
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
        ctx.find_root().obj = Globals({**globals_of(ctx).etcd_cli, setting: value})
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


_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_NOT_PLAIN = object()


def _plain_value(annotation: Any, value: Any, info: Any, ctx: Any) -> Any:
    """VALUE as ANNOTATION for the plain values fleetpy's options take (text, integers and
    decimals within their bounds, enums, lists of text); _NOT_PLAIN for anything else."""
    if annotation is bool:
        return value if isinstance(value, bool) else _NOT_PLAIN
    if annotation is str or annotation == list[str]:
        texts = value if annotation is not str and isinstance(value, (list, tuple)) else [value]
        # Text that is not UTF-8 (undecodable argv bytes) is pydantic's to refuse.
        if not all(isinstance(t, str) and (t.isascii() or _utf8(t)) for t in texts):
            return _NOT_PLAIN
        return value if annotation is str else list(texts)
    if annotation in (int, float) and not info.clamp:
        if isinstance(value, str):
            pattern = _INTEGER if annotation is int else _DECIMAL
            value = annotation(value) if pattern.fullmatch(value) else _NOT_PLAIN
        if type(value) not in (int, float) or (annotation is int and type(value) is float):
            return _NOT_PLAIN
        inside = (info.min is None or value >= info.min) and (info.max is None or value <= info.max)
        return annotation(value) if inside else _NOT_PLAIN
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        try:
            return coerce_cli_choice(
                value, choices=list(annotation), case_sensitive=info.case_sensitive, ctx=ctx
            )
        except ValueError:
            return _NOT_PLAIN
    return _NOT_PLAIN


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class _PlainValues(RuntimeParam):
    """typer's coercion of an option's value without pydantic (typer builds a pydantic
    TypeAdapter per parameter: ~30 ms and ~5 MiB of a verb's start-up) for plain values;
    any other value, an invalid one included, goes to typer's own coercion, so errors read
    as before. typer internals (RuntimeParam, _runtime_param): tested on 0.29, as
    typer._click."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        plain = _plain_value(self.annotation, value, self.parameter_info, ctx)
        if plain is not _NOT_PLAIN:
            return plain
        typers = build_runtime_param(param.type_descriptor)
        return typers._coerce_value(value, param=param, ctx=ctx)


def _plain_coercion(params: list[Any]) -> list[Any]:
    """PARAMS, typer's with _PlainValues where typer has not built its own coercion yet."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)  # None: Click's own parameter
        if descriptor is None or param._runtime_param is not None:
            continue
        if descriptor.file_annotation is None and descriptor.parameter_info.parser is None:
            param._runtime_param = _PlainValues(descriptor.parameter_info, descriptor.annotation)
    return params


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

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_coercion(super().get_params(ctx))


class _SubGroup(TyperGroup):
    """A group of verbs (etcd, keys, git, cluster): its options as a verb's (_PlainValues)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_coercion(super().get_params(ctx))


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
        for group in self.commands.values():
            if type(group) is TyperGroup:
                group.__class__ = _SubGroup  # only its options' coercion differs
        for command in _verbs(self.commands.values()):
            own = {flag for p in command.params for flag in (*p.opts, *p.secondary_opts)}
            command.params += [_global_option(p) for p in settings if not own & set(p.opts)]
            if type(command) is TyperCommand:
                command.__class__ = _Verb  # only its help differs

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_coercion(super().get_params(ctx))

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
            say(f"fleetpy: error: {' '.join(exc.format_message().split())}{hint}")
            code = EXIT_USAGE if isinstance(exc, ClickUsageError) else exc.exit_code
        except typer.Abort:
            code = 1
        except FleetpyError as exc:  # raised outside a command, e.g. by --version
            say(f"fleetpy: error: {exc}")
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
    out(f"fleetpy {__version__}")
