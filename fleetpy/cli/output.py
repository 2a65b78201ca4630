"""What the CLI prints: stdout and stderr escaped (text from outside cannot steer the
terminal), a failed write as one clean error, tables and JSON, the --fields choice."""

import json
import os
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import typer

from ..errors import FleetpyError
from ..log import escape_controls


class UsageError(FleetpyError):
    """Bad command-line usage found after parsing (exit EXIT_USAGE, as Click's own)."""


class OutputError(FleetpyError):
    """Standard output cannot be written (a full disk, /dev/full, a closed pipe)."""


class Output(StrEnum):
    table = "table"
    json = "json"


def say(message: str) -> None:
    """One line on stderr; text from outside (names, etcd values) cannot steer the terminal."""
    typer.echo(escape_controls(message), err=True)


def out(text: str, nl: bool = True, keep: str = "") -> None:
    """Standard output, escaped; a failed write is one clean error, not a traceback."""
    try:
        typer.echo(escape_controls(text, keep), nl=nl)
    except OSError as exc:
        # The unwritten text stays buffered; send it to /dev/null so the interpreter's
        # final flush does not fail again with a traceback of its own.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise OutputError(f"cannot write output: {exc.strerror or exc}") from None


def fail(message: str, code: int = 1) -> typer.Exit:
    say(f"fleetpy: error: {message}")
    return typer.Exit(code)


def chosen_fields(spec: str | None, valid: Sequence[str], default: Sequence[str]) -> list[str]:
    if spec is None:
        return list(default)
    fields = [f.strip().lower() for f in spec.split(",") if f.strip()]
    if not fields:
        raise UsageError(f"--fields is empty (valid fields: {', '.join(valid)})")
    for field in fields:
        if field not in valid:
            raise UsageError(f"unknown field {field!r} (valid fields: {', '.join(valid)})")
    return fields


def print_table(fields: Sequence[str], rows: Sequence[Mapping[str, str]], no_legend: bool) -> None:
    lines = [] if no_legend else [[f.upper() for f in fields]]
    lines += [[row[f] for f in fields] for row in rows]
    if not lines:
        return
    # Escape before measuring, so columns line up with what is shown; one pass over all
    # the cells finds whether any needs it (100,000 rows: not a regex per cell).
    every = "".join("".join(line) for line in lines)
    if escape_controls(every) != every:
        lines = [[escape_controls(cell) for cell in line] for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(fields) - 1)]
    if not widths:
        shown = [line[0] for line in lines]
    else:
        template = "  ".join(f"{{:<{width}}}" for width in widths) + "  {}"
        shown = [template.format(*line).rstrip() for line in lines]
    # One write of the whole table (a write per line costs more than the rest at 100,000).
    out("\n".join(shown), keep="\n")


def print_json(items: Sequence[Mapping[str, Any]]) -> None:
    out(json.dumps(list(items), indent=2), keep="\n")
