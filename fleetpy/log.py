"""Structured logs: one line per event, key=value, to stderr."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_event(event: str, fields: dict[str, Any]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    parts = [f"ts={stamp}", f"event={event}"]
    parts += [f"{key}={_quote(value)}" for key, value in fields.items() if value is not None]
    return " ".join(parts)


def log_event(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    print(format_event(event, fields), file=stream or sys.stderr, flush=True)
