"""What the template tests share (tests/pure and tests/integration test_template.py): a
reference expansion of $VAR words, the docker template rendered, and hostile values with
the argv systemd must read back from them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetpy.unitfile.template import render

from support.paths import UNITS

DOCKER_TEMPLATE = UNITS / "docker-service.service.j2"


SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
}


def expand_env(word: str) -> str:
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
