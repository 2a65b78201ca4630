"""test_template.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole: tests/pure/test_template.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetpy.errors import TemplateError
from fleetpy.unitfile.template import load_values, render, render_bounded
from fleetpy.unitfile.unit import parse_unit

from support.paths import UNITS
from support.template_cases import (
    DOCKER_TEMPLATE,
    SIMPLE_ESCAPES,
    expand_env,
    expected_argv,
    nasty_values,
    render_docker,
    write,
)

SYSTEMD = "/usr/lib/systemd/systemd"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: os.mkfifo(p), r"template .*t\.j2 is not a regular file \(a FIFO\)"),
        (
            lambda p: p.symlink_to("/dev/zero"),
            r"template .*t\.j2 is not a regular file "
            r"\(a symbolic link to a character device\)",
        ),
        (lambda p: p.mkdir(), r"template .*t\.j2 is not a regular file \(a directory\)"),
        (
            lambda p: p.write_bytes(b"x" * (1024 * 1024 + 1)),
            r"template .*t\.j2 is larger than 1 MiB",
        ),
        (
            lambda p: p.write_bytes(b"\xff\xfe"),
            r"cannot read template .*t\.j2: not UTF-8 \(byte 0xff",
        ),
    ],
)
def test_the_main_template_must_be_a_regular_file(tmp_path: Path, make: Any, message: str) -> None:
    path = tmp_path / "t.j2"
    make(path)
    with pytest.raises(TemplateError, match=rf"^{message}"):
        render(path, {})
    with pytest.raises(TemplateError, match=rf"^{message}"):
        render_bounded(path, {})


# ---------------------------------------------------------------------------
# render_bounded: the same render in a child process with limits
# ---------------------------------------------------------------------------


def test_render_bounded_renders_like_render(tmp_path: Path) -> None:
    path = write(
        tmp_path, "t.service.j2", "[Service]\nExecStart=/bin/echo {{ msg | systemd_quote }}\n"
    )
    values = {"msg": "hi there", "when": __import__("datetime").date(2024, 1, 2)}
    assert render_bounded(path, values) == render(path, values)
    assert render_docker(load_values(UNITS / "examples" / "web.yaml")) == render_bounded(
        DOCKER_TEMPLATE, load_values(UNITS / "examples" / "web.yaml")
    )


def test_render_bounded_errors_are_renders_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "t.j2", "\n{{ nope }}\n")
    with pytest.raises(TemplateError, match=r"^units/t\.j2:2: 'nope' is undefined$"):
        render_bounded(path, {}, "units/t.j2")
    with pytest.raises(TemplateError, match="must be a mapping"):
        render_bounded(path, ["a"])  # type: ignore[arg-type]


def test_render_bounded_stops_a_loop_without_end(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.j2",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    started = time.monotonic()
    with pytest.raises(
        TemplateError,
        match=r"^units/x\.j2: rendering took longer than 1\.5 s "
        r"\(a loop without end\?\)$",
    ):
        render_bounded(path, {}, "units/x.j2", timeout=1.5)
    assert time.monotonic() - started < 5


def test_render_bounded_limits_memory(tmp_path: Path) -> None:
    # 200 lists of 100,000 items: each list is within the limits, together ~160 MB.
    path = write(
        tmp_path, "t.j2", "{% set big = [range(100000)|list] * 200 %}{{ big|string|length }}"
    )
    with pytest.raises(TemplateError, match=r"^t\.j2:1: out of memory$"):
        render_bounded(path, {}, "t.j2", memory=100 * 1024 * 1024)


def test_render_bounded_does_not_import_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "jinja2.py", "raise SystemExit('imported from the working directory')\n")
    write(tmp_path, "t.j2", "ok\n")
    monkeypatch.chdir(tmp_path)
    assert render_bounded("t.j2", {}) == "ok\n"


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
            out += SIMPLE_ESCAPES.get(nxt, nxt).encode()
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


def systemd_dump_exec(
    unit_dir: Path, unit_name: str, unit_file: str, text: str
) -> dict[str, list[list[str]]]:
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
        pytest.skip(
            f"systemd --test gave no dump (rc={result.returncode}): {result.stderr.strip()[:200]}"
        )
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
    argv = [expand_env(word) for word in argv]
    container = argv[5]
    assert re.fullmatch(r"fleetpy-web-7-[0-9a-f]{32}", container), container
    assert argv == expected_argv(values, container)
    assert [expand_env(word) for word in commands["ExecStop"][0]] == [
        "/usr/bin/docker",
        "stop",
        "-t",
        "5",
        container,
    ]
    assert len(commands["ExecStartPre"]) == 1


def test_systemd_reads_the_example_units(unit_dir: Path) -> None:
    commands = systemd_dump_exec(
        unit_dir, "hello.service", "hello.service", (UNITS / "hello.service").read_text()
    )
    [argv] = commands["ExecStart"]
    assert [expand_env(word) for word in argv] == [
        "/bin/sh",
        "-c",
        'while true; do echo "hello from $(hostname)"; sleep 5; done',
    ]
    commands = systemd_dump_exec(
        unit_dir, "monitor.service", "monitor.service", (UNITS / "monitor.service").read_text()
    )
    assert len(commands["ExecStart"]) == 1
    commands = systemd_dump_exec(
        unit_dir, "web@3.service", "web@.service", (UNITS / "web@.service").read_text()
    )
    assert commands["ExecStart"][0][5].startswith("fleetpy-web-3-")


# ---------------------------------------------------------------------------
# The examples' own instructions work as written
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "example", sorted((UNITS / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_values_render_as_their_comments_say(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # units/examples/web.yaml once documented a `-f` flag render never had.
    import shlex

    from typer.testing import CliRunner

    from fleetpy.cli import app

    monkeypatch.chdir(UNITS.parent)
    commands = [
        shlex.split(line.lstrip("# "))
        for line in example.read_text().splitlines()
        if line.startswith("#") and line.lstrip("# ").startswith("fleetpy render ")
    ]
    assert commands, f"{example.name} does not say how to render it"
    for argv in commands:
        if "-o" in argv:
            argv[argv.index("-o") + 1] = str(tmp_path / "out.service")
        result = CliRunner().invoke(app, argv[1:])
        assert result.exit_code == 0, (argv, result.output)
        rendered = (tmp_path / "out.service").read_text() if "-o" in argv else result.stdout
        parse_unit(rendered)
        named = re.search(r"rendered into (units/\S+?):", example.read_text())
        if named:  # the committed unit is exactly what the command renders
            assert rendered == (UNITS.parent / named.group(1)).read_text()
