"""Class 4: templates run code.

`render` used Jinja's unsandboxed environment: `{{ cycler.__init__.__globals__.os.system(...) }}`
ran a shell command and `__builtins__.open` read /etc/passwd; `range(10**12)` hung, `'x'*10**12`
ate memory, includes could leave the template directory, and errors inside a template printed
thousands of lines of traceback. Each case here must end in one `fleetpy: error: FILE:LINE: ...`
line, quickly, with nothing run, read or written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from support.hostile_harness import Hostile

PWNED = "/tmp/fleetpy-hostile-pwned"

# (template text, what the error line must contain); the payload is always on line 2.
ESCAPES = [
    (f"{{{{ cycler.__init__.__globals__.os.system('touch {PWNED}') }}}}", "unsafe"),
    ("{{ cycler.__init__.__globals__.__builtins__.open('/etc/passwd').read() }}", "unsafe"),
    (f"{{{{ joiner.__init__.__globals__.os.popen('touch {PWNED}').read() }}}}", "unsafe"),
    (f"{{{{ namespace.__init__.__globals__.os.system('touch {PWNED}') }}}}", "unsafe"),
    (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "attribute '__class__' of 'str' object is unsafe",
    ),
    ("{{ ''.__class__.__base__.__subclasses__()[0] }}", "unsafe"),
    ("{{ ()|attr('__class__') }}", "attribute '__class__' of 'tuple' object is unsafe"),
    ("{{ ''['__class__'] }}", "unsafe"),
    ("{{ '{0.__class__.__init__.__globals__}'.format('') }}", "unsafe"),
    ("{{ '{a.__class__}'.format_map({'a': ''}) }}", "unsafe"),
    ("{{ self._TemplateReference__context }}", "_TemplateReference__context"),
    ("{{ self.__init__.__globals__ }}", "unsafe"),
    ("{{ config.items() }}", "'config' is undefined"),
    ("{{ lipsum.__globals__.os.system('id') }}", "'lipsum' is undefined"),
    ("{{ request.application.__globals__ }}", "'request' is undefined"),
    ("{{ url_for.__globals__ }}", "'url_for' is undefined"),
    ("{{ range.__self__ }}", "__self__"),
    ("{{ dict.__subclasses__() }}", "unsafe"),
    ("{{ dict.mro() }}", "unsafe"),
    ("{{ fail.__globals__ }}", "unsafe"),
    ("{{ x|systemd_quote.__globals__ }}", ""),
    ("{% set d = {} %}{{ d.update({'a': 1}) }}", "'update' of 'dict' object is unsafe"),
    ("{% set l = [] %}{{ l.append(1) }}", "'append' of 'list' object is unsafe"),
    ("{{ x.__class__.__mro__[-1].__subclasses__() }}", "unsafe"),
]

LIMITS = [
    ("{% for i in range(10**12) %}x{% endfor %}", "Range too big"),
    ("{{ 'x' * 10**12 }}", "1000000000000 characters or items"),
    ("{{ [1] * 10**9 }}", "1000000000 characters or items"),
    ("{{ 2 ** (10**10) }}", "larger than 4096 bits"),
    ("{{ 10 ** (10**10) }}", "larger than 4096 bits"),
    ("{% set n = 7**1000 %}{{ n * n * n * n * n }}", "larger than 4096 bits"),
    ("{{ 'a'|center(10**12) }}", "would have 1000000000000"),
    ("{{ 'a'.rjust(10**10) }}", "str.rjust() would have"),
    ("{{ 'x'|indent(10**10) }}", "would have"),
    ("{{ ('x\n' * 100)|indent('y' * 100000, true) }}", "would have 10100200"),
    ("{{ ('x' * 1000)|replace('x', 'y' * 10000) }}", "would have 10001000"),
    ("{{ '%999999999s'|format('x') }}", "asks for a width above 4096"),
    ("{{ '%.999999999f'|format(1.5) }}", "asks for a width above 4096"),
    ("{{ '%*s'|format(10**9, 'x') }}", "asks for a width above 4096"),
    ("{{ '%0999999999d' % 1 }}", "asks for a width above 4096"),
    ("{{ '{:>999999999}'.format(1) }}", "asks for a width above 4096"),
    ("{{ '{:{w}}'.format(1, w=10**9) }}", "nested field"),
    ("{{ 'a'|slice(10**9)|list }}", "would have 1000000000"),
    ("{{ {}|tojson(indent=10**9) }}", "would have 1000000000"),
    ("{{ [1]|batch(10**9, 'x')|list }}", "a batch would have 1000000000"),
    ("{{ ('x ' * 1000)|wordwrap(1, wrapstring='y' * 100000) }}", "the wrapped text would have"),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s }}",
        "the joined text would have 2097152",
    ),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s }}",
        "the sum would have 2097152",
    ),
    (
        "{% macro d(s) %}{{ s }}{{ s }}{% endmacro %}{{ " + "d(" * 30 + "'x'" + ")" * 30 + " }}",
        "the joined text would have",
    ),
    (
        "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
        "output larger than 1 MiB, fleetpy's limit for a rendered unit",
    ),
    (
        "{% for i in range(100000) %}\n{{ i }}\n{% for j in range(20) %}{{ j }}{% endfor %}\n"
        "{% endfor %}",
        "output larger than 1 MiB",
    ),
]

ERRORS = [
    ("{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}", "calls itself without end"),
    ("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", "calls itself without end"),
    ("{% include 'self.j2' %}", "calls itself without end"),
    ("{{ 1/0 }}", "division by zero"),
    ("{{ 1 % 0 }}", "modulo by zero"),
    ("{{ 10**10**10 / 0 }}", "division by zero"),
    ("{{ 2.0 ** 100000 }}", "number out of range"),
    ("{{ (1e308 * 10)|int }}", "cannot convert float infinity to integer"),
    ("{{ x|systemd_quote(1, 2, 3) }}", "systemd_quote() takes from 1 to 2 positional arguments"),
    ("{{ x|systemd_value(specifiers=1, y=2) }}", "unexpected keyword argument 'y'"),
    ("{{ x|docker_env }}", "missing 1 required positional argument"),
    ("{{ x|exec_args }}", "expected a list of arguments, not str"),
    ("{{ '-x'|docker_name }}", "invalid name '-x'"),
    ("{{ [1, 'a']|sort }}", "'<' not supported"),
    ("{{ x|nosuchfilter }}", "No filter named 'nosuchfilter'"),
    ("{{ x is nosuchtest }}", "No test named 'nosuchtest'"),
    ("{{ undefined_name }}", "'undefined_name' is undefined"),
    ("{{ x.nope.deeper }}", "has no attribute 'nope'"),
    ("{{ undefined_name|systemd_quote }}", "'undefined_name' is undefined"),
    ("{{ fail('\x1b[2J\x1b]0;owned\x07 cleared your screen') }}", "\\x1b[2J"),
    ("{{ fail('line one\nline two') }}", "line one line two"),
    ("{{ 'a\nb' }}", "would span lines"),
    ("{% if %}", "Expected an expression"),
    ("{% for %}", ""),
    ("{{ (" * 3000 + "1" + ")" * 3000 + " }}", ""),
    ("{% if 1 %}" * 300 + "x" + "{% endif %}" * 300, ""),
]


def _cases(table: list[tuple[str, str]], prefix: str) -> list[object]:
    return [
        pytest.param(text, match, id=f"{prefix}{i}-{text[:40]}")
        for i, (text, match) in enumerate(table)
    ]


@pytest.mark.parametrize(
    "text, match", _cases(ESCAPES, "escape") + _cases(LIMITS, "limit") + _cases(ERRORS, "error")
)
def test_hostile_template_is_one_line_with_file_and_line(
    seeded: Hostile, text: str, match: str
) -> None:
    name = f"t{abs(hash(text))}.service.j2"
    seeded.write(name, "[Unit]\n" + text + "\n")
    seeded.write("self.j2", "{% include 'self.j2' %}\n")
    started = time.monotonic()
    line = seeded.rejects("render", name, "--set", "x=a")
    assert time.monotonic() - started < 9, "refused by the limits, not by the time-out"
    assert line.startswith(f"fleetpy: error: {name}:") or line.startswith(
        "fleetpy: error: self.j2:"
    )
    assert match in line, line
    assert not os.path.exists(PWNED)


# Loops that never produce too much output but never end: only the time limit stops them.
ENDLESS = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro spin(n) %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}{% endmacro %}{{ spin(1) }}",
]


@pytest.mark.parametrize("text", ENDLESS, ids=["nested-ranges", "macro"])
def test_endless_loops_end_after_the_time_limit(seeded: Hostile, text: str) -> None:
    seeded.write("spin.j2", text)
    started = time.monotonic()
    seeded.rejects(
        "render",
        "spin.j2",
        "-o",
        "out.service",
        match=r"^fleetpy: error: spin\.j2: rendering took longer than 10 s "
        r"\(a loop without end\?\)$",
    )
    assert time.monotonic() - started < 20
    assert not (seeded.workdir / "out.service").exists()


# ----------------------------------------------------------------------------- includes


@pytest.fixture(scope="module")
def template_dir(seeded: Hostile) -> Path:
    root = seeded.workdir / "inc"
    units = root / "units"
    (units / "sub").mkdir(parents=True)
    (root / "secret.j2").write_text("SECRET\n")
    (units / "part.j2").write_text("part\n")
    (units / "out.j2").symlink_to(root / "secret.j2")
    (units / "passwd.j2").symlink_to("/etc/passwd")
    (units / "etc").symlink_to("/etc")
    (units / "sub" / "up.j2").symlink_to("../../secret.j2")
    (units / "zero.j2").symlink_to("/dev/zero")
    os.mkfifo(units / "fifo.j2")
    return units


INCLUDES = [
    (
        "{% include '../secret.j2' %}",
        "included template ../secret.j2 is outside the template directory",
    ),
    ("{% include './../secret.j2' %}", "is outside the template directory"),
    ("{% include 'sub/../../secret.j2' %}", "is outside the template directory"),
    (
        "{% include '/etc/passwd' %}",
        "included template /etc/passwd is outside the template directory",
    ),
    ("{% include '//etc/passwd' %}", "is outside the template directory"),
    ("{% include 'out.j2' %}", "included template out.j2 is a symbolic link to"),
    (
        "{% include 'passwd.j2' %}",
        "is a symbolic link to /etc/passwd, outside the template directory",
    ),
    (
        "{% include 'etc/passwd' %}",
        "is a symbolic link to /etc/passwd, outside the template directory",
    ),
    (
        "{% include 'etc/shadow' %}",
        "is a symbolic link to /etc/shadow, outside the template directory",
    ),
    ("{% include 'sub/up.j2' %}", "is a symbolic link to"),
    ("{% include 'zero.j2' %}", "is a symbolic link to /dev/zero"),
    ("{% include 'fifo.j2' %}", "is not a regular file (a FIFO)"),
    ("{% include 'sub' %}", "is not a regular file (a directory)"),
    ("{% include 'missing.j2' %}", "included template missing.j2 not found"),
    ("{% import '../secret.j2' as s %}", "is outside the template directory"),
    ("{% from 'out.j2' import x %}", "is a symbolic link to"),
    ("{% extends '../secret.j2' %}", "is outside the template directory"),
    ("{% include ['../secret.j2', 'part.j2'] %}", "is outside the template directory"),
    ("{% include x %}", "is outside the template directory"),  # the name from --set
]


@pytest.mark.parametrize("text, match", INCLUDES, ids=[t for t, _ in INCLUDES])
def test_includes_stay_in_the_template_directory(
    seeded: Hostile, template_dir: Path, text: str, match: str
) -> None:
    main = template_dir / "main.j2"
    main.write_text("[Unit]\n" + text + "\n")
    line = seeded.rejects("render", str(main), "--set", "x=../secret.j2")
    assert match in line, line
    assert "SECRET" not in line and "root:" not in line


def test_includes_inside_the_directory_still_work(seeded: Hostile, template_dir: Path) -> None:
    main = template_dir / "good.j2"
    main.write_text("[Unit]\n{% include 'part.j2' %}\n")
    assert seeded.ok("render", str(main)).stdout == "[Unit]\npart\n"
