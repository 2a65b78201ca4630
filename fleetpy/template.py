"""Jinja unit templates, their values (YAML and --set), and systemd quoting filters.

Public API:
  render(template_path, values, source_name=None) -> str
  load_values(path) -> dict
  parse_set(items) -> dict          (--set key=value, dotted keys nest)
  merge_values(base, override) -> dict
  systemd_quote(arg, specifiers=False) -> str     one argument on an Exec*= line
  exec_args(args, specifiers=False) -> str        several arguments
  systemd_value(value, specifiers=False) -> str   the value of any other Key= line
  make_environment(search_path) -> jinja2.Environment

Filters in the environment: systemd_quote, exec_args, systemd_value, systemd_key,
docker_name, docker_env, as_list; global function fail(message).

Templates are rendered with StrictUndefined, keep_trailing_newline, no
autoescape, trim_blocks and lstrip_blocks (block tags do not leave blank lines).
Every `{{ ... }}` output is checked: None and values that would span lines are
errors, so a forgotten filter cannot inject a line into a unit.
"""

from __future__ import annotations

import os
import re
from types import TracebackType
from typing import Any, Iterable, Mapping

import jinja2
import yaml

from fleetpy.errors import TemplateError

# ---------------------------------------------------------------------------
# Quoting (systemd.service(5) "COMMAND LINES", systemd.unit(5) "SPECIFIERS")
# ---------------------------------------------------------------------------

# Arguments made only of these characters need no quoting on an Exec line: no
# whitespace, quotes, backslash, '$' (environment expansion), '%' (specifier) or ';'.
_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_BARE_WITH_SPECIFIERS = re.compile(r"[A-Za-z0-9_@+=:,./%-]+")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r",
              "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
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


def _escape_char(char: str, specifiers: bool) -> str:
    if char in _C_ESCAPES:
        return _C_ESCAPES[char]
    if char == "$":
        return "$$"  # systemd expands $VAR and ${VAR}; $$ is a literal $
    if char == "%" and not specifiers:
        return "%%"
    if not char.isprintable():
        # Control and line-separator characters go in as C escapes, never raw.
        code = ord(char)
        if code < 0x80:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def systemd_quote(arg: Any, specifiers: bool = False) -> str:
    """Quote one argument for an Exec*= line so systemd passes exactly `arg`.

    systemd splits Exec lines itself (no shell): double quotes group, C escapes
    are decoded, then %-specifiers are expanded and, at exec time, $VAR/${VAR}.
    So: wrap in double quotes, backslash-escape `\\` and `"`, write control
    characters (newline!) as C escapes, `$` as `$$` and `%` as `%%`.
    `specifiers=True` keeps `%` for template-authored values such as `%m`.
    """
    text = _text(arg, "an Exec argument")
    if text and (_BARE_WITH_SPECIFIERS if specifiers else _BARE).fullmatch(text):
        return text
    return '"' + "".join(_escape_char(char, specifiers) for char in text) + '"'


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
    for char in text:
        if char != "\t" and not char.isprintable():
            raise TemplateError(f"value {text!r} contains {char!r}; a Key= line holds one line of text")
    if not text.strip(" \t"):
        raise TemplateError("empty value; Key= with nothing after it resets the key")
    if text.endswith("\\"):
        raise TemplateError(f"value {text!r} ends with a backslash, which would continue the line")
    return text if specifiers else text.replace("%", "%%")


def systemd_key(key: Any) -> str:
    text = _text(key, "a unit key")
    if not _KEY.fullmatch(text):
        raise TemplateError(f"invalid unit file key {text!r} (allowed: letters, digits, '-' and '_')")
    return text


def docker_name(name: Any) -> str:
    """Validate a name usable inside a docker container name."""
    text = _text(name, "the name")
    if not _DOCKER_NAME.fullmatch(text):
        raise TemplateError(f"invalid name {text!r} for a container (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)")
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
        raise TemplateError(f"value {value!r} would span lines; quote it with systemd_quote or systemd_value")
    return value


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def make_environment(search_path: str | os.PathLike[str]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.fspath(search_path)),
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
        systemd_key=systemd_key,
        docker_name=docker_name,
        docker_env=docker_env,
        as_list=as_list,
    )
    env.globals["fail"] = _fail
    return env


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


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def render(
    template_path: str | os.PathLike[str],
    values: Mapping[str, Any],
    source_name: str | None = None,
) -> str:
    """Render a unit template; errors are TemplateError `NAME:LINE: message`.

    `source_name` names the template in messages (default: the path as given).
    """
    path = os.fspath(template_path)
    label = source_name or path
    try:
        with open(path, "rb") as handle:
            handle.read().decode("utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"cannot read template {path}: not UTF-8 (offset {exc.start})") from None
    if not isinstance(values, Mapping) or not all(isinstance(key, str) for key in values):
        raise TemplateError(f"values for {label} must be a mapping with string keys")

    directory = os.path.dirname(os.path.abspath(path))
    env = make_environment(directory)
    main_file = os.path.join(directory, os.path.basename(path))
    try:
        template = env.get_template(os.path.basename(path))
        return template.render(dict(values))
    except jinja2.TemplateSyntaxError as exc:
        where = label
        if exc.filename and os.path.abspath(exc.filename) != main_file:
            where = os.path.relpath(exc.filename, directory)
        raise TemplateError(f"{where}:{exc.lineno}: {_one_line(exc.message or exc)}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"{label}: included template {exc.name} not found") from None
    except (jinja2.TemplateError, TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
        # Included templates are named relative to the main template's directory.
        files = {main_file: label}
        files.update(
            (os.path.join(directory, name), name)
            for name in env.list_templates()
            if os.path.join(directory, name) != main_file
        )
        location = _template_location(exc.__traceback__, files)
        message = _one_line(exc if str(exc) else type(exc).__name__)
        if location is None:
            raise TemplateError(f"{label}: {message}") from None
        raise TemplateError(f"{location[0]}:{location[1]}: {message}") from None


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable keys are reported by the base constructor
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_values(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping of template values; an empty file is {}."""
    path_str = os.fspath(path)
    try:
        with open(path_str, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise TemplateError(f"cannot read values file {path_str}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"cannot read values file {path_str}: not UTF-8 (offset {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = _one_line(exc.problem or exc.context or "invalid YAML")
        line = f":{mark.line + 1}" if mark is not None else ""
        raise TemplateError(f"{path_str}{line}: {message}") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path_str}: {_one_line(str(exc))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TemplateError(f"{path_str}: the top level must be a mapping of names to values, not {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise TemplateError(f"{path_str}: top-level key {key!r} is not a string")
    return data


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
    for item in items:
        key, eq, raw = item.partition("=")
        parts = key.split(".")
        if not eq or not key:
            raise TemplateError(f"--set {item}: expected key=value")
        if any(not part or part != part.strip() for part in parts):
            raise TemplateError(f"--set {item}: empty or padded part in key {key!r}")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TemplateError(f"--set {item}: {'.'.join(parts[: depth + 1])} is already set to a value")
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
