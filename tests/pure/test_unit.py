"""Unit names, the systemd unit-file parser, content hashes and [X-Fleet] options."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpy.errors import (
    FleetOptionError,
    FleetpyError,
    UnitFileError,
    UnitNameError,
    UnitParseError,
)
from fleetpy.unitfile.unit import (
    FleetOptions,
    UnitFile,
    UnitName,
    fleet_options,
    load_unit_file,
    parse_name,
    parse_unit,
)

# ---------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, prefix, instance, suffix, template",
    [
        ("hello.service", "hello", None, "service", None),
        ("foo.bar.socket", "foo.bar", None, "socket", None),
        ("a:b_c-d.timer", "a:b_c-d", None, "timer", None),
        ("web@.service", "web", "", "service", "web@.service"),
        ("web@1.service", "web", "1", "service", "web@.service"),
        ("web@1.2.service", "web", "1.2", "service", "web@.service"),
        ("web@a@b.path", "web", "a@b", "path", "web@.path"),
        ("x@y:z.target", "x", "y:z", "target", "x@.target"),
        ("data.mount", "data", None, "mount", None),
        ("dev-sda.device", "dev-sda", None, "device", None),
        ("t.busname", "t", None, "busname", None),
        ("s.snapshot", "s", None, "snapshot", None),
    ],
)
def test_valid_names(
    name: str, prefix: str, instance: str | None, suffix: str, template: str | None
) -> None:
    parsed = parse_name(name)
    assert parsed == UnitName(prefix, instance, suffix)
    assert parsed.name == name
    assert parsed.template == template
    assert parsed.is_template == (instance == "")
    assert parsed.is_instance == bool(instance)


@pytest.mark.parametrize(
    "suffix", ["automount", "busname", "device", "mount", "scope", "slice", "snapshot", "swap"]
)
def test_templates_only_for_some_suffixes(suffix: str) -> None:
    assert parse_name(f"x.{suffix}").instance is None
    for name in (f"x@.{suffix}", f"x@1.{suffix}"):
        with pytest.raises(UnitNameError, match="cannot be templates or instances"):
            parse_name(name)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "empty"),
        ("hello", "missing type suffix"),
        ("hello.", "unknown type suffix"),
        ("hello.services", "unknown type suffix .services"),
        ("hello.Service", "unknown type suffix"),
        (".service", "empty prefix"),
        ("@.service", "empty prefix before '@'"),
        ("@1.service", "empty prefix"),
        ("he llo.service", "invalid character ' '"),
        ("a/b.service", "invalid character '/'"),
        ("a\\x2d.service", "invalid character '\\\\'"),
        ("web@a b.service", "invalid character"),
        ("héllo.service", "invalid character 'é'"),
        ("a\nb.service", "invalid character '\\n'"),
        ("web@.mount", "cannot be templates"),
    ],
)
def test_invalid_names(name: str, reason: str) -> None:
    with pytest.raises(UnitNameError) as info:
        parse_name(name)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message
    assert repr(name) in message


# ---------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------


def test_basic_parse_and_accessors() -> None:
    unit = parse_unit(
        "[Unit]\nDescription=Hello\n\n[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nExecStart=/bin/c x y\n"
    )
    assert unit.sections() == ["Unit", "Service"]
    assert unit.values("Service", "ExecStartPre") == ["/bin/a", "/bin/b"]
    assert unit.values("Service", "ExecStart") == ["/bin/c x y"]
    assert unit.values("Service", "Nope") == []
    assert unit.values("Nope", "ExecStart") == []
    assert unit.options("Unit") == (("Description", ("Hello",)),)


def test_whitespace_around_key_and_value_is_stripped() -> None:
    unit = parse_unit("  [Unit]  \n \tDescription \t=  two  words \t\r\n")
    assert unit.values("Unit", "Description") == ["two  words"]


def test_value_keeps_everything_after_first_equals() -> None:
    unit = parse_unit("[Service]\nEnvironment=A=1 B=2\nExecStart=/bin/echo # not a comment\n")
    assert unit.values("Service", "Environment") == ["A=1 B=2"]
    assert unit.values("Service", "ExecStart") == ["/bin/echo # not a comment"]


def test_empty_assignment_resets() -> None:
    unit = parse_unit(
        "[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nExecStartPre=\nExecStartPre=/bin/c\n"
        "Environment=A=1\nEnvironment=\n"
    )
    assert unit.values("Service", "ExecStartPre") == ["/bin/c"]
    assert unit.values("Service", "Environment") == []
    # Kept as written, as fleet kept it: systemd resets the key the same way.
    assert unit.serialize() == (
        "[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nExecStartPre=\nExecStartPre=/bin/c\n"
        "Environment=A=1\nEnvironment=\n"
    )


def test_repeated_keys_keep_their_order_interleaved_too() -> None:
    text = "[Unit]\nRequires=a.service\nAfter=a.service\nRequires=b.service\nAfter=b.service\n"
    unit = parse_unit(text)
    assert unit.serialize() == text
    assert unit.assignments("Unit") == (
        ("Requires", "a.service"),
        ("After", "a.service"),
        ("Requires", "b.service"),
        ("After", "b.service"),
    )
    # The meaning groups them per key, as systemd does.
    assert unit.options("Unit") == (
        ("Requires", ("a.service", "b.service")),
        ("After", ("a.service", "b.service")),
    )
    assert (
        parse_unit(text).hash
        != parse_unit(
            "[Unit]\nRequires=a.service\nRequires=b.service\nAfter=a.service\nAfter=b.service\n"
        ).hash
    )


def test_reset_is_per_section() -> None:
    unit = parse_unit("[A]\nK=1\n[B]\nK=2\n[A]\nK=\n")
    assert unit.values("A", "K") == []
    assert unit.values("B", "K") == ["2"]


def test_repeated_sections_merge_in_first_appearance_order() -> None:
    # As systemd reads them, and as fleet's serializer groups them.
    unit = parse_unit("[Unit]\nA=1\n[Service]\nB=2\n[Unit]\nA=3\nC=4\n")
    assert unit.sections() == ["Unit", "Service"]
    assert unit.values("Unit", "A") == ["1", "3"]
    assert unit.serialize() == "[Unit]\nA=1\nA=3\nC=4\n\n[Service]\nB=2\n"


def test_comments_and_blank_lines() -> None:
    unit = parse_unit("# top\n; also\n\n[Unit]\n   # indented\n\t; indented\nA=1\n\n\n")
    assert unit.serialize() == "[Unit]\nA=1\n"


def test_continuation_joins_with_a_space() -> None:
    # The backslash becomes a space; the next line is appended as is.
    unit = parse_unit("[Service]\nExecStart=/bin/echo a \\\n    b\\\nc\n")
    assert unit.values("Service", "ExecStart") == ["/bin/echo a      b c"]


def test_continuation_lines_are_kept_as_written() -> None:
    # fleet's parser (go-systemd) keeps backslash, line feed and the next line in the
    # value, and fleetctl sends that: stored the same way, `fleetctl cat` gives it back.
    text = '[Service]\nExecStart=/bin/sh -c \\\n  "echo a; \\\n   echo b"\nRestart=always\n'
    unit = parse_unit(text)
    assert unit.assignments("Service") == (
        ("ExecStart", '/bin/sh -c \\\n  "echo a; \\\n   echo b"'),
        ("Restart", "always"),
    )
    assert unit.serialize() == text
    assert unit.values("Service", "ExecStart") == ['/bin/sh -c    "echo a;     echo b"']


@pytest.mark.parametrize(
    "text",
    [
        "[Unit]\nA=x \\\n\nB=1\n",  # a blank line ends the continuation
        "[Unit]\nA=x \\\n   \nB=1\n",  # so does a line of blanks
        "[Unit]\nA=x \\\n# comment\n\nB=1\n",
    ],
)
def test_a_dangling_continuation_keeps_its_blank_line(text: str) -> None:
    unit = parse_unit(text)
    assert unit.assignments("Unit") == (("A", "x \\\n"), ("B", "1"))
    assert unit.values("Unit", "A") == ["x"]
    assert unit.serialize() == "[Unit]\nA=x \\\n\nB=1\n"
    assert parse_unit(unit.serialize()) == unit


def test_comment_lines_inside_continuation_are_skipped() -> None:
    unit = parse_unit("[Unit]\nDescription=a \\\n# comment\n; comment\nb\n")
    assert unit.values("Unit", "Description") == ["a  b"]
    assert unit.serialize() == "[Unit]\nDescription=a \\\nb\n"


def test_comment_line_ending_in_backslash_does_not_continue() -> None:
    unit = parse_unit("[Unit]\n# note \\\nA=1\n")
    assert unit.values("Unit", "A") == ["1"]


def test_escaped_backslash_at_end_is_not_a_continuation() -> None:
    unit = parse_unit("[Unit]\nA=x\\\\\nB=y\\\\\\\nz\n")
    assert unit.values("Unit", "A") == ["x\\\\"]
    assert unit.values("Unit", "B") == ["y\\\\ z"]


def test_continuation_at_end_of_file() -> None:
    unit = parse_unit("[Unit]\nA=x \\")
    assert unit.values("Unit", "A") == ["x"]
    assert unit == parse_unit("[Unit]\nA=x \\\n")


def test_continuation_can_reach_a_section_header_line() -> None:
    # systemd appends the next line whatever it is; the header becomes part of the value.
    unit = parse_unit("[Unit]\nA=x\\\n[Service]\n")
    assert unit.values("Unit", "A") == ["x [Service]"]


def test_line_endings_and_bom() -> None:
    assert parse_unit("\ufeff[Unit]\r\nA=1\rB=2\n") == parse_unit("[Unit]\nA=1\nB=2\n")


@pytest.mark.parametrize(
    "text, line, message",
    [
        (
            "[Unit]\nDescription=x\n\n\n\n\nnot an assignment\n",
            7,
            "line is neither a section header nor Key=Value",
        ),
        ("A=1\n[Unit]\n", 1, "Key=Value before the first [Section] header"),
        ("# c\n\n[Unit\nA=1\n", 3, "invalid section header '[Unit' (expected [Name])"),
        ("[]\n", 1, "empty section name"),
        ("[Unit]]\n", 1, "bad characters in section name"),
        ("[ Unit]\n", 1, "leading or trailing whitespace"),
        ('[Un"it]\n', 1, "bad characters"),
        ("[Unit]\n=x\n", 2, "missing key before '='"),
        ("[Unit]\nExec Start=x\n", 2, "invalid key 'Exec Start'"),
        ("[Unit]\nA.b=x\n", 2, "invalid key 'A.b'"),
        ("[Unit]\nA=1\nfoo \\\nbar\n", 3, "line is neither"),
        ("[Unit]\nA=\x00\n", 2, "NUL character"),
    ],
)
def test_parse_errors_carry_source_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(UnitParseError) as info:
        parse_unit(text, source="web.service")
    assert str(info.value).startswith(f"web.service:{line}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_error_message_example_from_the_brief() -> None:
    text = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n\n# c\noops\n"
    with pytest.raises(
        UnitParseError, match=r"^web\.service:7: line is neither a section header nor Key=Value$"
    ):
        parse_unit(text, "web.service")


# ---------------------------------------------------------------------------
# serialize / hash
# ---------------------------------------------------------------------------


def test_serialize_canonical_and_hash_ignores_formatting() -> None:
    messy = parse_unit(
        "# a comment\n[Unit]\n  Description =  Hello \n\n[Service]\r\n\n; note\n"
        "ExecStart=/bin/a\\\n  b  \n[Unit]\nAfter=x.service\n"
    )
    clean = parse_unit(
        "[Unit]\nDescription=Hello\nAfter=x.service\n\n[Service]\nExecStart=/bin/a\\\n  b\n"
    )
    assert messy == clean
    assert messy.hash == clean.hash
    assert messy.serialize() == (
        "[Unit]\nDescription=Hello\nAfter=x.service\n\n[Service]\nExecStart=/bin/a\\\n  b\n"
    )
    assert len(messy.hash) == 64 and int(messy.hash, 16) >= 0


def test_units_without_new_features_keep_their_hash() -> None:
    # The canonical text of a unit with no continuation line, no empty assignment and no
    # key repeated apart is what fleetpy stored before it kept those: same hash.
    text = (
        "[Unit]\nDescription=Hello\nAfter=a.service\nAfter=b.service\n\n[Service]\n"
        "ExecStartPre=-/bin/a\nExecStartPre=/bin/b\nExecStart=/bin/c x y\n\n"
        "[X-Fleet]\nConflicts=web@*.service\n"
    )
    assert parse_unit(text).serialize() == text
    assert parse_unit(text).hash == hashlib.sha256(text.encode()).hexdigest()


def test_hash_changes_with_content() -> None:
    assert parse_unit("[Unit]\nA=1\n").hash != parse_unit("[Unit]\nA=2\n").hash
    assert parse_unit("[Unit]\nA=1\nA=2\n").hash != parse_unit("[Unit]\nA=2\nA=1\n").hash


def test_unit_file_is_hashable_and_empty_unit() -> None:
    assert {parse_unit("[U]\nA=1\n"), parse_unit("[U]\n A = 1\n")} == {parse_unit("[U]\nA=1\n")}
    assert parse_unit("").serialize() == ""
    assert parse_unit("[Empty]\n").serialize() == "[Empty]\n"


def test_from_dict() -> None:
    unit = UnitFile.from_dict(
        {"Unit": {"Description": ["x"]}, "Service": {"ExecStart": ["/bin/a"], "Drop": []}}
    )
    assert unit == parse_unit("[Unit]\nDescription=x\n[Service]\nExecStart=/bin/a\n")


@pytest.mark.parametrize(
    "sections",
    [
        {"Unit": {"A": ["line\nExecStart=/bin/evil"]}},
        {"Unit": {"A": ["carriage\rreturn"]}},
        {"Unit": {"A": [" padded"]}},
        {"Unit": {"A": ["trailing\\"]}},
        {"Unit": {"A": ["a \\\n\nExecStart=/bin/evil"]}},
        {"Unit": {"A": ["a \\\n# comment\nb"]}},
        {"Unit": {"A": ["surrogate\ud800"]}},
        {"Uni\ud800t": {"A": ["x"]}},
        {"Unit": {"A": ["nul\x00"]}},
        {"Unit": {"A B": ["x"]}},
        {"Unit]\n[Evil": {"A": ["x"]}},
        {"": {"A": ["x"]}},
    ],
)
def test_unrepresentable_contents_are_refused(sections: dict[str, dict[str, list[str]]]) -> None:
    # serialize() must never produce text that reads back differently (or injects lines).
    with pytest.raises(UnitParseError, match="^cannot build unit"):
        UnitFile.from_dict(sections)


def test_duplicate_sections_are_refused_repeated_keys_are_not() -> None:
    with pytest.raises(UnitParseError, match="appears twice"):
        UnitFile((("Unit", ()), ("Unit", ())))
    unit = UnitFile((("Unit", (("A", "1"), ("B", ""), ("A", "2"))),))
    assert unit.serialize() == "[Unit]\nA=1\nB=\nA=2\n"


@pytest.mark.parametrize(
    "value, stored",
    [
        ("  padded \t", "padded"),
        ("", ""),
        ("   ", ""),
        ("a \\\n  b", "a \\\n  b"),
        ("a \\", "a \\\n"),  # a file ending in a backslash
        ("a \\\n", "a \\\n"),  # a continuation ended by a blank line
        ("a \\\n# c \\\n b", "a \\\n b"),  # systemd skips the comment line
        ("a \\\n;c", "a \\\n"),
    ],
)
def test_options_are_kept_as_fleets_parser_reads_them_back(value: str, stored: str) -> None:
    unit = UnitFile.from_options([("Service", "ExecStart", value)])
    assert unit.assignments("Service") == (("ExecStart", stored),)
    assert parse_unit(unit.serialize()) == unit


@pytest.mark.parametrize(
    "value, message",
    [
        ("a\nExecStart=/bin/evil", "line break in the value that does not follow"),
        ("a \\\n\nExecStart=/bin/evil", "empty continuation line"),
        ("a \\\n  \nb", "empty continuation line"),
        ("a\r\nb", "value contains '\\r'"),
        ("nul\x00", "value contains"),
    ],
)
def test_options_that_would_add_lines_are_refused(value: str, message: str) -> None:
    with pytest.raises(UnitParseError, match="^cannot build unit") as info:
        UnitFile.from_options([("Service", "ExecStart", value)])
    assert message in str(info.value)


_section_names = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="[]\"'\\", exclude_categories=("Cc", "Cs")
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s == s.strip())
_keys = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00", exclude_categories=["Cs"]),
    min_size=1,
    max_size=30,
).filter(lambda v: v == v.strip(" \t\r\n") and (len(v) - len(v.rstrip("\\"))) % 2 == 0 and v != "")
_unit_files = st.dictionaries(
    _section_names,
    st.dictionaries(_keys, st.lists(_values, min_size=1, max_size=3), max_size=4),
    max_size=4,
).map(UnitFile.from_dict)


@given(_unit_files)
@settings(max_examples=300)
def test_round_trip_generated_units(unit: UnitFile) -> None:
    text = unit.serialize()
    again = parse_unit(text)
    assert again == unit
    assert again.hash == unit.hash
    assert again.serialize() == text


_line = st.one_of(
    st.sampled_from(
        ["[Unit]", "[Service]", "[X-Fleet]", "", "  ", "# c", "; c \\", "\\", "x \\", "A=", "B ="]
    ),
    st.builds(
        lambda k, v, cont: f"{k}={v}" + (" \\" if cont else ""),
        st.sampled_from(["A", "B", "ExecStart", " C "]),
        st.text(alphabet="ab \t\\#;=[]%$\"'é", max_size=8),
        st.booleans(),
    ),
    st.text(alphabet="ab=[]\\#; \t", max_size=6),
)


@given(st.lists(_line, max_size=12), st.sampled_from(["\n", "\r\n", "\r"]))
@settings(max_examples=400)
def test_serialize_is_idempotent_for_any_text_that_parses(lines: list[str], newline: str) -> None:
    try:
        unit = parse_unit(newline.join(lines))
    except UnitParseError:
        return
    text = unit.serialize()
    again = parse_unit(text)
    assert again == unit
    assert again.serialize() == text


# ---------------------------------------------------------------------------
# load_unit_file
# ---------------------------------------------------------------------------


def test_load_unit_file(tmp_path: Path) -> None:
    path = tmp_path / "hello.service"
    path.write_text("[Service]\nExecStart=/bin/true\n")
    name, unit = load_unit_file(path)
    assert name == "hello.service"
    assert unit.values("Service", "ExecStart") == ["/bin/true"]


def test_load_unit_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.service"
    with pytest.raises(
        UnitFileError, match=rf"^cannot read unit file {missing}: No such file or directory$"
    ):
        load_unit_file(missing)
    noext = tmp_path / "noext"
    noext.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(UnitNameError):
        load_unit_file(noext)
    binary = tmp_path / "bin.service"
    binary.write_bytes(b"[Unit]\nA=\xff\n")
    with pytest.raises(UnitFileError, match="not UTF-8"):
        load_unit_file(binary)
    broken = tmp_path / "broken.service"
    broken.write_text("[Unit]\nbroken\n")
    with pytest.raises(UnitParseError, match=rf"^{broken}:2: "):
        load_unit_file(broken)
    assert issubclass(UnitFileError, FleetpyError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_load_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.service"
    path.write_text("[Unit]\n")
    path.chmod(0)
    with pytest.raises(UnitFileError, match="Permission denied"):
        load_unit_file(path)


# ---------------------------------------------------------------------------
# [X-Fleet]
# ---------------------------------------------------------------------------


def opts(x_fleet: str, name: str = "web.service") -> FleetOptions:
    return fleet_options(
        parse_unit("[Service]\nExecStart=/bin/true\n[X-Fleet]\n" + x_fleet, name), name
    )


def test_no_x_fleet_section() -> None:
    assert (
        fleet_options(parse_unit("[Service]\nExecStart=/bin/true\n"), "a.service") == FleetOptions()
    )


def test_all_options() -> None:
    o = opts(
        "MachineID=0123456789abcdef0123456789abcdef\n"
        "MachineMetadata=region=us disk=ssd\n"
        "MachineMetadata=region=eu\n"
        "Conflicts=db*.service cache@*.service\n"
        "Conflicts=other.service\n"
        "Spread=rack\n"
        "MaxPerMachine=2\n"
        "Global=false\n",
        "web@1.service",
    )
    assert o == FleetOptions(
        machine_id="0123456789abcdef0123456789abcdef",
        machine_metadata=(("disk", ("ssd",)), ("region", ("eu", "us"))),
        conflicts=("db*.service", "cache@*.service", "other.service"),
        is_global=False,
        spread="rack",
        max_per_machine=2,
    )


def test_machine_metadata_quoting_and_matching() -> None:
    o = opts("MachineMetadata=\"region=us east\" 'role=web'\nMachineMetadata=region=eu role=db\n")
    assert o.machine_metadata == (("region", ("eu", "us east")), ("role", ("db", "web")))
    assert o.matches_metadata({"region": "us east", "role": "db", "extra": "x"})
    assert o.matches_metadata({"region": "eu", "role": "web"})
    assert not o.matches_metadata({"region": "us", "role": "web"})
    assert not o.matches_metadata({"region": "eu"})
    assert opts("MachineMetadata=key=a=b\n").machine_metadata == (("key", ("a=b",)),)


def test_machine_of_and_replaces() -> None:
    assert opts("MachineOf=db.service\n").machine_of == ("db.service",)
    # Several MachineOf= (fleet's peers): all of them, on one machine.
    assert opts("MachineOf=db.service\nMachineOf=cache.service db.service\n").machine_of == (
        "db.service",
        "cache.service",
    )
    assert opts("Replaces=old.service older@2.service\nReplaces=x.service\n").replaces == (
        "old.service",
        "older@2.service",
        "x.service",
    )


@pytest.mark.parametrize(
    "word, value",
    [
        ("true", True),
        ("YES", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("no", False),
        ("0", False),
        ("Off", False),
    ],
)
def test_global_booleans(word: str, value: bool) -> None:
    assert opts(f"Global={word}\n").is_global is value


def test_global_with_metadata_and_conflicts_is_fine() -> None:
    o = opts("Global=true\nMachineMetadata=role=mon\nConflicts=x*.service\n")
    assert o.is_global and o.conflicts == ("x*.service",)


def test_conflicts_wildcard_may_match_itself() -> None:
    # The usual way to keep template instances on different machines.
    assert opts("Conflicts=web@*.service\n", "web@.service").conflicts == ("web@*.service",)
    assert opts("Conflicts=%p@*.service\n", "web@3.service").conflicts == ("web@*.service",)


def test_reset_then_set_in_x_fleet() -> None:
    assert opts("MachineID=a\nMachineID=\nMachineID=b\n").machine_id == "b"


@pytest.mark.parametrize(
    "x_fleet, message",
    [
        (
            "Global=true\nMachineID=abc\n",
            "Global=true in web.service cannot be combined with MachineID=",
        ),
        ("Global=true\nMachineOf=db.service\n", "cannot be combined with MachineOf="),
        ("Global=true\nReplaces=old.service\n", "cannot be combined with Replaces="),
        ("Global=true\nSpread=rack\n", "cannot be combined with Spread="),
        ("Global=true\nMaxPerMachine=1\n", "cannot be combined with MaxPerMachine="),
        (
            "Replaces=old.service\nConflicts=x*\n",
            "Replaces= and Conflicts= cannot be combined in web.service",
        ),
        (
            "MachineID=abc\nMachineOf=db.service\n",
            "MachineID= and MachineOf= cannot be combined in web.service",
        ),
        ("Replaces=web.service\n", "Replaces=web.service in web.service names the unit itself"),
        ("Replaces=%n\n", "names the unit itself"),
        (
            "MachineID=a\nX-ConditionMachineID=b\n",
            "MachineID= and X-ConditionMachineID= in web.service name different machines",
        ),
        ("X-ConditionMachineOf=web.service\n", "names the unit itself"),
        ("X-ConditionMachineBootID=a\nMachineOf=db.service\n", "cannot be combined"),
        ("X-Conflicts=x*\nReplaces=old.service\n", "cannot be combined"),
        ("MachineOf=web.service\n", "names the unit itself"),
        ("MachineOf=db@.service\n", "names a template"),
        ("Replaces=db@.service\n", "names a template"),
        ("MachineOf=nosuffix\n", "MachineOf= in web.service: invalid unit name 'nosuffix'"),
        ("Replaces=ok.service bad\n", "Replaces= in web.service: invalid unit name 'bad'"),
        ("Global=maybe\n", "invalid [X-Fleet] Global=maybe in web.service"),
        ("MaxPerMachine=0\n", "invalid [X-Fleet] MaxPerMachine=0"),
        ("MaxPerMachine=-1\n", "MaxPerMachine=-1"),
        ("MaxPerMachine=two\n", "expected an integer from 1 to 100000"),
        ("MaxPerMachine=1_0\n", "expected an integer from 1 to 100000"),
        ("MachineID=a\nMachineID=b\n", "MachineID= is given 2 times in web.service"),
        ("Global=true\nGlobal=true\n", "Global= is given 2 times"),
        ("MachineID=a b\n", "MachineID= in web.service takes one value, got 2"),
        ("Spread=a=b\n", "Spread=a=b in web.service must be a metadata key"),
        (
            "MachineMetadata=region\n",
            "malformed [X-Fleet] MachineMetadata item 'region' in web.service",
        ),
        ("MachineMetadata=region=\n", "malformed"),
        ("MachineMetadata==us\n", "malformed"),
        ('MachineMetadata="region=us\n', 'unterminated " quote in [X-Fleet] MachineMetadata='),
        ('MachineMetadata=""\n', "empty [X-Fleet] MachineMetadata= in web.service"),
        ("MachineID=%i\n", "empty [X-Fleet] MachineID="),
        ("Conflicts=%i\n", "empty [X-Fleet] Conflicts="),
        ("Conflicts=%x\n", "unknown specifier %x in [X-Fleet] Conflicts= of web.service"),
        ("Conflicts=web%\n", "lone '%' at the end of [X-Fleet] Conflicts= in web.service"),
    ],
)
def test_invalid_x_fleet(x_fleet: str, message: str) -> None:
    with pytest.raises(FleetOptionError) as info:
        opts(x_fleet)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("MachineMetdata", "MachineMetadata"),
        ("machineid", "MachineID"),
        ("Conflict", "Conflicts"),
        ("Replace", "Replaces"),
        ("MaxPerHost", "MaxPerMachine"),
        ("Globl", "Global"),
        ("MachineOff", "MachineOf"),
        ("Spred", "Spread"),
    ],
)
def test_unknown_option_did_you_mean(key: str, suggestion: str) -> None:
    with pytest.raises(
        FleetOptionError,
        match=rf"^unknown \[X-Fleet\] option {key}= in web\.service; did you mean {suggestion}=\?$",
    ):
        opts(f"{key}=x\n")


def test_unknown_option_without_close_match_lists_known() -> None:
    with pytest.raises(
        FleetOptionError, match=r"unknown \[X-Fleet\] option Zebra= in web\.service \(known: "
    ):
        opts("Zebra=1\n")


@pytest.mark.parametrize(
    "legacy, current",
    [
        ("X-ConditionMachineID=abc", "MachineID=abc"),
        ("X-ConditionMachineBootID=abc", "MachineID=abc"),  # fleet read it as a machine id
        ("X-ConditionMachineOf=db.service", "MachineOf=db.service"),
        ('X-ConditionMachineOf="db.service" "cache.service"', "MachineOf=db.service cache.service"),
        ("X-ConditionMachineMetadata=region=us", "MachineMetadata=region=us"),
        ("X-Conflicts=web@*.service", "Conflicts=web@*.service"),
    ],
)
def test_fleets_legacy_names_mean_the_current_keys(legacy: str, current: str) -> None:
    old = opts(legacy + "\n")
    assert old == opts(current + "\n")
    assert len(old.notes) == 1 and "web.service" in old.notes[0]


def test_legacy_and_current_names_add_up() -> None:
    o = opts(
        "X-ConditionMachineMetadata=region=us\nMachineMetadata=disk=ssd\n"
        "X-Conflicts=a*.service\nConflicts=b*.service\n"
        "X-ConditionMachineOf=db.service\nMachineOf=cache.service\n"
    )
    assert o.machine_metadata == (("disk", ("ssd",)), ("region", ("us",)))
    assert o.conflicts == ("a*.service", "b*.service")
    assert o.machine_of == ("db.service", "cache.service")
    assert opts("MachineID=a\nX-ConditionMachineID=a\n").machine_id == "a"


@pytest.mark.parametrize(
    "x_fleet, name",
    [
        ("Conflicts=web.service\n", "web.service"),
        ("Conflicts=a.service %n\n", "web.service"),
        ("X-Conflicts=%p.timer\n", "snapshot.timer"),  # a timer kept off its other copies
    ],
)
def test_a_unit_conflicting_with_itself_is_noted_not_refused(x_fleet: str, name: str) -> None:
    # fleet skips the unit's own name when it checks Conflicts=.
    o = opts(x_fleet, name)
    assert name not in o.conflicts
    assert any("names the unit itself" in note for note in o.notes)


def test_a_misspelled_legacy_name_is_still_refused() -> None:
    with pytest.raises(FleetOptionError, match="did you mean X-ConditionMachineOf=") as info:
        opts("X-ConditionMachinOf=db.service\n")
    assert str(info.value).startswith("unknown [X-Fleet] option X-ConditionMachinOf=")


@pytest.mark.parametrize(
    "name, value, expanded",
    [
        ("web@1.service", "%n", "web@1.service"),
        ("web@1.service", "%N", "web@1"),
        ("web@1.service", "%p", "web"),
        ("web@1.service", "%i", "1"),
        ("web@1.service", "%p-db@%i.service", "web-db@1.service"),
        ("web@1.service", "100%%", "100%"),
        ("web@1.service", "%%n", "%n"),
        ("web.service", "%p.socket", "web.socket"),
        ("web.service", "%N", "web"),
        ("web@.service", "%p@x%i.service", "web@x.service"),
    ],
)
def test_specifiers(name: str, value: str, expanded: str) -> None:
    assert opts(f"MachineID={value}\n", name).machine_id == expanded


def test_specifiers_in_machine_of_follow_fleet_docs() -> None:
    # fleet's documented example: MachineOf=%p.socket in foo.service -> foo.socket
    assert opts("MachineOf=%p.socket\n", "foo.service").machine_of == ("foo.socket",)


def test_fleet_options_validates_the_name() -> None:
    with pytest.raises(UnitNameError):
        fleet_options(parse_unit(""), "bad name.service")


def test_fleet_options_is_hashable_record() -> None:
    a = opts("MachineMetadata=b=2 a=1\n")
    b = opts("MachineMetadata=a=1\nMachineMetadata=b=2\n")
    assert a == b and hash(a) == hash(b)
