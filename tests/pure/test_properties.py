"""Property tests over everything that reads untrusted input: whatever it is given, it
returns or raises fleetpy's own error type (a FleetpyError, shown as one line), never
anything else; and what it accepts round-trips where a canonical form exists.

Covered: unit names, unit files (text and bytes on disk), [X-Fleet] options, YAML values,
--set items, Jinja templates with any values (in this process, plus a few through the
bounded child process that `render` really uses) and etcd records (their decoders raise
only MalformedRecord, which readers turn into "skipped KEY" warnings).

The quoting filters' round trips (systemd_quote, exec_args, systemd_value) and the unit
serializer's are in tests/pure/test_template.py and tests/pure/test_unit.py.

Deterministic: derandomize=True, so CI runs the same examples every time; bounded
max_examples, no deadline (the machine is shared).


Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/integration/test_properties.py."""

from __future__ import annotations

import json
import re
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleetpy.errors import TemplateError, UnitNameError
from fleetpy.model.codecs import MalformedRecord
from fleetpy.model.records import MachineRecord, ScheduleEntry, UnitRecord, UnitState
from fleetpy.states import DesiredState
from fleetpy.unitfile.template import load_values, parse_set, render
from fleetpy.unitfile.unit import (
    FLEET_OPTIONS,
    UnitFile,
    fleet_options,
    load_unit_file,
    parse_name,
    parse_unit,
)
from fleetpy.unitmanager import unit_file_path
from fleetpy.yamlload import load_yaml

from support.strategies import (
    SETTINGS,
    TEMPLATE_FRAGMENTS,
    own_errors_only,
    pieces,
    value_maps,
    write_template,
)

FEW = settings(SETTINGS, max_examples=40)


# --------------------------------------------------------------------------- unit names

NAME_FRAGMENTS = [
    "a", "web", "@", "1", ".", "..", "/", "service", "timer", "mount", "socket", "-", ":",
    "_", "\\", "\x00", "\n", "\x1b", "%i", "*", " ", "é", "\u202e", "@.", ".service",
]  # fmt: skip


names = pieces(NAME_FRAGMENTS, 12) | st.text(max_size=20) | st.text(min_size=250, max_size=260)


@given(names)
@example(".\n")  # the message carried the raw newline of an unknown suffix
@SETTINGS
def test_parse_name_accepts_only_names_that_are_plain_file_names(text: str) -> None:
    parsed = own_errors_only(lambda: parse_name(text))
    if parsed is None:
        try:
            unit_file_path("/run/units", text)
        except UnitNameError:
            return
        raise AssertionError(f"unit_file_path took {text!r}, which parse_name refused")
    assert parsed.name == text and 0 < len(text) <= 255
    assert "/" not in text and text not in (".", "..") and text.isprintable()
    path = unit_file_path("/run/units", text)
    assert path.parent == Path("/run/units") and path.name == text


# --------------------------------------------------------------------------- unit files

UNIT_FRAGMENTS = [
    "[Service]", "[Unit]", "[X-Fleet]", "[X-Flet]", "[", "]", "ExecStart", "Description",
    *FLEET_OPTIONS, "=", "true", "no", "a.service", "b@%i.service", "web@*.service",
    "region=us", "%n", "%N", "%p", "%i", "%%", "%", "%z", '"', "'", "\\", "\n", "\r\n",
    "\r", " ", "\t", "#", ";", "\x00", "\ufeff", "é", "\u2028", "0", "9999999999", "100001",
]  # fmt: skip


unit_texts = pieces(UNIT_FRAGMENTS, 40)


unit_names = st.sampled_from(["a.service", "b.service", "web@1.service", "web@.service", "t.timer"])


@given(unit_texts, unit_names)
@SETTINGS
def test_unit_parser_and_fleet_options_raise_only_fleetpy_errors(text: str, name: str) -> None:
    unit = own_errors_only(lambda: parse_unit(text, source=name))
    if unit is None:
        return
    # The canonical form re-parses to the same record, and is a fixed point.
    canonical = unit.serialize()
    again = parse_unit(canonical)
    assert again == unit and again.hash == unit.hash and again.serialize() == canonical
    own_errors_only(lambda: fleet_options(unit, name))


def systemd_reads(text: str) -> dict[str, dict[str, list[str]]]:
    """What systemd's config_parse() makes of a unit file, for a unit fleetpy accepted:
    comment lines skipped (inside continuations too), a continuation backslash becomes
    a space and the next line is appended as is, blanks around keys and values go,
    repeated sections merge, an empty assignment resets the key. A reference written
    apart from fleetpy.unitfile.unit, which keeps what fleet kept instead."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    logical: list[str] = []
    pending: str | None = None
    for line in re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff")):
        if line.lstrip(" \t\n\r").startswith(("#", ";")):
            continue
        line = line if pending is None else pending + line
        if (len(line) - len(line.rstrip("\\"))) % 2:
            pending = line[:-1] + " "
            continue
        pending = None
        logical.append(line)
    if pending is not None:
        logical.append(pending)
    for line in logical:
        line = line.strip(" \t\n\r")
        if not line:
            continue
        if line.startswith("["):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(" \t\n\r"), value.strip(" \t\n\r")
        if value:
            current.setdefault(key, []).append(value)
        else:
            current[key] = []
    return {
        name: {key: values for key, values in keys.items() if values}
        for name, keys in sections.items()
    }


def meaning(unit: UnitFile) -> dict[str, dict[str, list[str]]]:
    return {name: {k: list(v) for k, v in unit.options(name)} for name in unit.sections()}


@given(unit_texts)
@SETTINGS
@example("[Service]\nExecStart=/bin/sh -c \\\n  'a' \\\n# c\n  'b'\nExecStart=\nA=x \\\n\nB=1\n")
def test_the_stored_text_means_to_systemd_what_the_file_meant(text: str) -> None:
    unit = own_errors_only(lambda: parse_unit(text))
    if unit is None:
        return
    assert meaning(unit) == systemd_reads(text)
    assert systemd_reads(unit.serialize()) == systemd_reads(text)


fleet_values = st.lists(
    st.sampled_from(["a", " ", "\t", "\\", "\n", "#", ";", "=", "é", "[x]"]), max_size=12
).map("".join)


@given(
    st.lists(
        st.tuples(st.sampled_from(["Unit", "Service"]), st.sampled_from(["A", "B"]), fleet_values),
        max_size=8,
    )
)
@SETTINGS
def test_fleet_options_round_trip_through_the_stored_text(
    options: list[tuple[str, str, str]],
) -> None:
    """What the API stores for fleetctl's options gives the same options back, which a
    second PUT would store unchanged."""
    unit = own_errors_only(lambda: UnitFile.from_options(options))
    if unit is None:
        return
    stored = parse_unit(unit.serialize())
    assert stored == unit
    back = [(section, key, value) for section, items in stored.contents for key, value in items]
    assert UnitFile.from_options(back) == unit


@given(st.binary(max_size=300) | unit_texts.map(lambda t: t.encode("utf-8", "surrogatepass")))
@SETTINGS
def test_unit_files_of_any_bytes_raise_only_fleetpy_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "a.service"
        path.write_bytes(data)
        loaded = own_errors_only(lambda: load_unit_file(path))
    if loaded is not None:
        assert loaded[0] == "a.service"


# --------------------------------------------------------------------------- YAML and --set

YAML_FRAGMENTS = [
    "a", ":", " ", "\n", "- ", "&x ", "*x", "<<: ", "{", "}", "[", "]", ",", "'", '"',
    "!!python/object/apply:os.system ", "!!python/name:os.system", "!!binary ", "!!int ",
    "!!timestamp ", "!!set ", "!custom ", "? ", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! x\n",
    "#", "\t", "\x00", "\ufeff", "1e999", "0x1f", "~", "null", "yes", "2001-13-14", "9" * 30,
]  # fmt: skip


@given(pieces(YAML_FRAGMENTS, 40))
@SETTINGS
def test_yaml_loader_raises_only_the_callers_error(text: str) -> None:
    try:
        load_yaml(text, "v.yaml", error=TemplateError)
    except TemplateError as exc:
        assert str(exc).startswith("v.yaml") and "\n" not in str(exc)


@given(st.binary(max_size=200) | pieces(YAML_FRAGMENTS, 30).map(str.encode))
@FEW
def test_values_files_of_any_bytes_raise_only_fleetpy_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "v.yaml"
        path.write_bytes(data)
        values = own_errors_only(lambda: load_values(path))
    assert values is None or isinstance(values, dict)


@given(st.lists(pieces(["a", ".", "=", "b", "1", "true", " ", "..", "\x00", "é"], 8), max_size=5))
@example(["\n="])  # the message carried the raw newline
@SETTINGS
def test_set_items_raise_only_fleetpy_errors(items: list[str]) -> None:
    result = own_errors_only(lambda: parse_set(items))
    assert result is None or isinstance(result, dict)


class _TooSlow(BaseException):
    """Raised by the alarm: not an Exception, so render() does not wrap it."""


@contextmanager
def at_most(seconds: float) -> Iterator[None]:
    """In-process rendering has no time limit (render_bounded's child has): a template
    that loops for long is given up on, which is not a failure of the property."""

    def expire(signum: int, frame: Any) -> None:
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _TooSlow:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@given(pieces(TEMPLATE_FRAGMENTS, 25), value_maps)
@SETTINGS
def test_renderer_raises_only_fleetpy_errors(text: str, values: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = write_template(directory, text)
        with at_most(5):
            output = own_errors_only(lambda: render(path, values))
            assert output is None or isinstance(output, str)


# --------------------------------------------------------------------------- etcd records

RECORD_FRAGMENTS = [
    "{", "}", "[", "]", '"hash"', '"desired"', '"text"', '"ip"', '"metadata"', '"ttl"',
    '"global"', '"owner"', '"load"', '"active"', ":", ",", '"launched"', '"loaded"', "true",
    "null", "1", "-1", "1e999", '"' + "ab" * 32 + '"', '"10.0.0.1"', '"x$(id)"', '"\\u0000"',
    "{}", '""', "\xff",
]  # fmt: skip


raw_records = st.binary(max_size=80) | pieces(RECORD_FRAGMENTS, 20).map(
    lambda t: t.encode("utf-8", "surrogatepass")
)


record_names = st.sampled_from(["a.service", "../../x.service", "a/b.service", "", "x\x00.service"])


@given(raw_records, record_names)
@SETTINGS
def test_record_decoders_raise_only_malformed_record(raw: bytes, name: str) -> None:
    for decode in (
        lambda: UnitRecord.from_json(name, raw),
        lambda: ScheduleEntry.from_json(name, raw),
        lambda: MachineRecord.from_json("m1", raw),
        lambda: UnitState.from_json(name, "m1", raw),
    ):
        try:
            record = decode()
        except MalformedRecord as exc:
            assert "\n" not in str(exc)
            continue
        if hasattr(record, "name"):
            assert record.name == name and "/" not in record.name


@given(unit_texts, unit_names, st.sampled_from(list(DesiredState)))
@FEW
def test_schedule_entries_round_trip_through_their_json(
    text: str, name: str, desired: DesiredState
) -> None:
    unit = own_errors_only(lambda: parse_unit(text))
    if unit is None:
        return
    entry = ScheduleEntry(name, unit.hash, desired, unit.serialize())
    again = ScheduleEntry.from_json(name, entry.to_json().encode())
    assert again == entry
    assert parse_unit(again.text) == unit
    assert json.loads(entry.to_json())["hash"] == unit.hash
