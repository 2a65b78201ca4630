"""Bounded YAML loading: SafeLoader with limits, merge keys and one-line errors.

Public API:
  load_yaml(text, source, *, error) -> Any
  load_yaml_mapping(text, source, *, error) -> dict[str, Any]   top level: names to values

What is accepted is PyYAML's SafeLoader (YAML 1.1 scalars, no Python tags), plus:

- merge keys (`<<: *base`, `<<: [*a, *b]`) with YAML's semantics: explicit keys
  override merged ones, earlier sources in a list override later ones;
- duplicate keys in one mapping are an error (PyYAML keeps the last silently);
- aliases may not refer to the node that contains them (no recursive values).

Limits, checked on the parser's event stream before any node is composed
(PyYAML's composer and constructor recurse, so a deep document would otherwise
end in RecursionError, and aliases are expanded by whoever walks the values):

  MAX_DEPTH = 64         nested sequences/mappings
  MAX_NODES = 100_000    nodes with every alias expanded (a "billion laughs"
                         document is a few lines long)

Every problem becomes one line, `SOURCE:LINE: message`, raised as the caller's
error type (TemplateError for template values, ConfigError for configuration).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    Event,
    ScalarEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from fleetpy.errors import FleetpyError

MAX_DEPTH = 64
MAX_NODES = 100_000

_TAG_PREFIX = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG_PREFIX + "merge"
_STR_TAG = _TAG_PREFIX + "str"
_VALUE_TAG = _TAG_PREFIX + "value"


class _Limit(Exception):
    """A limit exceeded at a line (1-based); turned into the caller's error type."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _short(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _tag(tag: str) -> str:
    return "!!" + tag[len(_TAG_PREFIX) :] if tag.startswith(_TAG_PREFIX) else tag


def _checked_events(text: str, max_depth: int, max_nodes: int) -> list[Event]:
    """All parser events, refusing too deep, too big once expanded, or recursive."""
    events: list[Event] = []
    sizes: dict[str, int] = {}  # anchor -> its node count with aliases expanded
    frames: list[list[Any]] = []  # open collections: [anchor, node count of children]
    total = 0
    aliased = False
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        events.append(event)
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, DocumentStartEvent):
            sizes.clear()  # anchors do not cross documents
            continue
        if isinstance(event, AliasEvent):
            if any(frame[0] == event.anchor for frame in frames):
                raise _Limit(
                    line,
                    f"alias *{event.anchor} refers to a node that contains it "
                    "(recursive values are not supported)",
                )
            # An undefined alias is the composer's error, reported after this pass.
            aliased = True
            added = sizes.get(event.anchor, 1) if event.anchor is not None else 1
        elif isinstance(event, (ScalarEvent, CollectionStartEvent)):
            added = 1
        elif isinstance(event, CollectionEndEvent):
            anchor, children = frames.pop()
            if anchor is not None:
                sizes[anchor] = children + 1
            if frames:
                frames[-1][1] += children
            continue
        else:
            continue
        total += added
        if total > max_nodes:
            if aliased:
                raise _Limit(
                    line, f"more than {max_nodes} values once aliases are expanded (an alias bomb?)"
                )
            # Without aliases, "alias bomb" would send the user looking for the wrong thing.
            raise _Limit(line, f"more than {max_nodes} values (keys count too), fleetpy's limit")
        if frames:
            frames[-1][1] += added
        if isinstance(event, ScalarEvent) and event.anchor is not None:
            sizes[event.anchor] = 1
        elif isinstance(event, CollectionStartEvent):
            if len(frames) >= max_depth:
                raise _Limit(line, f"nested deeper than {max_depth} levels")
            frames.append([event.anchor, 0])
    return events


class _Replay:
    """The parser half of a loader, replaying events that were already checked."""

    def __init__(self, events: list[Event]) -> None:
        self._events = events
        self._next = 0

    def check_event(self, *choices: type[Event]) -> bool:
        if self._next >= len(self._events):
            return False
        return not choices or isinstance(self._events[self._next], choices)

    def peek_event(self) -> Event | None:
        return self._events[self._next] if self._next < len(self._events) else None

    def get_event(self) -> Event:
        event = self._events[self._next]
        self._next += 1
        return event

    def dispose(self) -> None:
        pass


class _Loader(_Replay, Composer, SafeConstructor, Resolver):
    def __init__(self, events: list[Event]) -> None:
        _Replay.__init__(self, events)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._checked: set[int] = set()
        self._flattened: set[int] = set()

    def flatten_mapping(self, node: MappingNode) -> None:
        """Resolve merge keys: node.value becomes merged pairs, then the mapping's own.

        Later pairs win when the dict is built, so the order gives YAML's
        semantics: explicit keys beat merged ones, and in `<<: [*a, *b]` a beats b.
        (PyYAML's own version drops merged keys by string identity, which
        gets overrides wrong for one-character keys.)
        """
        # Duplicates are looked for among the keys written in the mapping,
        # before merged keys (which explicit ones may override) are added.
        self._refuse_duplicate_keys(node)
        if id(node) in self._flattened:
            return
        self._flattened.add(id(node))
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                if key_node.tag == _VALUE_TAG:
                    key_node.tag = _STR_TAG  # as SafeConstructor does: `=` is a plain key
                own.append((key_node, value_node))
                continue
            if isinstance(value_node, MappingNode):
                sources = [value_node]
            elif isinstance(value_node, SequenceNode):
                sources = list(value_node.value)
            else:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"expected a mapping or list of mappings for merging, but found {value_node.id}",
                    value_node.start_mark,
                )
            for source in reversed(sources):
                if not isinstance(source, MappingNode):
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping for merging, but found {source.id}",
                        source.start_mark,
                    )
                self.flatten_mapping(source)
                merged.extend(source.value)
        node.value = merged + own

    def _refuse_duplicate_keys(self, node: MappingNode) -> None:
        if id(node) in self._checked:
            return
        self._checked.add(id(node))
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable keys are reported by construct_mapping
            if duplicate:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # Constructors raise plain ValueError & co (`!!int abc`, a 13th month):
        # give those the node's line. The innermost node wins.
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except RecursionError:
            raise ConstructorError(
                None, None, "values nested too deeply", node.start_mark
            ) from None
        except Exception as exc:
            what = f" {_short(node.value)}" if isinstance(node, ScalarNode) else ""
            detail = str(exc)
            if "set_int_max_str_digits" in detail:  # Python's advice is no use to a user
                detail = f"more than {sys.get_int_max_str_digits()} digits"
            raise ConstructorError(
                None, None, f"invalid {_tag(node.tag)}{what}: {detail}", node.start_mark
            ) from None


def _compose(
    text: str, source: str, error: type[FleetpyError], max_depth: int, max_nodes: int
) -> tuple[_Loader, Node | None]:
    try:
        loader = _Loader(_checked_events(text, max_depth, max_nodes))
        return loader, loader.get_single_node()
    except Exception as exc:
        raise _error(exc, text, source, error) from None


def _construct(
    loader: _Loader, node: Node, text: str, source: str, error: type[FleetpyError]
) -> Any:
    try:
        # deep: construct everything now, in document order, so every mapping
        # is checked for duplicate keys before another one merges it.
        return loader.construct_object(node, deep=True)
    except Exception as exc:
        raise _error(exc, text, source, error) from None


def _error(exc: Exception, text: str, source: str, error: type[FleetpyError]) -> FleetpyError:
    if isinstance(exc, _Limit):
        return error(f"{source}:{exc.line}: {exc.message}")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = _one_line(exc.problem or exc.context or "invalid YAML")
        if exc.context and "; first occurrence" in exc.context and exc.context_mark:
            first = exc.context.split(";")[0]  # "found duplicate anchor 'x'"
            message = _one_line(f"{first} (first on line {exc.context_mark.line + 1})")
        elif exc.problem and exc.context and not exc.context.startswith("while "):
            message = _one_line(f"{exc.context}, {exc.problem}")  # "expected ..., but found ..."
        line = f":{mark.line + 1}" if mark is not None else ""
        return error(f"{source}{line}: {message}")
    if isinstance(exc, yaml.reader.ReaderError):
        row = text.count("\n", 0, max(exc.position, 0)) + 1
        character = exc.character if isinstance(exc.character, int) else -1
        return error(
            f"{source}:{row}: unacceptable character #x{character:04x}: {_one_line(exc.reason)}"
        )
    if isinstance(exc, RecursionError):
        return error(f"{source}: values nested too deeply")
    if isinstance(exc, yaml.YAMLError):
        return error(f"{source}: {_one_line(exc)}")
    return error(f"{source}: invalid YAML: {_one_line(exc) or type(exc).__name__}")


def load_yaml(
    text: str,
    source: str,
    *,
    error: type[FleetpyError],
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Any:
    """The one YAML document in `text` (None if empty); errors are `error("SOURCE:LINE: ...")`."""
    loader, node = _compose(text, source, error, max_depth, max_nodes)
    return None if node is None else _construct(loader, node, text, source, error)


def load_yaml_mapping(
    text: str,
    source: str,
    *,
    error: type[FleetpyError],
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> dict[str, Any]:
    """A document whose top level maps names (strings) to values; an empty one is {}."""
    loader, node = _compose(text, source, error, max_depth, max_nodes)
    if node is None:
        return {}
    data = _construct(loader, node, text, source, error)
    line = node.start_mark.line + 1
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(
            f"{source}:{line}: the top level must be a mapping of names to values, "
            f"not {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            where = _key_line(node) or line
            shown = _one_line(key if isinstance(key, (int, float)) else repr(key))
            raise error(f"{source}:{where}: top-level key {shown} is not a string")
    return data


def _key_line(node: Node) -> int | None:
    """The line of the first key in a mapping node that is not written as a string."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, _ in node.value:
        if not (isinstance(key_node, ScalarNode) and key_node.tag == _STR_TAG):
            return int(key_node.start_mark.line) + 1
    return None
