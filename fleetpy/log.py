"""Structured logs: one line per event, key=value, to stderr; and the one rule for
putting text from outside (file names, etcd values, environment) on a terminal."""

from __future__ import annotations

import re
import sys
import time
from typing import Any

# C0 and C1 control characters, DEL, and the bidirectional overrides that can make a
# terminal show text other than what is there ("Trojan source").
_CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")


def escape_controls(text: str, keep: str = "") -> str:
    """Text safe to print: control characters (except those in `keep`) as visible
    escapes, so a crafted name cannot retitle or rewrite the user's terminal."""

    def visible(match: re.Match[str]) -> str:
        char = match.group()
        if char in keep:
            return char
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(visible, text)


# A value with none of what _quote changes: written as it is (most are: ids, names, numbers).
_PLAIN = re.compile(f'[^{_CONTROL_CHARS} "=\\\\]+')


def _quote(value: Any) -> str:
    raw = str(value)
    if _PLAIN.fullmatch(raw):
        return raw
    text = escape_controls(raw.replace("\\", "\\\\"))
    if text == "" or any(c in text for c in ' "=\\'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def stamp() -> str:
    """Now, in epoch seconds to the millisecond: a log field saying when a step happened
    (bench/bench_hosts.py lines up the agent's steps with its own clock on one machine);
    compared with nothing."""
    return f"{time.time():.3f}"


def format_event(event: str, fields: dict[str, Any]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    parts = [f"ts={stamp}", f"event={event}"]
    parts += [f"{key}={_quote(value)}" for key, value in fields.items() if value is not None]
    return " ".join(parts)


def log_event(event: str, /, **fields: Any) -> None:
    print(format_event(event, fields), file=sys.stderr, flush=True)
