"""etcd's side of the cluster: backup and restore of the desired state, and the etcd
group (each member's status, reclaiming space)."""

import sys
from typing import Annotated

import typer

from ..errors import FleetpyError
from .options import NoLegendOption, OutputOption
from .output import Output, out, print_json, print_table, say
from .wiring import edge, open_registry

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()

BACKUP_LIMIT = 512 * 1024 * 1024  # bytes: a backup file restore reads at most
BackupFileArgument = Annotated[
    str,
    typer.Argument(help="The backup file ('-': standard output or input).", show_default=False),
]


@verbs.command("backup")
@edge
def backup_command(ctx: typer.Context, file: BackupFileArgument) -> None:
    """Write the cluster's desired state to FILE: every unit (contents, desired state,
    signature), operators' machine metadata and deployments, read at one revision.
    Not the schedule, machines or states: the cluster rebuilds them."""
    from .. import backup
    from ..files import write_file_atomically

    taken = backup.take(open_registry(ctx))
    text = backup.encode(taken)
    if file == "-":
        out(text, nl=False)
        return
    write_file_atomically(file, text)
    out(
        f"Backed up {taken.count('unit')} units, {taken.count('content')} unit files, "
        f"{taken.count('metadata')} machines' metadata and {taken.count('deploy')} "
        f"deployments at etcd revision {taken.revision} to {file}"
    )


@verbs.command("restore")
@edge
def restore_command(ctx: typer.Context, file: BackupFileArgument) -> None:
    """Restore a backup into an empty prefix (an emptied or a rebuilt etcd): the engine
    places the units again, and agents keep the ones still running on their hosts."""
    from .. import backup
    from ..files import read_text_file

    if file == "-":
        text, source = sys.stdin.read(), "standard input"
    else:
        text, source = read_text_file(file, limit=BACKUP_LIMIT, what="backup"), file
    loaded = backup.decode(text, source)
    written = backup.restore(open_registry(ctx), loaded)
    out(
        f"Restored {loaded.count('unit')} units from {source} "
        f"({written} keys written, {len(loaded.keys) - written} already there)"
    )


etcd_app = typer.Typer(
    name="etcd",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="etcd's own state: each member's database size, the alarms, reclaiming space.",
)


def _size(count: int) -> str:
    """Bytes as etcdctl shows them (binary units, one decimal)."""
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@etcd_app.command("status")
@edge
def etcd_status(
    ctx: typer.Context,
    no_legend: NoLegendOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Each etcd member's version, database size and revision, and the alarms raised
    (NOSPACE: etcd refuses writes until `fleetpy etcd reclaim`)."""
    members, alarms = open_registry(ctx).etcd_status()
    urls = {m.member_id: m.url for m in members if not m.error}
    if output is Output.json:
        print_json(
            [
                {
                    "endpoint": m.url,
                    "id": f"{m.member_id:x}" if not m.error else None,
                    "version": m.version or None,
                    "db_size": m.db_size if not m.error else None,
                    "revision": m.revision if not m.error else None,
                    "leader": not m.error and m.member_id == m.leader,
                    "alarms": [
                        a.kind for a in alarms if not m.error and a.member_id == m.member_id
                    ],
                    "error": m.error or None,
                }
                for m in members
            ]
        )
        return
    print_table(
        ("endpoint", "version", "db size", "revision", "leader"),
        [
            {
                "endpoint": m.url,
                "version": m.version or "-",
                "db size": _size(m.db_size) if not m.error else f"- ({m.error})",
                "revision": str(m.revision) if not m.error else "-",
                "leader": "yes" if not m.error and m.member_id == m.leader else "no",
            }
            for m in members
        ],
        no_legend,
    )
    for alarm in alarms:
        where = urls.get(alarm.member_id, f"member {alarm.member_id:x}")
        say(f"fleetpy: warning: etcd alarm {alarm.kind} on {where}")


@etcd_app.command("reclaim")
@edge
def etcd_reclaim(ctx: typer.Context) -> None:
    """What etcd's NOSPACE alarm asks of an operator: compact etcd's history at its
    current revision, defragment each member in turn, then disarm the NOSPACE alarms.
    Watchers behind that revision read afresh; no unit stops."""
    report = open_registry(ctx).reclaim_space()
    out(f"Compacted etcd's history before revision {report.revision}")
    for url, before, after in report.sizes:
        out(f"Defragmented {url}: {_size(before)} -> {_size(after)}")
    for alarm in report.disarmed:
        out(f"Disarmed {alarm.kind} on member {alarm.member_id:x}")
    if report.unreachable:
        raise FleetpyError(
            "not defragmented, run reclaim again when they answer: " + ", ".join(report.unreachable)
        )
