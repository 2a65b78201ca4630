"""Unit templates: rendering, error messages, values, and quoting that systemd
reads back as exactly the original values (checked against a reference
splitter and, where it runs, systemd itself).

Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/integration/test_template.py."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpy.errors import TemplateError
from fleetpy.unitfile.template import (
    exec_args,
    load_values,
    merge_values,
    parse_set,
    render,
    systemd_quote,
    systemd_value,
)
from fleetpy.unitfile.unit import fleet_options, load_unit_file, parse_unit

from support.paths import UNITS
from support.template_cases import (
    SIMPLE_ESCAPES,
    expand_env,
    expected_argv,
    nasty_values,
    render_docker,
    write,
)

# ---------------------------------------------------------------------------
# A reference reading of Exec lines, written from systemd.service(5) "COMMAND
# LINES" and systemd.unit(5) "SPECIFIERS", independent of fleetpy's quoting.
# ---------------------------------------------------------------------------

_WS = " \t\n\r"


def _unescape_at(line: str, i: int) -> tuple[str, int]:
    """C escape starting after the backslash at line[i-1]; returns (char, next index)."""
    char = line[i]
    if char in SIMPLE_ESCAPES:
        return SIMPLE_ESCAPES[char], i + 1
    if char == "x":
        return chr(int(line[i + 1 : i + 3], 16)), i + 3
    if char == "u":
        return chr(int(line[i + 1 : i + 5], 16)), i + 5
    if char == "U":
        return chr(int(line[i + 1 : i + 9], 16)), i + 9
    if char in "01234567":
        return chr(int(line[i : i + 3], 8)), i + 3
    raise AssertionError(f"unknown escape \\{char} in {line!r}")


def split_exec(line: str, specifiers: Mapping[str, str] | None = None) -> list[str]:
    """The argv systemd would exec for one Exec*= value.

    Words split on whitespace; "..." and '...' group; C escapes decoded; a bare
    `;` would separate commands (refused here). Then, per word, %-specifiers
    are expanded (%% -> %) and, at exec time, environment variables ($$ -> $).
    Any specifier not in `specifiers` or any variable reference fails the test.
    """
    table = dict(specifiers or {})
    table["%"] = "%"
    words: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _WS:
            i += 1
        if i >= n:
            break
        assert not (line[i] == ";" and (i + 1 == n or line[i + 1] in _WS)), (
            f"command separator in {line!r}"
        )
        word: list[str] = []
        quote: str | None = None
        while i < n:
            char = line[i]
            if char == "\\":
                assert i + 1 < n, f"dangling backslash in {line!r}"
                decoded, i = _unescape_at(line, i + 1)
                word.append(decoded)
                continue
            if quote:
                if char == quote:
                    quote = None
                else:
                    word.append(char)
            elif char in "\"'":
                quote = char
            elif char in _WS:
                break
            else:
                word.append(char)
            i += 1
        assert quote is None, f"unbalanced quoting in {line!r}"
        words.append("".join(word))
    return [expand_env(_expand_specifiers(word, table)) for word in words]


def _expand_specifiers(word: str, table: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        assert match.group(1), f"lone % at the end of {word!r}"
        assert match.group(1) in table, f"specifier %{match.group(1)} would be expanded in {word!r}"
        return table[match.group(1)]

    return re.sub(r"%(.|$)", replace, word, flags=re.S)


# ---------------------------------------------------------------------------
# rendering and its errors
# ---------------------------------------------------------------------------


def test_render_basic(tmp_path: Path) -> None:
    path = write(
        tmp_path, "t.service.j2", "[Service]\nExecStart=/bin/echo {{ msg | systemd_quote }}\n"
    )
    assert render(path, {"msg": "hi there"}) == '[Service]\nExecStart=/bin/echo "hi there"\n'


def test_render_keeps_trailing_newline_and_no_autoescape(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "{{ a }}<b>&\n\n")
    assert render(path, {"a": "<x>"}) == "<x><b>&\n\n"


def test_block_tags_leave_no_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "[S]\n{% for x in xs %}\n  K={{ x }}\n{% endfor %}\nEnd=1\n")
    assert render(path, {"xs": ["a", "b"]}) == "[S]\n  K=a\n  K=b\nEnd=1\n"


def test_missing_value_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "web.service.j2",
        "[Unit]\n\n[Service]\n# image:\nExecStart=/bin/run {{ image }}\n",
    )
    with pytest.raises(TemplateError, match=r"^web\.service\.j2:5: 'image' is undefined$"):
        render(path, {}, "web.service.j2")


def test_missing_value_inside_a_filter_and_a_loop(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.j2",
        "a\n{% for p in ports %}\n{{ p | systemd_quote }}\n{% endfor %}\n{{ x | systemd_quote }}\n",
    )
    with pytest.raises(TemplateError, match=r"^t\.j2:2: 'ports' is undefined$"):
        render(path, {}, "t.j2")
    with pytest.raises(TemplateError, match=r"^t\.j2:5: 'x' is undefined$"):
        render(path, {"ports": [1]}, "t.j2")


def test_missing_nested_value(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "\n{{ db.host }}\n")
    with pytest.raises(TemplateError, match=r"^t\.j2:2: 'dict object' has no attribute 'host'$"):
        render(path, {"db": {}}, "t.j2")


def test_default_source_name_is_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "{{ nope }}")
    with pytest.raises(TemplateError, match=rf"^{re.escape(str(path))}:1: 'nope' is undefined$"):
        render(path, {})


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.j2", "[Unit]\n\n{% if x %}\nA=1\n")
    with pytest.raises(TemplateError) as info:
        render(path, {"x": 1}, "bad.j2")
    assert re.fullmatch(r"bad\.j2:\d+: Unexpected end of template\..*", str(info.value))
    path = write(tmp_path, "bad2.j2", "[Unit]\nA={{ x | }}\n")
    with pytest.raises(TemplateError, match=r"^bad2\.j2:2: "):
        render(path, {"x": 1}, "bad2.j2")


def test_missing_template_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.j2"
    with pytest.raises(
        TemplateError,
        match=rf"^cannot read template {re.escape(str(missing))}: No such file or directory$",
    ):
        render(missing, {})


def test_errors_in_included_templates_name_that_file(tmp_path: Path) -> None:
    write(tmp_path, "part.j2", "ok\n{{ missing }}\n")
    main = write(tmp_path, "main.j2", "line1\n{% include 'part.j2' %}\n")
    with pytest.raises(TemplateError, match=r"^part\.j2:2: 'missing' is undefined$"):
        render(main, {}, "main.j2")
    main = write(tmp_path, "main2.j2", "{% include 'gone.j2' %}\n")
    with pytest.raises(TemplateError, match=r"^main2\.j2: included template gone\.j2 not found$"):
        render(main, {}, "main2.j2")


def test_type_errors_from_values_get_a_location(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "\n{% for p in ports %}{{ p }}{% endfor %}\n")
    with pytest.raises(TemplateError, match=r"^t\.j2:2: 'int' object is not iterable$"):
        render(path, {"ports": 80}, "t.j2")


def test_unfiltered_multiline_value_is_refused(tmp_path: Path) -> None:
    # Even without a filter, a value cannot add lines to a unit.
    path = write(tmp_path, "t.j2", "[Unit]\nDescription={{ d }}\n")
    with pytest.raises(
        TemplateError, match=r"^t\.j2:2: value 'a\\nExecStartPre=/bin/evil' would span lines"
    ):
        render(path, {"d": "a\nExecStartPre=/bin/evil"}, "t.j2")
    with pytest.raises(TemplateError, match=r"^t\.j2:2: value is empty"):
        render(path, {"d": None}, "t.j2")


def test_fail_global(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "\n{% if n > 3 %}{{ fail('n must be at most 3') }}{% endif %}\n")
    with pytest.raises(TemplateError, match=r"^t\.j2:2: n must be at most 3$"):
        render(path, {"n": 4}, "t.j2")


def test_values_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "x")
    with pytest.raises(TemplateError, match="must be a mapping"):
        render(path, ["a"], "t.j2")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# the sandbox, its limits, and errors from inside a template
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "{{ cycler.__init__.__globals__.os.system('touch /tmp/fleetpy-pwned') }}",
            "access to attribute '__init__' of 'type' object is unsafe.",
        ),
        (
            "{{ cycler.__init__.__globals__.__builtins__.open('/etc/passwd').read() }}",
            "access to attribute '__init__' of 'type' object is unsafe.",
        ),
        (
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "access to attribute '__class__' of 'str' object is unsafe.",
        ),
        (
            "{{ self._TemplateReference__context }}",
            "access to attribute '_TemplateReference__context'",
        ),
        ("{{ joiner.__init__.__globals__ }}", "access to attribute '__init__'"),
        ("{{ namespace.__init__.__globals__ }}", "access to attribute '__init__'"),
        ("{{ x.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe."),
        ("{{ x|attr('__class__') }}", "access to attribute '__class__'"),
        ("{{ x['__class__'] }}", "access to attribute '__class__'"),
        ("{{ config }}", "'config' is undefined"),
        ("{{ lipsum.__globals__ }}", "'lipsum' is undefined"),
        ("{{ request.application }}", "'request' is undefined"),
        ("{{ range.__self__ }}", "has no attribute '__self__'"),
        ("{{ dict.mro() }}", "access to attribute 'mro'"),
        (
            "{{ values.update({'a': 1}) }}",
            "access to attribute 'update' of 'dict' object is unsafe.",
        ),
        ("{{ items.append(1) }}", "access to attribute 'append' of 'list' object is unsafe."),
        ("{{ '{0.__class__}'.format(x) }}", "access to attribute '__class__'"),
    ],
)
def test_sandbox_refuses_python_internals(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "t.j2", "[Unit]\n" + text + "\n")
    with pytest.raises(TemplateError) as info:
        render(path, {"x": "a", "values": {}, "items": []}, "t.j2")
    assert str(info.value).startswith("t.j2:2: ") and message in str(info.value)
    assert not os.path.exists("/tmp/fleetpy-pwned")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "{{ 'x' * 10**12 }}",
            r"str \* 1000000000000 would have 1000000000000 characters or items",
        ),
        ("{{ [1] * 10**9 }}", r"list \* 1000000000 would have"),
        ("{{ 10**9 * [1] }}", r"list \* 1000000000 would have"),
        ("{{ 2 ** (10**10) }}", r"2 \*\* 10000000000 is larger than 4096 bits"),
        ("{% set n = 2**4000 %}{{ n * n }}", r"a product larger than 4096 bits"),
        ("{{ 3 ** 2600 }}", r"3 \*\* 2600 is larger than 4096 bits"),
        ("{% set s = 'x' * 1000000 %}{{ s + s }}", r"the sum would have 2000000"),
        ("{% set s = 'x' * 1000000 %}{{ s ~ s }}", r"the joined text would have 2000000"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}",
            r"the joined text would have 2097152",
        ),
        (
            "{% macro d(s) %}{{ s }}{{ s }}{% endmacro %}"
            + "{{ "
            + "d(" * 25
            + "'x'"
            + ")" * 25
            + " }}",
            r"the joined text would have 2097152",
        ),
        ("{{ 'a'|center(10**12) }}", r"the centered text would have 1000000000000"),
        ("{{ 'a'.center(10**10) }}", r"str.center\(\) would have 10000000000"),
        ("{{ 'a'.ljust(10**10) }}", r"str.ljust\(\) would have"),
        ("{{ '1'.zfill(10**10) }}", r"str.zfill\(\) would have"),
        ("{{ ('\t' * 1000).expandtabs(10**6) }}", r"str.expandtabs\(\) would have 1000000000"),
        ("{{ 'x'|indent(10**10) }}", r"the indentation would have"),
        ("{{ 'x'|replace('', 'y' * 1000000) }}", r"the replaced text would have 2000001"),
        ("{{ ('x' * 1000)|replace('x', 'y' * 10000) }}", r"the replaced text would have 10001000"),
        ("{{ ('x' * 1000).replace('x', 'y' * 10000) }}", r"the replaced text would have 10001000"),
        ("{{ (['x' * 1000000] * 2)|join }}", r"the joined text would have 2000000"),
        ("{{ ''.join(['x' * 1000000, 'y' * 1000000]) }}", r"the joined text would have 2000000"),
        ("{{ 'a'|slice(10**9)|list }}", r"the number of slices would have 1000000000"),
        ("{{ {}|tojson(indent=10**9) }}", r"the JSON indentation would have 1000000000"),
        ("{{ [1]|batch(10**9, 'x')|list }}", r"a batch would have 1000000000"),
        (
            "{{ ('x ' * 1000)|wordwrap(1, wrapstring='y' * 100000) }}",
            r"the wrapped text would have",
        ),
        ("{{ '%999999999s'|format(1) }}", r"format '%999999999s' asks for a width above 4096"),
        ("{{ '%.999999999f'|format(1) }}", r"format '%.999999999f' asks for a width above 4096"),
        ("{{ '%*s'|format(10**9, 'x') }}", r"format '%\*s' asks for a width above 4096"),
        (
            "{{ '%" + "9" * 5000 + "s'|format(1) }}",
            r"format '%99999.*' asks for a width above 4096",
        ),
        ("{{ '{:" + "9" * 5000 + "}'.format(1) }}", r"format spec '99999.*' asks for a width"),
        (
            "{{ '%(a)999999999s' % {'a': 1} }}",
            r"format '%\(a\)999999999s' asks for a width above 4096",
        ),
        ("{{ '{:>999999999}'.format(1) }}", r"format spec '>999999999' asks for a width"),
        (
            "{{ '{:{w}}'.format(1, w=10**9) }}",
            r"format spec '\{w\}' asks for a width above 4096 \(or a nested",
        ),
        ("{{ '{:>999999999}'.format_map({}) }}", r"format spec '>999999999'"),
        ("{% for i in range(10**12) %}{% endfor %}", r"Range too big"),
        (
            "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
            r"output larger than 1 MiB, fleetpy's limit for a rendered unit",
        ),
    ],
)
def test_huge_values_are_refused_before_they_are_built(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "t.j2", "[Unit]\n" + text + "\n")
    with pytest.raises(TemplateError, match=r"^t\.j2:2: " + message):
        render(path, {}, "t.j2")


def test_ordinary_arithmetic_and_strings_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.j2",
        "{{ 8080 + 1 }} {{ 10 * 3 }} {{ 7 // 2 }} {{ 7 % 4 }} {{ 2 ** 10 }} "
        "{{ '-' * 3 }} {{ [1] * 2 }} {{ 'a' + 'b' }} {{ 'a' ~ 1 }} "
        "{{ '%05d'|format(42) }} {{ '{}:{}'.format('h', 80) }} "
        "{{ 'x'|center(5) }}| {{ 10**10**10 }}\n",
    )
    assert render(path, {}) == (
        "8081 30 3 3 1024 --- [1, 1] ab a1 00042 h:80   x  | 1" + "0" * 100 + "\n"
    )  # Jinja's ** is left-associative: (10**10)**10


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}",
            r"t\.j2:1: nested too deeply, or a macro "
            r"or include that calls itself without end",
        ),
        ("{% include 't.j2' %}", r"t\.j2:1: nested too deeply"),
        ("{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}", r"t\.j2: nested too deeply"),
        ("{% if 1 %}" * 500 + "{% endif %}" * 500, r"t\.j2: "),
        ("\n\n{{ 1/0 }}", r"t\.j2:3: division by zero"),
        ("{{ 1 // 0 }}", r"t\.j2:1: integer division or modulo by zero"),
        ("{{ 2.0 ** 100000 }}", r"t\.j2:1: number out of range$"),
        ("{{ (2 ** 4000) / 1.5 }}", r"t\.j2:1: int too large to convert to float"),
        (
            "{{ x|systemd_quote(1, 2, 3) }}",
            r"t\.j2:1: systemd_quote\(\) takes from 1 to 2 positional "
            r"arguments but 4 were given",
        ),
        ("{{ x|exec_args }}", r"t\.j2:1: expected a list of arguments, not str"),
        ("{{ x|docker_env }}", r"t\.j2:1: docker_env\(\) missing 1 required positional argument"),
        ("{{ [1, 'a']|sort }}", r"t\.j2:1: '<' not supported between instances of 'str' and 'int'"),
        ("{{ x|round('a') }}", r"t\.j2:1: "),
        ("{{ x|nosuchfilter }}", r"t\.j2:1: No filter named 'nosuchfilter'\."),
        ("{{ x is nosuchtest }}", r"t\.j2:1: No test named 'nosuchtest'\."),
        ("{{ nope }}", r"t\.j2:1: 'nope' is undefined"),
        ("{{ x.nope.deeper }}", r"t\.j2:1: 'str object' has no attribute 'nope'"),
        ("{{ fail('bad\x1b[2J\x07 thing') }}", r"t\.j2:1: bad\\x1b\[2J\\x07 thing$"),
        ("{{ '%d'|format('x') }}", r"t\.j2:1: %d format: a real number is required, not str"),
        ("{{ x[10**100] }}", r"t\.j2:1: "),
        ("{{ {}|dictsort(by='nope') }}", r"t\.j2:1: "),
    ],
)
def test_errors_inside_a_template_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "t.j2", text)
    with pytest.raises(TemplateError) as info:
        render(path, {"x": "a"}, "t.j2")
    line = str(info.value)
    assert re.match(message, line), line
    assert "\n" not in line and line.isprintable()


def test_lipsum_is_gone_other_jinja_globals_stay(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.j2",
        "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }} "
        "{% set j = joiner(',') %}{% for x in [1, 2] %}{{ j() }}{{ x }}{% endfor %} "
        "{{ dict(a=1).a }} {% set ns = namespace(n=1) %}{% set ns.n = 2 %}{{ ns.n }}\n",
    )
    assert render(path, {}) == "ab 1,2 1 2\n"


# ---------------------------------------------------------------------------
# includes stay in the template's directory
# ---------------------------------------------------------------------------


def test_includes_from_the_directory_and_below_work(tmp_path: Path) -> None:
    write(tmp_path, "part.j2", "part {{ x }}\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/deep.j2", "deep\n")
    (tmp_path / "alias.j2").symlink_to("part.j2")  # a symlink inside the directory is fine
    main = write(
        tmp_path,
        "main.j2",
        "{% include 'part.j2' %}{% include 'sub/deep.j2' %}"
        "{% include './alias.j2' %}{% from 'macros.j2' import m %}{{ m() }}\n",
    )
    write(tmp_path, "macros.j2", "{% macro m() %}macro{% endmacro %}")
    assert render(main, {"x": 1}) == "part 1\ndeep\npart 1\nmacro\n"


@pytest.mark.parametrize(
    "include, message",
    [
        (
            "{% include '../secret.j2' %}",
            r"included template \.\./secret\.j2 is outside the template directory",
        ),
        (
            "{% include 'sub/../../secret.j2' %}",
            r"included template sub/\.\./\.\./secret\.j2 is outside the template directory",
        ),
        (
            "{% include '/etc/passwd' %}",
            r"included template /etc/passwd is outside the template directory",
        ),
        (
            "{% include 'evil.j2' %}",
            r"included template evil\.j2 is a symbolic link to .*/secret\.j2, "
            r"outside the template directory",
        ),
        (
            "{% include 'passwd.j2' %}",
            r"included template passwd\.j2 is a symbolic link to /etc/passwd, outside the template directory",
        ),
        (
            "{% include 'etc/passwd' %}",
            r"included template etc/passwd is a symbolic link to /etc/passwd, outside the template directory",
        ),
        (
            "{% import '../secret.j2' as s %}",
            r"included template \.\./secret\.j2 is outside the template directory",
        ),
        (
            "{% extends '../secret.j2' %}",
            r"included template \.\./secret\.j2 is outside the template directory",
        ),
        (
            "{% from 'evil.j2' import x %}",
            r"included template evil\.j2 is a symbolic link to .*/secret\.j2, outside the template directory",
        ),
        (
            "{% include ['../secret.j2', 'part.j2'] %}",
            r"included template \.\./secret\.j2 is outside the template directory",
        ),
        ("{% include 'fifo.j2' %}", r"template .*fifo\.j2 is not a regular file \(a FIFO\)"),
        ("{% include 'sub' %}", r"template .*sub is not a regular file \(a directory\)"),
        (
            "{% include 'zero.j2' %}",
            r"included template zero\.j2 is a symbolic link to /dev/zero, outside the template directory",
        ),
        (
            "{% include 'big.j2' %}",
            r"template .*big\.j2 is larger than 1 MiB, fleetpy's limit for a template",
        ),
        (
            "{% include 'latin1.j2' %}",
            r"cannot read template .*latin1\.j2: not UTF-8 \(byte 0xe9 at offset 3\)",
        ),
    ],
)
def test_includes_cannot_leave_the_directory(tmp_path: Path, include: str, message: str) -> None:
    write(tmp_path, "secret.j2", "secret\n")
    units = tmp_path / "units"
    units.mkdir()
    (units / "sub").mkdir()
    write(units, "part.j2", "part\n")
    (units / "evil.j2").symlink_to(tmp_path / "secret.j2")
    (units / "passwd.j2").symlink_to("/etc/passwd")
    (units / "etc").symlink_to("/etc")
    (units / "zero.j2").symlink_to("/dev/zero")
    os.mkfifo(units / "fifo.j2")
    (units / "big.j2").write_bytes(b"x" * (1024 * 1024 + 1))
    (units / "latin1.j2").write_bytes(b"caf\xe9\n")
    main = write(units, "main.j2", "[Unit]\n" + include + "\n")
    with pytest.raises(TemplateError, match=r"^main\.j2:2: " + message + "$"):
        render(main, {}, "main.j2")


def test_load_values_merge_keys_and_limits(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "v.yaml",
        "defaults: &d {restart: always, pull: false}\nweb:\n  <<: *d\n  pull: true\n",
    )
    assert load_values(path) == {
        "defaults": {"restart": "always", "pull": False},
        "web": {"restart": "always", "pull": True},
    }
    with pytest.raises(TemplateError, match=r"v2\.yaml:1: nested deeper than 64 levels$"):
        load_values(write(tmp_path, "v2.yaml", "a: " + "[" * 100000))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(TemplateError, match=r"values file .*big\.yaml is larger than 1 MiB"):
        load_values(big)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(
        TemplateError, match=r"values file .*fifo\.yaml is not a regular file \(a FIFO\)$"
    ):
        load_values(fifo)


# ---------------------------------------------------------------------------
# values files and --set
# ---------------------------------------------------------------------------


def test_load_values(tmp_path: Path) -> None:
    path = write(tmp_path, "values.yaml", "name: web\nports: ['80:80']\nenv: {A: 1}\n")
    assert load_values(path) == {"name": "web", "ports": ["80:80"], "env": {"A": 1}}
    assert load_values(write(tmp_path, "empty.yaml", "# nothing\n")) == {}


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "values.yaml", "name: web\nimage: nginx\nbad: key: value\n")
    with pytest.raises(
        TemplateError, match=rf"^{re.escape(str(path))}:3: mapping values are not allowed here$"
    ):
        load_values(path)


def test_yaml_duplicate_key_and_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r":3: duplicate key 'name'$"):
        load_values(write(tmp_path, "dup.yaml", "name: a\nimage: b\nname: c\n"))
    with pytest.raises(TemplateError, match="top level must be a mapping"):
        load_values(write(tmp_path, "list.yaml", "- a\n- b\n"))
    with pytest.raises(TemplateError, match="top-level key 1 is not a string"):
        load_values(write(tmp_path, "intkey.yaml", "1: a\n"))
    with pytest.raises(
        TemplateError, match=r"^cannot read values file .*missing\.yaml: No such file or directory$"
    ):
        load_values(tmp_path / "missing.yaml")
    with pytest.raises(TemplateError, match=r"unclosed\.yaml:2: "):
        load_values(write(tmp_path, "unclosed.yaml", "a: [1,\n"))


def test_parse_set() -> None:
    assert parse_set(["image=nginx:1.27", "replicas=3", "debug=true", "a.b.c=x", "a.b.d=-1"]) == {
        "image": "nginx:1.27",
        "replicas": 3,
        "debug": True,
        "a": {"b": {"c": "x", "d": -1}},
    }


@pytest.mark.parametrize(
    "raw, value",
    [
        ("007", "007"),
        ("1.5", "1.5"),
        ("yes", "yes"),
        ("null", "null"),
        ("True", "True"),
        ("", ""),
        ("[1, 2]", "[1, 2]"),
        ("a=b", "a=b"),
        ("0", 0),
        ("-12", -12),
        ("false", False),
    ],
)
def test_parse_set_keeps_strings_unless_clearly_int_or_bool(raw: str, value: Any) -> None:
    assert parse_set([f"k={raw}"]) == {"k": value}


@pytest.mark.parametrize(
    "items, message",
    [
        (["novalue"], "expected key=value"),
        (["=x"], "expected key=value"),
        (["a..b=1"], "empty or padded part"),
        (["a.=1"], "empty or padded part"),
        (["a=1", "a.b=2"], "a is already set to a value"),
        (["a.b=1", "a=2"], "a is already a mapping"),
        # Was a RecursionError while pickling the values for the renderer.
        ([".".join(["k"] * 65) + "=1"], "key nested deeper than 64 levels"),
        (["x" * 100_000], "--set " + "x" * 100 + "...: expected key=value"),
    ],
)
def test_parse_set_errors(items: list[str], message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse_set(items)


def test_merge_values() -> None:
    base = {"a": 1, "env": {"X": "1", "Y": "2"}, "ports": ["80:80"]}
    merged = merge_values(base, {"env": {"Y": "3"}, "ports": ["81:81"]})
    assert merged == {"a": 1, "env": {"X": "1", "Y": "3"}, "ports": ["81:81"]}
    assert base["env"] == {"X": "1", "Y": "2"}


# ---------------------------------------------------------------------------
# quoting filters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arg, quoted",
    [
        ("plain", "plain"),
        ("/a/b:c,d=e+f@g", "/a/b:c,d=e+f@g"),
        ("two words", '"two words"'),
        ("", '""'),
        (";", '";"'),
        ("a\nb", '"a\\nb"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("$HOME", '"$$HOME"'),
        ("100%", '"100%%"'),
        ("it's", '"it\'s"'),
        ("\x01", '"\\x01"'),
        ("\u2028", '"\\u2028"'),
        (8080, "8080"),
        (True, "true"),
    ],
)
def test_systemd_quote_examples(arg: Any, quoted: str) -> None:
    assert systemd_quote(arg) == quoted


def test_systemd_quote_keeps_intended_specifiers() -> None:
    assert systemd_quote("fleetpy-web-%m", specifiers=True) == "fleetpy-web-%m"
    assert systemd_quote("a %H", specifiers=True) == '"a %H"'
    assert split_exec(systemd_quote("x-%m", specifiers=True), {"m": "MID"}) == ["x-MID"]


@pytest.mark.parametrize("bad", [None, {"a": 1}, ["a"], "nul\x00"])
def test_systemd_quote_refuses_non_scalars(bad: Any) -> None:
    with pytest.raises(TemplateError):
        systemd_quote(bad)


def test_exec_args() -> None:
    assert exec_args(["sh", "-c", "echo $1; exit"]) == 'sh -c "echo $$1; exit"'
    assert exec_args([]) == ""
    with pytest.raises(TemplateError, match="expected a list"):
        exec_args("not a list")


_any_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=["Cs"])
)


@given(_any_text)
@settings(max_examples=500)
def test_systemd_quote_round_trips_any_text(text: str) -> None:
    quoted = systemd_quote(text)
    assert "\n" not in quoted and "\r" not in quoted
    assert split_exec(quoted) == [text]
    line = f"[Service]\nExecStart=/bin/echo {quoted} end\n"
    assert split_exec(parse_unit(line).values("Service", "ExecStart")[0]) == [
        "/bin/echo",
        text,
        "end",
    ]


@given(st.lists(_any_text, max_size=6))
@settings(max_examples=200)
def test_exec_args_round_trips_any_list(args: list[str]) -> None:
    assert split_exec("/bin/x " + exec_args(args)) == ["/bin/x", *args]


@pytest.mark.parametrize(
    "value, out",
    [
        ("Web server", "Web server"),
        ("100% cotton", "100%% cotton"),
        ("tab\tok", "tab\tok"),
        (42, "42"),
        (False, "false"),
    ],
)
def test_systemd_value(value: Any, out: str) -> None:
    assert systemd_value(value) == out


@pytest.mark.parametrize(
    "value, message",
    [
        ("a\nb", "contains '\\n'"),
        ("a\rb", "contains '\\r'"),
        ("", "empty value"),
        ("  ", "empty value"),
        ("ends\\", "ends with a backslash"),
        ("ends\\\t ", "ends with a backslash"),
        ("\x1b[31m", "contains"),
    ],
)
def test_systemd_value_refuses(value: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        systemd_value(value)


@given(_any_text)
@settings(max_examples=300)
def test_systemd_value_reads_back(text: str) -> None:
    try:
        value = systemd_value(text)
    except TemplateError:
        return
    unit = parse_unit(f"[Unit]\nDescription={value}\nAfter=x\n")
    assert unit.values("Unit", "After") == ["x"]
    assert unit.values("Unit", "Description") == [text.strip(_WS).replace("%", "%%")]
    assert _expand_specifiers(unit.values("Unit", "Description")[0], {"%": "%"}) == text.strip(_WS)


def test_docker_template_injection() -> None:
    values = nasty_values()
    text = render_docker(values)
    unit = parse_unit(text, "inj.service")
    # Exactly the keys the template writes: nothing injected.
    assert unit.sections() == ["Unit", "Service"]
    assert [key for key, _ in unit.options("Unit")] == ["Description", "Wants", "After"]
    assert [key for key, _ in unit.options("Service")] == [
        "Restart",
        "RestartSec",
        "ExecStartPre",
        "ExecStart",
        "ExecStop",
        "SuccessExitStatus",
    ]
    assert len(unit.values("Service", "ExecStart")) == 1
    assert unit.values("Service", "SuccessExitStatus") == ["143"]
    assert unit.values("Unit", "Description") == ["desc 100%% $HOME \\n"]
    specifiers = {"i": "", "m": "MID"}
    argv = split_exec(unit.values("Service", "ExecStart")[0], specifiers)
    assert argv == expected_argv(values, "fleetpy-web--MID")
    assert split_exec(unit.values("Service", "ExecStartPre")[0], specifiers) == [
        "-/usr/bin/docker",
        "rm",
        "-f",
        "fleetpy-web--MID",
    ]
    assert split_exec(unit.values("Service", "ExecStop")[0], specifiers) == [
        "/usr/bin/docker",
        "stop",
        "-t",
        "5",
        "fleetpy-web--MID",
    ]


def test_docker_template_defaults_and_options() -> None:
    text = render_docker(
        {
            "name": "redis",
            "image": "redis:7",
            "pull": True,
            "restart": "on-failure",
            "container_name": "cache-%H",
            "x_fleet": {
                "MachineMetadata": ["role=cache", "disk=ssd"],
                "Conflicts": "redis@*.service",
            },
        }
    )
    unit = parse_unit(text)
    assert unit.values("Unit", "Description") == ["fleetpy container redis"]
    assert unit.values("Service", "Restart") == ["on-failure"]
    assert unit.values("Service", "TimeoutStartSec") == ["0"]
    assert unit.values("Service", "ExecStartPre") == [
        "-/usr/bin/docker rm -f cache-%H",
        "/usr/bin/docker pull redis:7",
    ]
    assert split_exec(unit.values("Service", "ExecStart")[0], {"H": "host1"}) == [
        "/usr/bin/docker",
        "run",
        "--init",
        "--rm",
        "--name",
        "cache-host1",
        "redis:7",
    ]
    assert fleet_options(unit, "redis@2.service").machine_metadata == (
        ("disk", ("ssd",)),
        ("role", ("cache",)),
    )


@pytest.mark.parametrize(
    "values, message",
    [
        ({"image": "x"}, "'name' is undefined"),
        ({"name": "web"}, "'image' is undefined"),
        ({"name": "we b", "image": "x"}, "invalid name 'we b' for a container"),
        ({"name": "web", "image": "x", "restart": "sometimes"}, "restart must be one of"),
        ({"name": "web", "image": "x", "command": "sh -c x"}, "expected a list of arguments"),
        (
            {"name": "web", "image": "x", "env": {"BAD-NAME": "1"}},
            "invalid environment variable name 'BAD-NAME'",
        ),
        ({"name": "web", "image": None}, "empty (null in the values?)"),
        (
            {"name": "web", "image": "x", "x_fleet": {"Bad Key": "1"}},
            "invalid unit file key 'Bad Key'",
        ),
        (
            {"name": "web", "image": "x", "x_fleet": {"Conflicts": "a\nGlobal=true"}},
            "contains '\\n'",
        ),
        ({"name": "web", "image": "x", "description": "two\nlines"}, "contains '\\n'"),
    ],
)
def test_docker_template_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_docker(values)
    assert str(info.value).startswith("docker-service.service.j2:")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_example_values_render_and_parse() -> None:
    for values_file in sorted((UNITS / "examples").glob("*.yaml")):
        values = load_values(values_file)
        unit = parse_unit(render_docker(values), values_file.name)
        assert len(unit.values("Service", "ExecStart")) == 1
        name = f"{values['name']}@1.service"
        fleet_options(unit, name)


def test_web_template_unit_is_the_rendered_example() -> None:
    rendered = render_docker(load_values(UNITS / "examples" / "web.yaml"))
    assert (UNITS / "web@.service").read_text() == rendered


def test_example_units_parse_and_have_valid_x_fleet() -> None:
    name, hello = load_unit_file(UNITS / "hello.service")
    assert fleet_options(hello, name).is_global is False
    assert split_exec(hello.values("Service", "ExecStart")[0])[:2] == ["/bin/sh", "-c"]
    name, monitor = load_unit_file(UNITS / "monitor.service")
    assert fleet_options(monitor, name).is_global is True
    name, web = load_unit_file(UNITS / "web@.service")
    assert fleet_options(web, "web@1.service").conflicts == ("web@*.service",)
