"""Unit templates: rendering, error messages, values, and quoting that systemd
reads back as exactly the original values (checked against a reference
splitter and, where it runs, systemd itself)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpy.errors import TemplateError
from fleetpy.template import (
    exec_args,
    load_values,
    merge_values,
    parse_set,
    render,
    systemd_quote,
    systemd_value,
)
from fleetpy.unit import fleet_options, load_unit_file, parse_unit

UNITS = Path(__file__).resolve().parent.parent / "units"
DOCKER_TEMPLATE = UNITS / "docker-service.service.j2"
SYSTEMD = "/usr/lib/systemd/systemd"

# ---------------------------------------------------------------------------
# A reference reading of Exec lines, written from systemd.service(5) "COMMAND
# LINES" and systemd.unit(5) "SPECIFIERS", independent of fleetpy's quoting.
# ---------------------------------------------------------------------------

_WS = " \t\n\r"
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'", "s": " "}


def _unescape_at(line: str, i: int) -> tuple[str, int]:
    """C escape starting after the backslash at line[i-1]; returns (char, next index)."""
    char = line[i]
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], i + 1
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
        assert not (line[i] == ";" and (i + 1 == n or line[i + 1] in _WS)), f"command separator in {line!r}"
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
    return [_expand_env(_expand_specifiers(word, table)) for word in words]


def _expand_specifiers(word: str, table: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        assert match.group(1), f"lone % at the end of {word!r}"
        assert match.group(1) in table, f"specifier %{match.group(1)} would be expanded in {word!r}"
        return table[match.group(1)]

    return re.sub(r"%(.|$)", replace, word, flags=re.S)


def _expand_env(word: str) -> str:
    def replace(match: re.Match[str]) -> str:
        assert match.group() == "$$", f"variable reference in {word!r}"
        return "$"

    return re.sub(r"\$\$|\$", replace, word)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def render_docker(values: Mapping[str, Any]) -> str:
    return render(DOCKER_TEMPLATE, values, "docker-service.service.j2")


# ---------------------------------------------------------------------------
# rendering and its errors
# ---------------------------------------------------------------------------


def test_render_basic(tmp_path: Path) -> None:
    path = write(tmp_path, "t.service.j2", "[Service]\nExecStart=/bin/echo {{ msg | systemd_quote }}\n")
    assert render(path, {"msg": "hi there"}) == '[Service]\nExecStart=/bin/echo "hi there"\n'


def test_render_keeps_trailing_newline_and_no_autoescape(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "{{ a }}<b>&\n\n")
    assert render(path, {"a": "<x>"}) == "<x><b>&\n\n"


def test_block_tags_leave_no_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "[S]\n{% for x in xs %}\n  K={{ x }}\n{% endfor %}\nEnd=1\n")
    assert render(path, {"xs": ["a", "b"]}) == "[S]\n  K=a\n  K=b\nEnd=1\n"


def test_missing_value_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "web.service.j2", "[Unit]\n\n[Service]\n# image:\nExecStart=/bin/run {{ image }}\n")
    with pytest.raises(TemplateError, match=r"^web\.service\.j2:5: 'image' is undefined$"):
        render(path, {}, "web.service.j2")


def test_missing_value_inside_a_filter_and_a_loop(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "a\n{% for p in ports %}\n{{ p | systemd_quote }}\n{% endfor %}\n{{ x | systemd_quote }}\n")
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
    with pytest.raises(TemplateError, match=rf"^cannot read template {re.escape(str(missing))}: No such file or directory$"):
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
    with pytest.raises(TemplateError, match=r"^t\.j2:2: value 'a\\nExecStartPre=/bin/evil' would span lines"):
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
# values files and --set
# ---------------------------------------------------------------------------


def test_load_values(tmp_path: Path) -> None:
    path = write(tmp_path, "values.yaml", "name: web\nports: ['80:80']\nenv: {A: 1}\n")
    assert load_values(path) == {"name": "web", "ports": ["80:80"], "env": {"A": 1}}
    assert load_values(write(tmp_path, "empty.yaml", "# nothing\n")) == {}


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "values.yaml", "name: web\nimage: nginx\nbad: key: value\n")
    with pytest.raises(TemplateError, match=rf"^{re.escape(str(path))}:3: mapping values are not allowed here$"):
        load_values(path)


def test_yaml_duplicate_key_and_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r":3: duplicate key 'name'$"):
        load_values(write(tmp_path, "dup.yaml", "name: a\nimage: b\nname: c\n"))
    with pytest.raises(TemplateError, match="top level must be a mapping"):
        load_values(write(tmp_path, "list.yaml", "- a\n- b\n"))
    with pytest.raises(TemplateError, match="top-level key 1 is not a string"):
        load_values(write(tmp_path, "intkey.yaml", "1: a\n"))
    with pytest.raises(TemplateError, match=r"^cannot read values file .*missing\.yaml: No such file or directory$"):
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
    [("007", "007"), ("1.5", "1.5"), ("yes", "yes"), ("null", "null"), ("True", "True"), ("", ""),
     ("[1, 2]", "[1, 2]"), ("a=b", "a=b"), ("0", 0), ("-12", -12), ("false", False)],
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


_any_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)))


@given(_any_text)
@settings(max_examples=500)
def test_systemd_quote_round_trips_any_text(text: str) -> None:
    quoted = systemd_quote(text)
    assert "\n" not in quoted and "\r" not in quoted
    assert split_exec(quoted) == [text]
    line = f"[Service]\nExecStart=/bin/echo {quoted} end\n"
    assert split_exec(parse_unit(line).values("Service", "ExecStart")[0]) == ["/bin/echo", text, "end"]


@given(st.lists(_any_text, max_size=6))
@settings(max_examples=200)
def test_exec_args_round_trips_any_list(args: list[str]) -> None:
    assert split_exec("/bin/x " + exec_args(args)) == ["/bin/x", *args]


@pytest.mark.parametrize(
    "value, out",
    [("Web server", "Web server"), ("100% cotton", "100%% cotton"), ("tab\tok", "tab\tok"), (42, "42"), (False, "false")],
)
def test_systemd_value(value: Any, out: str) -> None:
    assert systemd_value(value) == out


@pytest.mark.parametrize(
    "value, message",
    [("a\nb", "contains '\\n'"), ("a\rb", "contains '\\r'"), ("", "empty value"), ("  ", "empty value"),
     ("ends\\", "ends with a backslash"), ("\x1b[31m", "contains")],
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


# ---------------------------------------------------------------------------
# the docker template and the example units
# ---------------------------------------------------------------------------

NASTY = [
    'x"; rm -rf / #',
    "$(touch /tmp/pwned)",
    "a\nExecStartPre=/bin/evil",
    "%n",
    "${HOME}",
    "$HOME",
    "'quoted'",
    "back\\slash",
    "trailing\\",
    "\\\\",
    "$$",
    "%%",
    ";",
    "",
    " spaced out ",
    "tab\there",
    "cr\rlf\r\n",
    "\x01\x7f",
    "é ü 日本",
    "\u2028line separator",
    "`backtick`",
    '"',
    "'",
    '\\"',
    "-",
    "#comment",
    "[X-Fleet]",
    "Global=true",
]


def nasty_values() -> dict[str, Any]:
    return {
        "name": "web",
        "image": "img:1 $(evil) %n\nExecStart=/bin/evil",
        "command": NASTY,
        "ports": NASTY[:5],
        "env": {f"V{i}": value for i, value in enumerate(NASTY)},
        "volumes": NASTY[5:9],
        "docker_args": NASTY[9:12],
        "description": "desc 100% $HOME \\n",
    }


def expected_argv(values: Mapping[str, Any], container: str) -> list[str]:
    argv = ["/usr/bin/docker", "run", "--init", "--rm", "--name", container]
    for port in values["ports"]:
        argv += ["--publish", port]
    for key, value in sorted(values["env"].items()):
        argv += ["--env", f"{key}={value}"]
    for volume in values["volumes"]:
        argv += ["--volume", volume]
    argv += values["docker_args"]
    argv.append(values["image"])
    argv += values["command"]
    return argv


def test_docker_template_injection() -> None:
    values = nasty_values()
    text = render_docker(values)
    unit = parse_unit(text, "inj.service")
    # Exactly the keys the template writes: nothing injected.
    assert unit.sections() == ["Unit", "Service"]
    assert [key for key, _ in unit.options("Unit")] == ["Description", "Wants", "After"]
    assert [key for key, _ in unit.options("Service")] == [
        "Restart", "RestartSec", "ExecStartPre", "ExecStart", "ExecStop", "SuccessExitStatus",
    ]
    assert len(unit.values("Service", "ExecStart")) == 1
    assert unit.values("Service", "SuccessExitStatus") == ["143"]
    assert unit.values("Unit", "Description") == ["desc 100%% $HOME \\n"]
    specifiers = {"i": "", "m": "MID"}
    argv = split_exec(unit.values("Service", "ExecStart")[0], specifiers)
    assert argv == expected_argv(values, "fleetpy-web--MID")
    assert split_exec(unit.values("Service", "ExecStartPre")[0], specifiers) == [
        "-/usr/bin/docker", "rm", "-f", "fleetpy-web--MID",
    ]
    assert split_exec(unit.values("Service", "ExecStop")[0], specifiers) == [
        "/usr/bin/docker", "stop", "-t", "5", "fleetpy-web--MID",
    ]


def test_docker_template_defaults_and_options() -> None:
    text = render_docker({"name": "redis", "image": "redis:7", "pull": True, "restart": "on-failure",
                          "container_name": "cache-%H", "x_fleet": {"MachineMetadata": ["role=cache", "disk=ssd"],
                                                                    "Conflicts": "redis@*.service"}})
    unit = parse_unit(text)
    assert unit.values("Unit", "Description") == ["fleetpy container redis"]
    assert unit.values("Service", "Restart") == ["on-failure"]
    assert unit.values("Service", "TimeoutStartSec") == ["0"]
    assert unit.values("Service", "ExecStartPre") == ["-/usr/bin/docker rm -f cache-%H", "/usr/bin/docker pull redis:7"]
    assert split_exec(unit.values("Service", "ExecStart")[0], {"H": "host1"}) == [
        "/usr/bin/docker", "run", "--init", "--rm", "--name", "cache-host1", "redis:7",
    ]
    assert fleet_options(unit, "redis@2.service").machine_metadata == (("disk", ("ssd",)), ("role", ("cache",)))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"image": "x"}, "'name' is undefined"),
        ({"name": "web"}, "'image' is undefined"),
        ({"name": "we b", "image": "x"}, "invalid name 'we b' for a container"),
        ({"name": "web", "image": "x", "restart": "sometimes"}, "restart must be one of"),
        ({"name": "web", "image": "x", "command": "sh -c x"}, "expected a list of arguments"),
        ({"name": "web", "image": "x", "env": {"BAD-NAME": "1"}}, "invalid environment variable name 'BAD-NAME'"),
        ({"name": "web", "image": None}, "empty (null in the values?)"),
        ({"name": "web", "image": "x", "x_fleet": {"Bad Key": "1"}}, "invalid unit file key 'Bad Key'"),
        ({"name": "web", "image": "x", "x_fleet": {"Conflicts": "a\nGlobal=true"}}, "contains '\\n'"),
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


# ---------------------------------------------------------------------------
# systemd itself: `systemd --test` loads units without a booted systemd and
# dumps each Exec command after quoting, escapes and specifiers were applied.
# ---------------------------------------------------------------------------


def _decode_dump_word(word: str) -> str:
    # Inverse of systemd's shell_maybe_quote(): "..." with backslash escapes
    # (\" \\ \$ \` and C escapes such as \n or octal \001).
    if not word.startswith('"'):
        return word
    assert word.endswith('"') and len(word) >= 2, word
    body, out, i = word[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in "01234567":
            out.append(int(body[i + 1 : i + 4], 8))
            i += 4
        elif nxt == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            out += _SIMPLE_ESCAPES.get(nxt, nxt).encode()
            i += 2
    return out.decode()


def _split_dump_line(line: str) -> list[str]:
    return [_decode_dump_word(word) for word in re.findall(r'"(?:[^"\\]|\\.)*"|[^ ]+', line)]


@pytest.fixture
def unit_dir() -> Iterator[Path]:
    # Outside pytest's private (0700) tmp tree, so that nobody can read it (see below).
    path = Path(tempfile.mkdtemp(prefix="fleetpy-systemd-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def systemd_dump_exec(unit_dir: Path, unit_name: str, unit_file: str, text: str) -> dict[str, list[list[str]]]:
    """Exec commands of `unit_name` as loaded by the real systemd, or skip."""
    if not os.path.exists(SYSTEMD):
        pytest.skip(f"{SYSTEMD} not installed")
    (unit_dir / unit_file).write_text(text)
    command = [SYSTEMD, "--test", "--system", f"--unit={unit_name}", "--log-target=null"]
    if os.geteuid() == 0:
        # systemd refuses test mode as root; run it as nobody.
        if not shutil.which("setpriv"):
            pytest.skip("running as root and setpriv is missing")
        for path in (unit_dir, unit_dir / unit_file):
            path.chmod(0o755)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"systemd --test did not run: {exc}")
    marker = f"-> Unit {unit_name}:"
    if marker not in result.stdout:
        pytest.skip(f"systemd --test gave no dump (rc={result.returncode}): {result.stderr.strip()[:200]}")
    section = result.stdout.split(marker, 1)[1].split("\n\t-> Unit ", 1)[0]
    assert "Unit Load State: loaded" in section, section[:500]
    commands: dict[str, list[list[str]]] = {}
    current = None
    for line in section.split("\n"):  # not splitlines(): values may hold U+2028
        match = re.fullmatch(r"\t\t-> (Exec\w+):", line)
        if match:
            current = commands.setdefault(match.group(1), [])
        elif current is not None and line.startswith("\t\t\tCommand Line: "):
            current.append(_split_dump_line(line[len("\t\t\tCommand Line: ") :]))
        elif not line.startswith("\t\t\t"):
            current = None
    return commands


def test_systemd_reads_the_injection_unit_as_intended(unit_dir: Path) -> None:
    values = nasty_values()
    text = render_docker(values)
    commands = systemd_dump_exec(unit_dir, "inj@7.service", "inj@.service", text)
    [argv] = commands["ExecStart"]
    # systemd expands $VAR / $$ only when it execs; the dump shows the argv before that.
    argv = [_expand_env(word) for word in argv]
    container = argv[5]
    assert re.fullmatch(r"fleetpy-web-7-[0-9a-f]{32}", container), container
    assert argv == expected_argv(values, container)
    assert [_expand_env(word) for word in commands["ExecStop"][0]] == ["/usr/bin/docker", "stop", "-t", "5", container]
    assert len(commands["ExecStartPre"]) == 1


def test_systemd_reads_the_example_units(unit_dir: Path) -> None:
    commands = systemd_dump_exec(unit_dir, "hello.service", "hello.service", (UNITS / "hello.service").read_text())
    [argv] = commands["ExecStart"]
    assert [_expand_env(word) for word in argv] == [
        "/bin/sh", "-c", 'while true; do echo "hello from $(hostname)"; sleep 5; done',
    ]
    commands = systemd_dump_exec(unit_dir, "monitor.service", "monitor.service", (UNITS / "monitor.service").read_text())
    assert len(commands["ExecStart"]) == 1
    commands = systemd_dump_exec(unit_dir, "web@3.service", "web@.service", (UNITS / "web@.service").read_text())
    assert commands["ExecStart"][0][5].startswith("fleetpy-web-3-")
