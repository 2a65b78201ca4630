"""Unit files: names, systemd syntax, content hash, and [X-Fleet] options.

INTERFACE CONTRACT (other modules rely on these names; keep them):
  parse_name(name) -> UnitName
  parse_unit(text, source="<unit>") -> UnitFile
  UnitFile.serialize() -> str, UnitFile.hash -> str (hex), UnitFile.values(section, key) -> list[str]
  fleet_options(unit: UnitFile, name: str) -> FleetOptions
  FleetOptions (below) and FleetOptions.matches_metadata(metadata)

Also: UnitName (.name, .is_template, .is_instance, .template), UnitFile.sections(),
UnitFile.options(section) (the meaning), UnitFile.assignments(section) (as written),
UnitFile.from_dict(...), UnitFile.from_options(...) (fleet's API options),
value_meaning(value), load_unit_file(path), FLEET_OPTIONS (the known [X-Fleet] keys),
LEGACY_FLEET_OPTIONS (fleet's older names of them).

A unit is kept as fleet kept it (go-systemd's parser): assignments in file order, empty
ones too, values continued over lines as written. Its canonical text, and so its hash,
is that: a unit without continuation lines, empty assignments or keys repeated apart
has the text (and hash) it had before fleetpy kept these.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from fleetpy.errors import (
    FileError,
    FleetOptionError,
    FleetpyError,
    UnitFileError,
    UnitNameError,
    UnitParseError,
)
from fleetpy.files import MAX_UNIT_FILE_BYTES, display_path, read_text_file

from .quoting import WordsError, split_words
from .reschedule import OPTIONS as RESCHEDULE_OPTIONS
from .reschedule import ReschedulePolicy, reschedule_policy

# ---------------------------------------------------------------------------
# Unit names
# ---------------------------------------------------------------------------

UNIT_SUFFIXES: frozenset[str] = frozenset(
    {
        "automount",
        "busname",
        "device",
        "mount",
        "path",
        "scope",
        "service",
        "slice",
        "snapshot",
        "socket",
        "swap",
        "target",
        "timer",
    }
)
TEMPLATE_SUFFIXES: frozenset[str] = frozenset({"path", "service", "socket", "target", "timer"})

_NAME_CHAR = re.compile(r"[a-zA-Z0-9:_.@-]")
_NAME_STEM = re.compile(r"[a-zA-Z0-9:_.@-]+")
# systemd's UNIT_NAME_MAX is 256 bytes including the terminating NUL.
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class UnitName:
    """A validated unit name; build it with parse_name()."""

    prefix: str
    instance: str | None  # None: plain unit; "": template (foo@.service); else instance
    suffix: str

    @property
    def name(self) -> str:
        if self.instance is None:
            return f"{self.prefix}.{self.suffix}"
        return f"{self.prefix}@{self.instance}.{self.suffix}"

    @property
    def is_template(self) -> bool:
        return self.instance == ""

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)

    @property
    def template(self) -> str | None:
        """The template's full name (foo@.service) for a template or instance."""
        if self.instance is None:
            return None
        return f"{self.prefix}@.{self.suffix}"

    def __str__(self) -> str:
        return self.name


def template_of(name: str) -> str | None:
    """web@.service for the instance web@3.service; None otherwise. For names already
    validated (no checks: the scheduler calls this for every unit)."""
    stem, _, suffix = name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return f"{prefix}@.{suffix}" if at and instance else None


def is_template(name: str) -> bool:
    """web@.service (a template, never run itself); for names already validated."""
    _prefix, at, instance = name.rpartition(".")[0].partition("@")
    return bool(at) and not instance


def has_glob(text: str) -> bool:
    """fnmatch wildcards: how globs are told from names everywhere (CLI, Conflicts=)."""
    return any(char in text for char in "*?[")


def glob_matcher(glob: str) -> Callable[[str], bool]:
    """A test of unit names against one Conflicts= value: a glob, or an exact name."""
    if not has_glob(glob):
        return glob.__eq__
    pattern = re.compile(fnmatch.translate(glob))
    return lambda name: pattern.match(name) is not None


def parse_name(name: str) -> UnitName:
    """Split and validate `prefix.suffix` / `prefix@instance.suffix`."""
    if not isinstance(name, str) or not name:
        raise UnitNameError("invalid unit name '': the name is empty")

    def bad(reason: str) -> UnitNameError:
        return UnitNameError(f"invalid unit name {name!r}: {reason}")

    if len(name) > MAX_NAME_LENGTH:
        raise UnitNameError(
            f"invalid unit name {name[:40]!r}...: {len(name)} characters "
            f"(systemd's limit is {MAX_NAME_LENGTH})"
        )
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        raise bad("missing type suffix such as .service")
    if suffix not in UNIT_SUFFIXES:
        # The name is shown with repr(): the suffix too, if it holds a line break & co.
        shown = f".{suffix}" if suffix.isprintable() else repr(f".{suffix}")
        raise bad(
            f"unknown type suffix {shown} (expected one of {', '.join(sorted(UNIT_SUFFIXES))})"
        )
    # The first '@' splits prefix from instance, as in systemd and fleet.
    prefix, at, instance = stem.partition("@")
    if not prefix:
        raise bad("empty prefix before " + ("'@'" if at else f".{suffix}"))
    if not _NAME_STEM.fullmatch(stem):  # one match; the slow search only to explain
        char = next(c for c in stem if not _NAME_CHAR.fullmatch(c))
        raise bad(f"invalid character {char!r} (allowed: letters, digits and :_.@-)")
    if at and suffix not in TEMPLATE_SUFFIXES:
        raise bad(f".{suffix} units cannot be templates or instances")
    return UnitName(prefix=prefix, instance=instance if at else None, suffix=suffix)


# ---------------------------------------------------------------------------
# Unit files
# ---------------------------------------------------------------------------

Values = tuple[str, ...]
Entry = tuple[str, Values]  # (key, its values in order): what a section means, resets applied
Assignment = tuple[str, str]  # (key, value as written: "" resets; may span continuation lines)
Section = tuple[str, tuple[Assignment, ...]]  # (section name, its assignments in file order)

# systemd's WHITESPACE for strstrip(); other Unicode spaces are kept, as systemd does.
_WS = " \t\n\r"
_COMMENT = ("#", ";")
# read_line() ends lines at \n, \r\n and \r.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Printable, no brackets/quotes/backslash (systemd's string_is_safe plus brackets), and
# no lone surrogate (it has no UTF-8 form).
_SECTION = re.compile(r"[^\x00-\x1f\x7f\[\]\"'\\\ud800-\udfff]+")
# Characters no value may carry: NUL, carriage returns, lone surrogates. A line feed only
# after a continuation backslash (see _normalized_value).
_UNSAFE_VALUE_CHAR = re.compile(r"[\r\x00\ud800-\udfff]")


def _ends_with_continuation(text: str) -> bool:
    # systemd pairs each backslash with the next character, so a line continues
    # iff it ends in an odd run of backslashes.
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _is_comment(line: str) -> bool:
    return line.lstrip(_WS).startswith(_COMMENT)


def _section_problem(name: str) -> str | None:
    if not _SECTION.fullmatch(name):
        return "empty section name" if not name else f"bad characters in section name {name!r}"
    if name != name.strip():
        return f"section name {name!r} has leading or trailing whitespace"
    return None


def _key_problem(key: str) -> str | None:
    if not key:
        return "missing key before '='"
    if not _KEY.fullmatch(key):
        return f"invalid key {key!r} (allowed: letters, digits, '-' and '_')"
    return None


def _normalized_value(value: str) -> tuple[str, str | None]:
    """(the value as stored, why it cannot be stored): a value as fleet's parser
    (go-systemd's) reads it from a file and fleetctl sends it. Blanks around it go;
    continuation lines stay as written (backslash, line feed, the next line) so that
    fleetctl gets back what it sent; comment lines inside a continuation go (systemd
    skips them); a backslash left dangling (a continuation ended by a blank line or the
    end of the file) is followed by a line feed, so the stored line is followed by a
    blank one and continues nothing. A line feed anywhere else would start a new line
    of the unit: refused."""
    bad = _UNSAFE_VALUE_CHAR.search(value)
    if bad:
        return value, f"value contains {bad.group()!r}"
    stripped = value.strip(_WS)
    if "\n" not in stripped and not stripped.endswith("\\"):
        return stripped, None  # the usual one-line value
    lines = stripped.split("\n")
    kept = lines[:1]
    for line in lines[1:]:
        if not _ends_with_continuation(kept[-1]):
            return value, "line break in the value that does not follow a continuation backslash"
        if _is_comment(line):
            continue
        if not line.strip(_WS):
            return value, "empty continuation line (it would end the value)"
        kept.append(line)
    if _ends_with_continuation(kept[-1]):
        kept.append("")
    return "\n".join(kept), None


def _value_problem(value: str) -> str | None:
    """Why `value` cannot be written after `Key=` so that it reads back the same."""
    normalized, problem = _normalized_value(value)
    if problem or normalized == value:
        return problem
    if value != value.strip(_WS):
        return "value has leading or trailing whitespace"
    if _ends_with_continuation(value):
        return "value ends with a backslash (would continue the line)"
    return "value holds a comment line inside a continuation (systemd skips it)"


def value_meaning(value: str) -> str:
    """A stored value as systemd reads it: each continuation backslash and its line feed
    become a space (the next line is appended as is), blanks around the result go."""
    if "\n" not in value:
        return value
    lines = value.split("\n")
    return ("".join(line[:-1] + " " for line in lines[:-1]) + lines[-1]).strip(_WS)


@dataclass(frozen=True)
class UnitFile:
    """A parsed unit: sections in first-appearance order (a repeated section merges into
    the first, as in systemd and fleet), each with its assignments in file order, as
    written: repeated and interleaved keys stay where they were, `Key=` (an empty
    assignment, which resets the key) stays, and a value may span continuation lines.
    That is what fleet kept of a unit file, so fleetctl gets back what it sent.

    options()/values() give the meaning: each key's values with resets applied and
    continuation lines joined. Immutable and hashable; every instance serializes to
    text that parses back to an equal instance."""

    contents: tuple[Section, ...] = ()

    def __post_init__(self) -> None:
        seen_sections: set[str] = set()
        for name, assignments in self.contents:
            problem = _section_problem(name)
            if problem:
                raise UnitParseError(f"cannot build unit: {problem}")
            if name in seen_sections:
                raise UnitParseError(f"cannot build unit: section [{name}] appears twice")
            seen_sections.add(name)
            for key, value in assignments:
                problem = _key_problem(key) or _value_problem(value)
                if problem:
                    raise UnitParseError(f"cannot build unit: [{name}] {key}=: {problem}")

    @classmethod
    def from_dict(cls, sections: Mapping[str, Mapping[str, Sequence[str]]]) -> UnitFile:
        """Build from {section: {key: [values]}}, one assignment per value."""
        return cls(
            tuple(
                (name, tuple((key, value) for key, values in entries.items() for value in values))
                for name, entries in sections.items()
            )
        )

    @classmethod
    def from_options(cls, options: Iterable[tuple[str, str, str]]) -> UnitFile:
        """Build from fleet's unit options, (section, key, value) in order, as fleet kept
        them: sections merged in first-seen order, each value as its parser reads it back
        (blanks around it dropped; see _normalized_value)."""
        sections: dict[str, list[Assignment]] = {}
        for section, key, value in options:
            problem = _section_problem(section) or _key_problem(key)
            if problem:
                raise UnitParseError(f"cannot build unit: {problem}")
            normalized, problem = _normalized_value(value)
            if problem:
                raise UnitParseError(f"cannot build unit: [{section}] {key}=: {problem}")
            sections.setdefault(section, []).append((key, normalized))
        return cls(tuple((name, tuple(assignments)) for name, assignments in sections.items()))

    def sections(self) -> list[str]:
        return [name for name, _ in self.contents]

    def assignments(self, section: str) -> tuple[Assignment, ...]:
        """(key, value as written) of one section in file order; () if absent."""
        for name, assignments in self.contents:
            if name == section:
                return assignments
        return ()

    @cached_property
    def _entries(self) -> dict[str, tuple[Entry, ...]]:
        meaning: dict[str, tuple[Entry, ...]] = {}
        for name, assignments in self.contents:
            keys: dict[str, list[str]] = {}
            for key, value in assignments:
                value = value_meaning(value)
                if value:
                    keys.setdefault(key, []).append(value)
                else:
                    keys[key] = []  # an empty assignment resets the list (keeps its position)
            meaning[name] = tuple((key, tuple(values)) for key, values in keys.items() if values)
        return meaning

    def options(self, section: str) -> tuple[Entry, ...]:
        """(key, values) pairs of one section as systemd reads them: keys in
        first-appearance order, resets applied, continuation lines joined; () if absent."""
        return self._entries.get(section, ())

    def values(self, section: str, key: str) -> list[str]:
        for entry_key, values in self.options(section):
            if entry_key == key:
                return list(values)
        return []

    def serialize(self) -> str:
        """Canonical text: `[Section]` then `Key=Value` lines, a blank line between sections."""
        blocks = []
        for name, assignments in self.contents:
            lines = [f"[{name}]"]
            lines.extend(f"{key}={value}" for key, value in assignments)
            blocks.append("\n".join(lines) + "\n")
        return "\n".join(blocks)

    @cached_property
    def hash(self) -> str:
        """sha256 hex of serialize(): the same text (up to comments, blank lines and
        blanks around keys and values) gives the same hash."""
        return content_hash(self.serialize())


def content_hash(canonical_text: str) -> str:
    """The content hash of a unit's canonical text: how fleetpy identifies contents."""
    return hashlib.sha256(canonical_text.encode("utf-8")).hexdigest()


def parse_unit(text: str, source: str = "<unit>") -> UnitFile:
    """Parse systemd unit syntax as systemd's config_parse() reads it, keeping what fleet
    kept (see UnitFile): assignments in order, continuation lines as written.

    Differences from systemd, all towards strictness: what systemd would warn
    about and skip (assignment before a section, missing '=', bad key) is an
    error here. Error line numbers point at the first line of a continued line.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    sections: dict[str, list[Assignment]] = {}
    current: list[Assignment] | None = None

    def fail(lineno: int, message: str) -> UnitParseError:
        return UnitParseError(f"{source}:{lineno}: {message}")

    def handle(lines: list[str], lineno: int) -> None:
        """One logical line: its physical lines, comment lines left out."""
        nonlocal current
        head, eq, first_value = lines[0].partition("=")
        if not eq or head.lstrip(_WS).startswith("["):
            # A header, or '=' only on a continuation line: read joined, as systemd does.
            last = lines[-1][:-1] if _ends_with_continuation(lines[-1]) else lines[-1]
            joined = value_meaning("\n".join([*lines[:-1], last])).strip(_WS)
            if not joined:
                return
            if joined.startswith("["):
                if not joined.endswith("]") or len(joined) < 2:
                    raise fail(lineno, f"invalid section header {joined!r} (expected [Name])")
                name = joined[1:-1]
                problem = _section_problem(name)
                if problem:
                    raise fail(lineno, f"invalid section header {joined!r}: {problem}")
                # A repeated section merges into the first, as in systemd.
                current = sections.setdefault(name, [])
                return
            head, eq, first_value = joined.partition("=")
            if not eq:
                raise fail(lineno, "line is neither a section header nor Key=Value")
            lines = [first_value]
        if current is None:
            raise fail(lineno, "Key=Value before the first [Section] header")
        key = head.strip(_WS)
        problem = _key_problem(key)
        if problem:
            raise fail(lineno, problem)
        value, problem = _normalized_value("\n".join([first_value, *lines[1:]]))
        if problem:
            raise fail(lineno, problem)
        current.append((key, value))

    pending: list[str] = []
    start = 0
    for lineno, raw in enumerate(_LINE_BREAK.split(text), start=1):
        if "\x00" in raw:
            raise fail(lineno, "NUL character in unit file")
        # Comment lines are skipped even inside a continuation (systemd >= 237).
        if _is_comment(raw):
            continue
        if not raw.strip(_WS):
            if pending:  # a blank line ends a continuation
                handle(pending, start)
                pending = []
            continue
        if not pending:
            start = lineno
        pending.append(raw)
        if not _ends_with_continuation(raw):
            handle(pending, start)
            pending = []
    if pending:
        handle(pending, start)

    return UnitFile(tuple((name, tuple(assignments)) for name, assignments in sections.items()))


def load_unit_file(path: str | os.PathLike[str]) -> tuple[str, UnitFile]:
    """Read a unit file; its name is the file's basename, validated."""
    path_str = os.fspath(path)
    name = os.path.basename(path_str)
    # A regular file of bounded size: a FIFO would hang, /dev/zero would never end.
    # Read before judging the name, so a missing path is reported as missing.
    try:
        text = read_text_file(path_str, limit=MAX_UNIT_FILE_BYTES, what="unit file")
    except FileError as exc:
        raise UnitFileError(str(exc)) from None
    parse_name(name)
    return name, parse_unit(text, source=display_path(path_str))


# ---------------------------------------------------------------------------
# [X-Fleet] options
# ---------------------------------------------------------------------------

FLEET_SECTION = "X-Fleet"
FLEET_OPTIONS: tuple[str, ...] = (
    "MachineID",
    "MachineOf",
    "MachineMetadata",
    "Conflicts",
    "Global",
    "Replaces",
    "Spread",
    "MaxPerMachine",
    "Requires",
    "BindsTo",
    *RESCHEDULE_OPTIONS,
)
# fleet's older names, still in its docs of v1.0 and in real unit files: read as the
# current key, with a note. fleet read a boot id as a machine id (it never matched a
# machine, so such a unit never ran): so does fleetpy, rather than drop the constraint.
LEGACY_FLEET_OPTIONS: Mapping[str, str] = {
    "X-ConditionMachineID": "MachineID",
    "X-ConditionMachineBootID": "MachineID",
    "X-ConditionMachineOf": "MachineOf",
    "X-ConditionMachineMetadata": "MachineMetadata",
    "X-Conflicts": "Conflicts",
}
MAX_PER_MACHINE_LIMIT = 100_000
_SINGLE_VALUED = ("MachineID", "Global", "Spread", "MaxPerMachine", *RESCHEDULE_OPTIONS)
_GLOBAL_COMPANIONS = ("MachineMetadata", "Conflicts")
_BOOLEANS = {
    "true": True,
    "yes": True,
    "1": True,
    "on": True,
    "false": False,
    "no": False,
    "0": False,
    "off": False,
}


@dataclass(frozen=True)
class FleetOptions:
    """The [X-Fleet] section of one unit, validated, specifiers expanded."""

    machine_id: str | None = None
    machine_of: tuple[str, ...] = ()  # every one of these units' machine (fleet's peers)
    # key -> allowed values: different keys AND, values of one key OR.
    machine_metadata: tuple[tuple[str, tuple[str, ...]], ...] = ()
    conflicts: tuple[str, ...] = ()  # fnmatch globs of unit names
    is_global: bool = False
    replaces: tuple[str, ...] = ()
    spread: str | None = None  # metadata key to spread template instances over
    max_per_machine: int | None = None  # per template, across its instances
    reschedule: ReschedulePolicy | None = None  # RescheduleOnFailure= and its companions
    # Units that must be active somewhere before this one starts (Requires= and BindsTo=,
    # fleetpy.dependencies); `binds_to`, those whose stop also stops it until they return.
    requires: tuple[str, ...] = ()
    binds_to: tuple[str, ...] = ()
    # What was read differently from how it was written (legacy names, a self-conflict):
    # for the user's eyes, not part of the options' meaning.
    notes: tuple[str, ...] = field(default=(), compare=False)

    def matches_metadata(self, metadata: Mapping[str, str]) -> bool:
        return all(metadata.get(key) in values for key, values in self.machine_metadata)


def conflicts(name: str, options: FleetOptions, other: str, other_options: FleetOptions) -> bool:
    """fleet's rule for two units on one machine: either one's Conflicts= names the other.
    The engine's placement and the agents' choice of global units both use it."""
    if name == other:
        return False
    return any(glob_matcher(glob)(other) for glob in options.conflicts) or any(
        glob_matcher(glob)(name) for glob in other_options.conflicts
    )


def _expand_specifiers(value: str, unit: UnitName, key: str) -> str:
    """Expand %n %N %p %i %% as fleet does in [X-Fleet] values."""
    stem = unit.name[: -len(unit.suffix) - 1]
    table = {
        "n": unit.name,
        # fleet's %N is the name without its type suffix (foo@bar); names here
        # cannot hold systemd escapes, so there is nothing to unescape.
        "N": stem,
        "p": unit.prefix,
        "i": unit.instance or "",
        "%": "%",
    }
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        if i + 1 == len(value):
            raise FleetOptionError(
                f"lone '%' at the end of [X-Fleet] {key}= in {unit.name} (write %% for a literal %)"
            )
        spec = value[i + 1]
        if spec not in table:
            raise FleetOptionError(
                f"unknown specifier %{spec} in [X-Fleet] {key}= of {unit.name} (known: %n %N %p %i %%)"
            )
        out.append(table[spec])
        i += 2
    return "".join(out)


def _split_words(value: str, key: str, unit: str) -> list[str]:
    """Split on whitespace outside quotes; quotes ("a b", 'x') are removed."""
    try:
        return split_words(value, escapes=False, whitespace=_WS)
    except WordsError as exc:
        raise FleetOptionError(f"{exc} in [X-Fleet] {key}= of {unit}") from None


def did_you_mean(key: str, known: Sequence[str]) -> str:
    """The end of an unknown-key message: the closest known key, or the list of them."""
    lowered = {option.lower(): option for option in known}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]}=?" if close else f" (known: {', '.join(known)})"


def _suggest(key: str) -> str:
    return did_you_mean(key, (*FLEET_OPTIONS, *LEGACY_FLEET_OPTIONS))


# Sections systemd reads in unit files (systemd.unit(5) and the per-type pages); other
# sections must be X- extensions, which systemd ignores.
KNOWN_SECTIONS: tuple[str, ...] = (
    "Unit",
    "Install",
    "Service",
    "Socket",
    "Mount",
    "Automount",
    "Swap",
    "Path",
    "Timer",
    "Slice",
    "Scope",
)
# Read by fleetpy itself (fleetpy.unitfile.container), which expands it before systemd sees the unit.
CONTAINER_SECTION = "Container"
# The [Container] section as kept in the expanded unit: systemd ignores X- sections.
EXPANDED_CONTAINER_SECTION = "X-Container"


def check_sections(unit: UnitFile, name: str) -> None:
    """Refuse misspelled sections: systemd ignores an unknown one with a warning, so
    [X-Flet] would silently drop every constraint in it, and [Servce] the service."""
    for section in unit.sections():
        if section in KNOWN_SECTIONS or section in (
            FLEET_SECTION,
            CONTAINER_SECTION,
            EXPANDED_CONTAINER_SECTION,
        ):
            continue
        known = (*KNOWN_SECTIONS, FLEET_SECTION, CONTAINER_SECTION)
        candidates = {option.lower(): option for option in known}
        # An X- name is a legal extension unless it is nearly [X-Fleet] ([X-Flat] is
        # fine); any other unknown name is refused, so its suggestion may be looser.
        cutoff = 0.8 if section.startswith("X-") else 0.6
        close = difflib.get_close_matches(section.lower(), list(candidates), n=1, cutoff=cutoff)
        if close:
            raise FleetOptionError(
                f"unknown section [{section}] in {name}; did you mean [{candidates[close[0]]}]?"
            )
        if not section.startswith("X-"):
            raise FleetOptionError(
                f"unknown section [{section}] in {name} (systemd reads "
                f"{', '.join(f'[{s}]' for s in KNOWN_SECTIONS)}, [{FLEET_SECTION}], "
                f"[{CONTAINER_SECTION}]; "
                "extensions start with X-)"
            )


def checked_as(name: str) -> str:
    """The name a unit's [X-Fleet] options are checked under: a template's as one of its
    instances would see them (MachineOf=db@%i.service), since a template never runs."""
    parsed = parse_name(name)
    return f"{parsed.prefix}@instance.{parsed.suffix}" if parsed.is_template else name


def fleet_notes(unit: UnitFile, name: str) -> tuple[str, ...]:
    """fleet_options(unit, name).notes for any unit, a template too; () if invalid."""
    check_name = checked_as(name)
    try:
        notes = fleet_options(unit, check_name).notes
    except FleetpyError:
        return ()
    return tuple(note.replace(check_name, name) for note in notes)


def fleet_options(unit: UnitFile, name: str) -> FleetOptions:
    """Validate and interpret the [X-Fleet] section of unit `name` (and refuse
    misspelled sections, which would hide it)."""
    uname = parse_name(name)
    check_sections(unit, name)
    notes: list[str] = []
    written: dict[str, list[list[str]]] = {}  # key as written -> words of each value
    for key, values in unit.options(FLEET_SECTION):
        current = LEGACY_FLEET_OPTIONS.get(key, key)
        if current not in FLEET_OPTIONS:
            raise FleetOptionError(f"unknown [X-Fleet] option {key}= in {name}{_suggest(key)}")
        if current in _SINGLE_VALUED and len(values) > 1:
            raise FleetOptionError(
                f"[X-Fleet] {key}= is given {len(values)} times in {name}; it takes one value"
            )
        if key == "X-ConditionMachineBootID":
            notes.append(
                f"[X-Fleet] {key}= in {name} is read as MachineID=, as fleet read it: the "
                "unit runs only on a machine whose machine id is that value"
            )
        elif current != key:
            notes.append(f"[X-Fleet] {key}= in {name} is fleet's old name of {current}=")
        written[key] = []
        for value in values:
            words = _split_words(_expand_specifiers(value, uname, key), key, name)
            if not words or not all(words):
                raise FleetOptionError(
                    f"empty [X-Fleet] {key}= in {name} (after specifier expansion)"
                )
            written[key].append(words)
    raw: dict[str, list[list[str]]] = {}  # current key -> words of each value, in order
    for key, words_list in written.items():
        raw.setdefault(LEGACY_FLEET_OPTIONS.get(key, key), []).extend(words_list)
    if len({tuple(words) for words in raw.get("MachineID", ())}) > 1:
        keys = [key for key in written if LEGACY_FLEET_OPTIONS.get(key, key) == "MachineID"]
        raise FleetOptionError(
            f"[X-Fleet] {' and '.join(f'{key}=' for key in keys)} in {name} name different machines"
        )

    def single(key: str) -> str | None:
        if key not in raw:
            return None
        words = raw[key][0]
        if len(words) != 1:
            raise FleetOptionError(
                f"[X-Fleet] {key}= in {name} takes one value, got {len(words)}: {' '.join(words)}"
            )
        return words[0]

    def all_words(key: str) -> list[str]:
        return [word for words in raw.get(key, []) for word in words]

    def check_unit_names(key: str, names: list[str]) -> None:
        for word in names:
            try:
                target = parse_name(word)
            except UnitNameError as exc:
                raise FleetOptionError(f"[X-Fleet] {key}= in {name}: {exc}") from None
            if target.is_template:
                raise FleetOptionError(
                    f"[X-Fleet] {key}={word} in {name} names a template, which never runs"
                )
            if word == name:
                raise FleetOptionError(f"[X-Fleet] {key}={word} in {name} names the unit itself")

    # Combinations first: they explain the problem better than a bad single value.
    global_value = single("Global")
    if global_value is not None and global_value.lower() not in _BOOLEANS:
        raise FleetOptionError(
            f"invalid [X-Fleet] Global={global_value} in {name} (expected true/false/yes/no/1/0/on/off)"
        )
    is_global = global_value is not None and _BOOLEANS[global_value.lower()]
    if is_global:
        others = [key for key in raw if key not in _GLOBAL_COMPANIONS and key != "Global"]
        if others:
            raise FleetOptionError(
                f"[X-Fleet] Global=true in {name} cannot be combined with {others[0]}= "
                "(only MachineMetadata= and Conflicts= may accompany it)"
            )
    if "Replaces" in raw and "Conflicts" in raw:
        raise FleetOptionError(f"[X-Fleet] Replaces= and Conflicts= cannot be combined in {name}")
    if "MachineID" in raw and "MachineOf" in raw:
        raise FleetOptionError(f"[X-Fleet] MachineID= and MachineOf= cannot be combined in {name}")

    machine_id = single("MachineID")
    machine_of = all_words("MachineOf")
    check_unit_names("MachineOf", machine_of)

    metadata: dict[str, set[str]] = {}
    for item in all_words("MachineMetadata"):
        meta_key, eq, meta_value = item.partition("=")
        if not eq or not meta_key or not meta_value:
            raise FleetOptionError(
                f"malformed [X-Fleet] MachineMetadata item {item!r} in {name} (expected key=value)"
            )
        metadata.setdefault(meta_key, set()).add(meta_value)

    conflicts = []
    for glob in all_words("Conflicts"):
        # A unit never conflicts with itself: fleet skipped its own name, and a wildcard
        # matching it (web@*.service in web@.service) is the usual way to keep instances
        # apart. Its own name spelled out (Conflicts=%n, a copied file) is noted.
        if glob == name:
            notes.append(f"[X-Fleet] Conflicts={glob} in {name} names the unit itself: ignored")
        else:
            conflicts.append(glob)

    replaces = all_words("Replaces")
    check_unit_names("Replaces", replaces)
    binds_to = all_words("BindsTo")
    check_unit_names("BindsTo", binds_to)
    requires = all_words("Requires")
    check_unit_names("Requires", requires)

    spread = single("Spread")
    if spread is not None and "=" in spread:
        raise FleetOptionError(
            f"[X-Fleet] Spread={spread} in {name} must be a metadata key, not key=value"
        )

    max_text = single("MaxPerMachine")
    max_per_machine: int | None = None
    if max_text is not None:
        # Length first: int() of thousands of digits raises (or takes long).
        if (
            not re.fullmatch(r"[0-9]{1,7}", max_text)
            or not 1 <= int(max_text) <= MAX_PER_MACHINE_LIMIT
        ):
            shown = max_text if len(max_text) <= 20 else max_text[:20] + "..."
            raise FleetOptionError(
                f"invalid [X-Fleet] MaxPerMachine={shown} in {name} (expected an integer "
                f"from 1 to {MAX_PER_MACHINE_LIMIT})"
            )
        max_per_machine = int(max_text)

    return FleetOptions(
        machine_id=machine_id,
        machine_of=tuple(dict.fromkeys(machine_of)),
        machine_metadata=tuple(
            (key, tuple(sorted(vals))) for key, vals in sorted(metadata.items())
        ),
        conflicts=tuple(dict.fromkeys(conflicts)),
        is_global=is_global,
        replaces=tuple(dict.fromkeys(replaces)),
        spread=spread,
        max_per_machine=max_per_machine,
        reschedule=reschedule_policy(single, name),
        requires=tuple(dict.fromkeys(requires + binds_to)),
        binds_to=tuple(dict.fromkeys(binds_to)),
        notes=tuple(dict.fromkeys(notes)),
    )
