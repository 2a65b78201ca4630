"""history: a unit's audit trail (who changed its desired state, from where, when), as a
table or JSON; the work is in fleetpy.client.history."""

from typing import Annotated

import typer

from .options import FullOption, NoLegendOption
from .output import Output, out, print_table, say
from .wiring import edge, open_registry

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()

FIELDS = ("time", "verb", "user", "host", "desired", "hash", "keys", "revision")
HistoryOutput = Annotated[
    Output,
    typer.Option(
        "--output", "-o", help="table, or json (one object: the unit, its entries, unrecorded)."
    ),
]


@verbs.command()
@edge
def history(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(help="A unit's name (submitted now or before).")],
    no_legend: NoLegendOption = False,
    full: FullOption = False,
    output: HistoryOutput = Output.table,
) -> None:
    """Who changed a unit's desired state, from which host, when, to what (its last
    changes, oldest first; USER is the etcd user, KEYS the signing keys' ids)."""
    import json

    from ..client.history import entry_time, history_json, unit_history

    found = unit_history(open_registry(ctx), unit)
    if output is Output.json:
        out(json.dumps(history_json(found), indent=2), keep="\n")
        return
    rows = [
        {
            "time": entry_time(e),
            "verb": e.verb,
            "user": e.user or (f"({e.local_user})" if e.local_user else "-"),
            "host": e.host or "-",
            "desired": e.desired or "-",
            "hash": (e.hash if full else (e.hash or "")[:7]) or "-",
            "keys": ",".join(e.keys) or "-",
            "revision": str(e.revision or "-"),
        }
        for e in found.entries
    ]
    print_table(FIELDS, rows, no_legend)
    if found.unrecorded:
        at = "" if found.revision is None else f" at revision {found.revision}"
        gone = "deleted" if found.revision is None else "written"
        say(
            f"fleetpy: warning: unit {unit}'s record was {gone}{at} without an entry here "
            "(etcd written directly, or by a fleetpy from before audit trails)"
        )
