"""Jinja unit templates, their values (YAML and --set), and systemd quoting filters.

Public API:
  render(template_path, values, source_name=None) -> str           in this process
  render_bounded(template_path, values, source_name=None) -> str   in a limited child process
  load_values(path) -> dict
  parse_set(items) -> dict          (--set key=value, dotted keys nest)
  merge_values(base, override) -> dict
  systemd_quote(arg, specifiers=False) -> str     one argument on an Exec*= line
  exec_args(args, specifiers=False) -> str        several arguments
  systemd_value(value, specifiers=False) -> str   the value of any other Key= line
  make_environment(search_path) -> jinja2.Environment

Filters in the environment: systemd_quote, exec_args, systemd_value, container_value, systemd_key,
docker_name, docker_env, as_list; global function fail(message).

Templates are rendered with StrictUndefined, keep_trailing_newline, no
autoescape, trim_blocks and lstrip_blocks (block tags do not leave blank lines).
Every `{{ ... }}` output is checked: None and values that would span lines are
errors, so a forgotten filter cannot inject a line into a unit.

A template is untrusted input. It renders in Jinja's immutable sandbox (no
attributes starting with `_`, no Python internals, no list/dict mutation),
and includes come only from the template's own directory (no `..`, no
absolute names, no symlink pointing out), each read as a regular file of at
most MAX_TEMPLATE_BYTES (1 MiB). Limits of one render:

  MAX_OUTPUT_BYTES = 1 MiB      the rendered unit
  MAX_VALUE_LENGTH = 1 MiB      a string (characters) or list (items) the template builds
                                with *, +, ~, %, join, center, indent, replace, ...;
                                checked before the value is built
  MAX_INT_BITS     = 4096       a number computed with * or **
  MAX_FORMAT_WIDTH = 4096       a width or precision in a %- or {}-format
  range()                       at most 100,000 items (Jinja's sandbox)
  RENDER_TIMEOUT   = 10 s       render_bounded: wall clock (and CPU time) of the child
  RENDER_MEMORY    = 1 GiB      render_bounded: address space of the child (RLIMIT_AS)

Values files are YAML read by fleetpy.yamlload (merge keys, no duplicate keys,
bounded depth and alias expansion) from a regular file of at most 1 MiB.
Every error, whatever a template raises, is one TemplateError line
`FILE:LINE: message`; never a traceback.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import re
import resource
import signal
import string
import subprocess
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import jinja2
import jinja2.runtime
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from fleetpy.errors import FileError, FleetpyError, TemplateError
from fleetpy.files import MAX_TEMPLATE_BYTES, MAX_VALUES_BYTES, MiB, display_path, read_text_file
from fleetpy.yamlload import MAX_DEPTH, load_yaml_mapping

from .quoting import container_word, escape_value, exec_arg, value_problem

# Limits of one render (MAX_TEMPLATE_BYTES and MAX_VALUES_BYTES are in fleetpy.files).
MAX_OUTPUT_BYTES = 1 * MiB  # the rendered unit
MAX_VALUE_LENGTH = 1 * MiB  # a string (characters) or list (items) built by a template
MAX_INT_BITS = 4096  # a number computed by a template
MAX_FORMAT_WIDTH = 4096  # a width or precision in a format string
RENDER_TIMEOUT = 10.0  # seconds, render_bounded (wall clock; CPU a second more)
RENDER_MEMORY = 1024 * MiB  # address space of render_bounded's child process

# ---------------------------------------------------------------------------
# Quoting filters: the rules themselves are in fleetpy.unitfile.quoting
# ---------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _text(value: Any, what: str) -> str:
    """A scalar value as text; YAML booleans become true/false as systemd writes them."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises the usual "'x' is undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        text = str(value)
        if "\x00" in text:
            raise TemplateError(f"{what} contains a NUL character")
        return text
    if value is None:
        raise TemplateError(f"{what} is empty (null in the values?)")
    raise TemplateError(f"{what} must be a string or number, not {type(value).__name__}")


def systemd_quote(arg: Any, specifiers: bool = False) -> str:
    """Quote one argument for an Exec*= line so systemd passes exactly `arg`.

    systemd splits Exec lines itself (no shell): double quotes group, C escapes
    are decoded, then %-specifiers are expanded and, at exec time, $VAR/${VAR}.
    So: wrap in double quotes, backslash-escape `\\` and `"`, write control
    characters (newline!) as C escapes, `$` as `$$` and `%` as `%%`.
    `specifiers=True` keeps `%` for template-authored values such as `%m`.
    """
    return exec_arg(_text(arg, "an Exec argument"), specifiers)


def exec_args(args: Any, specifiers: bool = False) -> str:
    """Quote each item of a list and join them with spaces."""
    if isinstance(args, jinja2.Undefined):
        str(args)
    if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Iterable):
        raise TemplateError(f"expected a list of arguments, not {type(args).__name__}: {args!r}")
    return " ".join(systemd_quote(arg, specifiers) for arg in args)


def systemd_value(value: Any, specifiers: bool = False) -> str:
    """Make `value` safe as the whole value of a non-Exec `Key=` line.

    Such lines have no quoting: `%` is escaped as `%%` (unless `specifiers`),
    and what cannot be written on one line that reads back the same is an
    error: line breaks and other control characters, a trailing backslash
    (it would continue the line), an empty value (it would reset the key).
    """
    text = _text(value, "a unit value")
    problem = value_problem(text)
    if problem:
        raise TemplateError(problem)
    return escape_value(text, specifiers)


def container_value(value: Any) -> str:
    """One quoted word for a [Container] list key (Environment=GREETING={{ x | container_value }})."""
    return container_word(_text(value, "a [Container] value"))


def systemd_key(key: Any) -> str:
    text = _text(key, "a unit key")
    if not _KEY.fullmatch(text):
        raise TemplateError(
            f"invalid unit file key {text!r} (allowed: letters, digits, '-' and '_')"
        )
    return text


def docker_name(name: Any) -> str:
    """Validate a name usable inside a docker container name."""
    text = _text(name, "the name")
    if not _DOCKER_NAME.fullmatch(text):
        raise TemplateError(
            f"invalid name {text!r} for a container (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        )
    return text


def docker_env(key: Any, value: Any) -> str:
    """One quoted `KEY=value` argument for `docker run --env`."""
    name = _text(key, "an environment variable name")
    if not _ENV_NAME.fullmatch(name):
        raise TemplateError(f"invalid environment variable name {name!r}")
    return systemd_quote(f"{name}={_text(value, f'env {name}')}")


def as_list(value: Any) -> list[Any]:
    """A scalar as a one-item list; a list as is."""
    if isinstance(value, jinja2.Undefined):
        str(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        raise TemplateError(f"expected a value or a list, not a mapping: {dict(value)!r}")
    return [value]


def _fail(message: str) -> str:
    raise TemplateError(str(message))


def _finalize(value: Any) -> Any:
    # Runs on every {{ }} output: the last line of defence against injection.
    if isinstance(value, jinja2.Undefined):
        return value
    if value is None:
        raise TemplateError("value is empty (null in the values?)")
    if isinstance(value, str) and re.search(r"[\r\n\x00\x0b\x0c\x1c-\x1e\x85\u2028\u2029]", value):
        raise TemplateError(
            f"value {value!r} would span lines; quote it with systemd_quote or systemd_value"
        )
    return value


# ---------------------------------------------------------------------------
# The sandbox: no Python internals, no mutation, bounded values
# ---------------------------------------------------------------------------


def _too_long(what: str, size: int) -> TemplateError:
    return TemplateError(
        f"{what} would have {size} characters or items, more than "
        f"{MAX_VALUE_LENGTH}, fleetpy's limit for a value in a template"
    )


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse arithmetic whose result would be huge, before computing it."""
    ints = (
        isinstance(left, int)
        and not isinstance(left, bool)
        and isinstance(right, int)
        and not isinstance(right, bool)
    )
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        if right * math.log2(abs(left)) > MAX_INT_BITS:
            raise TemplateError(
                f"{left} ** {right} is larger than {MAX_INT_BITS} bits, "
                "fleetpy's limit for a number in a template"
            )
    elif operator == "*":
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateError(
                f"a product larger than {MAX_INT_BITS} bits, "
                "fleetpy's limit for a number in a template"
            )
        for sequence, count in ((left, right), (right, left)):
            size = _length(sequence)
            if size is not None and isinstance(count, int) and size * count > MAX_VALUE_LENGTH:
                raise _too_long(f"{type(sequence).__name__} * {count}", size * count)
    elif operator == "+":
        sizes = (_length(left), _length(right))
        if sizes[0] is not None and sizes[1] is not None and sizes[0] + sizes[1] > MAX_VALUE_LENGTH:
            raise _too_long("the sum", sizes[0] + sizes[1])
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left)


# A printf-style conversion: %[(key)][flags][width][.precision][length]type
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)?", re.S)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _too_wide(number: str) -> bool:
    # len() first: int() of thousands of digits is itself refused by Python.
    return len(number) > 9 or int(number) > MAX_FORMAT_WIDTH


def _check_percent_format(fmt: str) -> None:
    for match in _PERCENT.finditer(fmt):
        for number in match.group(1, 2):
            if number == "*" or (number is not None and _too_wide(number)):
                raise TemplateError(
                    f"format {_short(match.group())} asks for a width above "
                    f"{MAX_FORMAT_WIDTH}, fleetpy's limit"
                )


def _check_brace_format(fmt: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format reports it when called
    for _, _, spec, _ in fields:
        if spec and ("{" in spec or any(_too_wide(n) for n in re.findall(r"\d+", spec))):
            raise TemplateError(
                f"format spec {_short(spec)} asks for a width above "
                f"{MAX_FORMAT_WIDTH} (or a nested field), fleetpy's limit"
            )


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_VALUE_LENGTH:
        raise _too_long(what, width)


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        _check_width(len(text) + hits * len(new), "the replaced text")


def _check_join(items: Any, separator: Any) -> None:
    if isinstance(items, (list, tuple)):
        size = sum(len(item) if isinstance(item, str) else 0 for item in items)
        size += len(items) * len(separator) if isinstance(separator, str) else 0
        _check_width(size, "the joined text")


def _check_str_method(text: str, name: str, args: tuple[Any, ...]) -> None:
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_width(args[0], f"str.{name}()")
    elif name == "expandtabs" and args and isinstance(args[0], int):
        _check_width(len(text) * args[0], "str.expandtabs()")
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1])
    elif name == "join" and args:
        _check_join(args[0], text)


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _check_indent(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    text, width = _arg(args, kwargs, 0, "s"), _arg(args, kwargs, 1, "width")
    if isinstance(width, str) and isinstance(text, str):
        _check_width(len(text) + len(width) * (text.count("\n") + 1), "the indented text")
    else:
        _check_width(width, "the indentation")


def _check_wordwrap(text: Any, width: Any, wrapstring: Any) -> None:
    if isinstance(text, str) and isinstance(wrapstring, str):
        breaks = len(text) // max(width if isinstance(width, int) else 79, 1) + text.count("\n") + 1
        _check_width(len(text) + breaks * len(wrapstring), "the wrapped text")


# Filters whose arguments can ask for gigabytes: checked before they run.
_FILTER_CHECKS: dict[str, Callable[[tuple[Any, ...], Mapping[str, Any]], None]] = {
    "center": lambda a, k: _check_width(_arg(a, k, 1, "width"), "the centered text"),
    "indent": _check_indent,
    "format": lambda a, k: _check_percent_format(str(_arg(a, k, 0, "value"))),
    "replace": lambda a, k: _check_replace(
        _arg(a, k, 0, "s"), _arg(a, k, 1, "old"), _arg(a, k, 2, "new")
    ),
    "slice": lambda a, k: _check_width(_arg(a, k, 1, "slices"), "the number of slices"),
    "join": lambda a, k: _check_join(_arg(a, k, 0, "value"), _arg(a, k, 1, "d")),
    "tojson": lambda a, k: _check_width(_arg(a, k, 1, "indent"), "the JSON indentation"),
    "batch": lambda a, k: _check_width(_arg(a, k, 1, "linecount"), "a batch"),
    "wordwrap": lambda a, k: _check_wordwrap(
        _arg(a, k, 0, "s"), _arg(a, k, 1, "width"), _arg(a, k, 3, "wrapstring")
    ),
}


def _checked_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    check = _FILTER_CHECKS[name]
    # Filters marked pass_context & co. get the context first: not an argument.
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(args[skip:], kwargs)
        return function(*args, **kwargs)

    return checked


def _bounded_join(items: Iterable[Any]) -> str:
    """`''.join(map(str, items))` that stops at MAX_VALUE_LENGTH characters."""
    parts: list[str] = []
    size = 0
    for item in items:
        text = str(item)
        size += len(text)
        if size > MAX_VALUE_LENGTH:
            raise _too_long("the joined text", size)
        parts.append(text)
    return "".join(parts)


class _CodeGenerator(CodeGenerator):
    # `a ~ b` compiles to an unchecked join: route it through the bounded one.
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with arithmetic and string building bounded."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    # Macro bodies, {% set %} blocks and callers are joined with `concat`.
    concat = staticmethod(_bounded_join)
    bounded_join = staticmethod(_bounded_join)

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(
        __self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(owner, str):
            _check_str_method(owner, __obj.__name__, args)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_brace_format(value.__self__)
        return wrapped


class _ConfinedLoader(jinja2.BaseLoader):
    """Templates from one directory only: no `..`, no absolute names, no symlink out.

    Each file is read as a regular file of at most MAX_TEMPLATE_BYTES.
    """

    def __init__(
        self, directory: str, preloaded: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        self.directory = directory
        self._real = os.path.realpath(directory)
        self._preloaded = dict(preloaded or {})
        # filename -> name, for messages: every file this loader handed out.
        self.files: dict[str, str] = {
            filename: name for name, (_, filename) in self._preloaded.items()
        }

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        if template in self._preloaded:
            source, filename = self._preloaded[template]
            return source, filename, lambda: True
        shown = display_path(template)
        parts = template.replace(os.sep, "/").split("/")
        if os.path.isabs(template) or ".." in parts:
            raise TemplateError(f"included template {shown} is outside the template directory")
        filename = os.path.join(self.directory, *[part for part in parts if part not in ("", ".")])
        real = os.path.realpath(filename)
        if os.path.commonpath([self._real, real]) != self._real:
            raise TemplateError(
                f"included template {shown} is a symbolic link to "
                f"{display_path(real)}, outside the template directory"
            )
        if not os.path.lexists(real):
            raise jinja2.TemplateNotFound(template)
        try:
            source = read_text_file(real, limit=MAX_TEMPLATE_BYTES, what="template")
        except FileError as exc:
            raise TemplateError(str(exc)) from None
        self.files[filename] = template
        return source, filename, lambda: True


def make_environment(
    search_path: str | os.PathLike[str], preloaded: Mapping[str, tuple[str, str]] | None = None
) -> jinja2.Environment:
    """The sandboxed environment templates render in, loading from `search_path` only."""
    env = _Sandbox(
        loader=_ConfinedLoader(os.fspath(search_path), preloaded),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(
        systemd_quote=systemd_quote,
        exec_args=exec_args,
        systemd_value=systemd_value,
        container_value=container_value,
        systemd_key=systemd_key,
        docker_name=docker_name,
        docker_env=docker_env,
        as_list=as_list,
    )
    for name in _FILTER_CHECKS:
        env.filters[name] = _checked_filter(name, env.filters[name])
    env.globals["fail"] = _fail
    # lipsum(n) builds n paragraphs of lorem ipsum: no use in a unit, only a way to hang.
    env.globals.pop("lipsum", None)
    return env


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _template_location(
    tb: TracebackType | None, files: Mapping[str, str]
) -> tuple[str, int] | None:
    """The innermost traceback frame inside a template (Jinja maps those to template lines)."""
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in files:
            found = (files[filename], tb.tb_lineno)
        tb = tb.tb_next
    return found


def _one_line(message: object) -> str:
    """Whitespace runs as one space, other control characters escaped: safe on a terminal."""
    text = " ".join(str(message).split())
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply, or a macro or include that calls itself without end"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OverflowError) and exc.args and isinstance(exc.args[0], int):
        return "number out of range"  # OverflowError(errno, strerror) from float arithmetic
    return _one_line(exc) or type(exc).__name__


def _render_chunks(template: jinja2.Template, values: dict[str, Any]) -> str:
    """Render, stopping as soon as the output passes MAX_OUTPUT_BYTES."""
    chunks: list[str] = []
    size = 0
    stream = template.generate(values)
    assert isinstance(stream, types.GeneratorType)  # typed as an Iterator; throw() is needed
    for chunk in stream:
        size += len(chunk.encode("utf-8", "surrogatepass"))
        if size > MAX_OUTPUT_BYTES:
            # Thrown into the template so the error carries the line that crossed the limit.
            stream.throw(
                TemplateError(
                    f"output larger than {MAX_OUTPUT_BYTES // MiB} MiB, fleetpy's limit for a rendered unit"
                )
            )
        chunks.append(chunk)
    return "".join(chunks)


def render(
    template_path: str | os.PathLike[str],
    values: Mapping[str, Any],
    source_name: str | None = None,
) -> str:
    """Render a unit template in the sandbox; errors are TemplateError `NAME:LINE: message`.

    `source_name` names the template in messages (default: the path as given).
    Runs in this process: see render_bounded for a time and memory limit.
    """
    path = os.fspath(template_path)
    label = display_path(source_name or path)
    try:
        source = read_text_file(path, limit=MAX_TEMPLATE_BYTES, what="template")
    except FileError as exc:
        raise TemplateError(str(exc)) from None
    if not isinstance(values, Mapping) or not all(isinstance(key, str) for key in values):
        raise TemplateError(f"values for {label} must be a mapping with string keys")

    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    main_file = os.path.join(directory, name)
    env = make_environment(directory, {name: (source, main_file)})
    loader = env.loader
    assert isinstance(loader, _ConfinedLoader)
    loader.files[main_file] = label
    try:
        return _render_chunks(env.get_template(name), dict(values))
    except jinja2.TemplateSyntaxError as exc:
        where = label
        if exc.filename and os.path.abspath(exc.filename) != main_file:
            where = display_path(os.path.relpath(exc.filename, directory))
        raise TemplateError(f"{where}:{exc.lineno}: {_one_line(exc.message or exc)}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"{label}: included template {_one_line(exc.name)} not found") from None
    except Exception as exc:
        # Included templates are named relative to the main template's directory.
        files = {filename: display_path(shown) for filename, shown in loader.files.items()}
        location = _template_location(exc.__traceback__, files)
        message = _describe(exc)
        if location is None:
            raise TemplateError(f"{label}: {message}") from None
        raise TemplateError(f"{location[0]}:{location[1]}: {message}") from None


# ---------------------------------------------------------------------------
# Rendering in a child process: a time and memory limit
# ---------------------------------------------------------------------------

# The child runs with the running fleetpy first on sys.path and without the
# current directory (-P): a jinja2.py in the user's directory is not imported.
_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); from fleetpy.unitfile.template import _serve; _serve()"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class RenderJob:
    """One template to render with its values (`source_name` names it in messages)."""

    template: str
    values: Mapping[str, Any]
    source_name: str | None = None


def render_bounded(
    template_path: str | os.PathLike[str],
    values: Mapping[str, Any],
    source_name: str | None = None,
    *,
    timeout: float = RENDER_TIMEOUT,
    memory: int = RENDER_MEMORY,
) -> str:
    """render() in a child process limited to `timeout` seconds and `memory` bytes.

    The sandbox caps ranges and sizes but not time: nested loops can still
    run for ever. Exceeding a limit is a one-line TemplateError.
    """
    job = RenderJob(os.fspath(template_path), values, source_name)
    return render_all_bounded([job], timeout=timeout, memory=memory)[0]


def render_all_bounded(
    jobs: Sequence[RenderJob], *, timeout: float | None = None, memory: int = RENDER_MEMORY
) -> list[str]:
    """Render every job in one child process (one start-up for a whole deployment);
    all or nothing: the first failing job's error is raised. `timeout` covers all of
    them (default RENDER_TIMEOUT, plus 0.1 s per job beyond the first hundred)."""
    if timeout is None:
        timeout = RENDER_TIMEOUT + 0.1 * max(0, len(jobs) - 100)
    first = display_path(jobs[0].source_name or jobs[0].template) if jobs else "templates"
    requests = []
    for job in jobs:
        label = display_path(job.source_name or job.template)
        if not isinstance(job.values, Mapping) or not all(isinstance(k, str) for k in job.values):
            raise TemplateError(f"values for {label} must be a mapping with string keys")
        requests.append(
            {
                "path": os.fspath(job.template),
                "values": dict(job.values),
                "source_name": job.source_name or os.fspath(job.template),
            }
        )
    try:
        request = pickle.dumps(
            {"jobs": requests, "memory": memory, "cpu_seconds": math.ceil(timeout) + 1}
        )
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
        raise TemplateError(
            f"values for {first} cannot be passed to the renderer: {_one_line(exc)}"
        ) from None
    try:
        result = subprocess.run(
            [sys.executable, "-P", "-c", _WORKER, _PACKAGE_ROOT],
            input=request,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TemplateError(
            f"{first}: rendering took longer than {timeout:g} s (a loop without end?)"
        ) from None
    except OSError as exc:
        raise TemplateError(f"{first}: cannot start the renderer: {exc.strerror or exc}") from None
    try:
        reply = json.loads(result.stdout)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and isinstance(reply.get("texts"), list):
        return [str(text) for text in reply["texts"]]
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        raise TemplateError(_one_line(reply["error"]))
    raise TemplateError(f"{first}: {_worker_failure(result, timeout, memory)}")


def _worker_failure(result: subprocess.CompletedProcess[bytes], timeout: float, memory: int) -> str:
    if result.returncode == -signal.SIGXCPU:
        return f"rendering used more than {timeout:g} s of CPU time (a loop without end?)"
    if result.returncode == -signal.SIGKILL:
        return f"rendering was killed (more than {memory // MiB} MiB of memory?)"
    lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
    last = _one_line(lines[-1]) if lines else ""
    if "MemoryError" in last:
        return f"rendering needed more than {memory // MiB} MiB of memory"
    if result.returncode < 0:
        return f"the renderer died of signal {signal.Signals(-result.returncode).name}"
    return f"the renderer failed (exit code {result.returncode}){': ' + last if last else ''}"


def _limit_resources(memory: int, cpu_seconds: int) -> None:
    for limit, soft, hard in (
        (resource.RLIMIT_AS, memory, memory),
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        _current_soft, current_hard = resource.getrlimit(limit)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(limit, (soft, hard))


def _serve() -> None:
    """The child side of render_bounded: a pickled request on stdin, JSON on stdout."""
    request = pickle.load(sys.stdin.buffer)
    _limit_resources(request["memory"], request["cpu_seconds"])
    texts: list[str] = []
    job: dict[str, Any] = {}
    reply: dict[str, Any]
    try:
        for job in request["jobs"]:
            texts.append(render(job["path"], job["values"], job["source_name"]))
        reply = {"texts": texts}
    except FleetpyError as exc:
        reply = {"error": str(exc)}
    except MemoryError:
        reply = {"error": f"{display_path(job.get('source_name', 'template'))}: out of memory"}
    sys.stdout.buffer.write(json.dumps(reply).encode("ascii"))
    sys.stdout.buffer.flush()


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def load_values(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping of template values; an empty file is {}."""
    path_str = os.fspath(path)
    try:
        text = read_text_file(path_str, limit=MAX_VALUES_BYTES, what="values file")
    except FileError as exc:
        raise TemplateError(str(exc)) from None
    return load_yaml_mapping(text, display_path(path_str), error=TemplateError)


_INT = re.compile(r"0|-?[1-9][0-9]*")


def _set_scalar(text: str) -> Any:
    # Only the unambiguous cases are converted: ports and counts as ints,
    # true/false as booleans. Anything else (007, 1.5, yes, null, [a]) stays
    # the exact string typed, so image tags and versions are never mangled.
    if text in ("true", "false"):
        return text == "true"
    if _INT.fullmatch(text):
        return int(text)
    return text


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Turn `--set a.b=1` items into nested dicts (later items win)."""
    result: dict[str, Any] = {}
    for whole in items:
        key, eq, raw = whole.partition("=")
        parts = key.split(".")
        # Messages quote the item: an argument can be 128 KiB long, and hold a newline.
        item = "".join(
            char if char.isprintable() else repr(char)[1:-1]
            for char in (whole if len(whole) <= 100 else whole[:100] + "...")
        )
        if not eq or not key:
            raise TemplateError(f"--set {item}: expected key=value")
        if len(parts) > MAX_DEPTH:
            raise TemplateError(
                f"--set {item}: key nested deeper than {MAX_DEPTH} levels, as for values files"
            )
        if any(not part or part != part.strip() for part in parts):
            raise TemplateError(f"--set {item}: empty or padded part in key {_short(key)}")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TemplateError(
                    f"--set {item}: {'.'.join(parts[: depth + 1])} is already set to a value"
                )
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise TemplateError(f"--set {item}: {key} is already a mapping")
        node[parts[-1]] = _set_scalar(raw)
    return result


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two value mappings (override wins; nested mappings merge)."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_values(current, value)
        else:
            merged[key] = value
    return merged
