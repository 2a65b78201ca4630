"""The listings: list-unit-files, list-units, list-machines (a table, or JSON), made from
one table of what each reads and shows; keys list is made the same way."""

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import typer

from ..client import listings
from .options import FieldsOption, FullOption, NoLegendOption, OutputOption
from .output import Output, chosen_fields, print_json, print_table
from .wiring import edge, open_registry

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()


@dataclass(frozen=True)
class Listing:
    name: str
    doc: str
    read: Callable[[typer.Context], Sequence[Any]]  # the rows, read after the options are checked
    as_json: Callable[[Any], Mapping[str, Any]]
    as_row: Callable[[Any, bool], Mapping[str, str]]  # a table's row, ids in full or not
    fields: Sequence[str]  # every column
    default: Sequence[str] | None = (
        None  # the columns shown without --fields; None: no --fields and --full
    )
    # Default columns shown only when some row has something in them (a machine's cordon):
    # the usual table stays fleetctl's, for the scripts that read it.
    sparse: Mapping[str, Callable[[Any], bool]] = field(default_factory=dict)


def listing_command(listing: Listing) -> Callable[..., None]:
    """The command of a listing: --fields and --full (where it has them), --no-legend, -o."""

    def command(
        ctx: typer.Context,
        fields: str | None = None,
        no_legend: bool = False,
        full: bool = False,
        output: Output = Output.table,
    ) -> None:
        chosen = chosen_fields(fields, listing.fields, listing.default or listing.fields)
        rows = listing.read(ctx)
        if fields is None:
            chosen = [
                f for f in chosen if f not in listing.sparse or any(map(listing.sparse[f], rows))
            ]
        if output is Output.json:
            print_json([listing.as_json(r) for r in rows])
            return
        print_table(chosen, [listing.as_row(r, full) for r in rows], no_legend)

    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("ctx", keyword, annotation=typer.Context)]
    if listing.default is not None:
        params.append(inspect.Parameter("fields", keyword, default=None, annotation=FieldsOption))
    params.append(inspect.Parameter("no_legend", keyword, default=False, annotation=NoLegendOption))
    if listing.default is not None:
        params.append(inspect.Parameter("full", keyword, default=False, annotation=FullOption))
    params.append(
        inspect.Parameter("output", keyword, default=Output.table, annotation=OutputOption)
    )
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = command.__qualname__ = listing.name.replace("-", "_")
    command.__doc__ = listing.doc
    return edge(command)


def _fields_asked(ctx: typer.Context) -> list[str]:
    """The --fields a listing was given (none: its defaults)."""
    asked = ctx.params.get("fields")
    return [f.strip().lower() for f in asked.split(",")] if isinstance(asked, str) else []


def _short(text: str | None, full: bool, length: int) -> str:
    return (text if full else (text or "")[:length]) or "-"


def _machine(row: listings.UnitRow, full: bool) -> str:
    shown = row.machine if full else row.machine[:8]
    return f"{shown}/{row.ip}" if row.ip else shown


def _unit_files(ctx: typer.Context) -> list[listings.UnitFileRow]:
    read = open_registry(ctx).read_listing(units=True, placed=True, reasons=True, states=True)
    return listings.unit_file_rows(read)


def _units(ctx: typer.Context) -> list[listings.UnitRow]:
    return listings.unit_rows(open_registry(ctx).read_listing(states=True, machines=True))


UNIT_FILE_FIELDS = ("unit", "hash", "dstate", "state", "target", "reason", "owner", "origin")
LISTINGS = (
    Listing(
        "list-unit-files",
        """List submitted units: hash, desired state, reported state, target machine (and,
    with --fields, why an unplaced unit is not placed, the deployment that owns a unit
    and the commit it came from).""",
        _unit_files,
        lambda r: {
            "unit": r.unit,
            "hash": r.hash,
            "desired_state": r.desired_state,
            "state": r.state,
            "machine": r.machine,
            "reason": r.reason,
            "owner": r.owner,
            "origin": r.origin,
        },
        lambda r, full: {
            "unit": r.unit,
            "hash": r.hash if full else r.hash[:7],
            "dstate": r.desired_state,
            "state": r.state,
            "target": "-" if r.machine is None else (r.machine if full else r.machine[:8]),
            "reason": r.reason or "-",
            "owner": r.owner or "-",
            "origin": _short(r.origin, full, 12),
        },
        UNIT_FILE_FIELDS,
        UNIT_FILE_FIELDS[:5],
    ),
    Listing(
        "list-units",
        "List the units machines report, with systemd's LOAD/ACTIVE/SUB (a container's "
        "HEALTH with --fields).",
        _units,
        lambda r: {
            "unit": r.unit,
            "machine": r.machine,
            "load": r.load,
            "active": r.active,
            "sub": r.sub,
            "message": r.message,
            "health": r.health,
        },
        lambda r, full: {
            "unit": r.unit,
            "machine": _machine(r, full),
            "load": r.load or "-",
            "active": r.active or "-",
            "sub": r.sub or "-",
            "hash": _short(r.hash, full, 7),
            "message": r.message or "-",
            "health": r.health or "-",
        },
        ("unit", "machine", "load", "active", "sub", "hash", "message", "health"),
        ("unit", "machine", "active", "sub"),
    ),
    Listing(
        "list-machines",
        "List the machines alive in the cluster (and each one's cordon: cordoned, "
        "draining, in maintenance; its CPUs and memory, and what fleetpy's units use of "
        "them, with --fields).",
        lambda ctx: listings.machine_rows(
            open_registry(ctx),
            reservations=bool({"reserved", "free"} & set(_fields_asked(ctx))),
        ),
        lambda r: {
            "machine": r.machine,
            "ip": r.ip,
            "metadata": dict(r.metadata),
            "cordon": listings.cordon_json(r.cordon),
            "capacity": listings.resources_json(r.capacity),
            "used": listings.resources_json(r.used),
        },
        lambda r, full: {
            "machine": r.machine if full else r.machine[:8],
            "ip": r.ip or "-",
            "metadata": ",".join(f"{k}={v}" for k, v in sorted(r.metadata.items())) or "-",
            "cordon": listings.cordon_text(r.cordon),
            "cpus": listings.resources_text(r.capacity, memory=False),
            "memory": listings.resources_text(r.capacity, memory=True),
            "cpu-used": listings.resources_text(r.used, memory=False),
            "memory-used": listings.resources_text(r.used, memory=True),
            "reserved": listings.reserved_text(r.reserved),
            "free": listings.free_text(r.capacity, r.reserved),
        },
        (
            *("machine", "ip", "metadata", "cordon"),
            *("cpus", "memory", "cpu-used", "memory-used", "reserved", "free"),
        ),
        ("machine", "ip", "metadata", "cordon"),
        {"cordon": lambda r: r.cordon is not None},
    ),
)
for _listing in LISTINGS:
    verbs.command(_listing.name)(listing_command(_listing))
