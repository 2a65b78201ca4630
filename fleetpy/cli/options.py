"""Options and arguments more than one verb group takes, declared once."""

from typing import Annotated, Any

import typer

from .output import Output


def _units(text: str) -> Any:
    """The UNIT... argument of the unit verbs (and status)."""
    return typer.Argument(help=text, show_default=False, metavar="UNIT")


# Seconds a blocking verb waits by default (fleetctl's --block-attempts, one a second).
DEFAULT_BLOCK_ATTEMPTS = 60

BlockOption = Annotated[
    bool,
    typer.Option(
        "--no-block",
        help=("Return once the desired state is written; do not wait for the cluster."),
    ),
]
AttemptsOption = Annotated[
    int,
    typer.Option(
        "--block-attempts",
        min=0,
        help=("Seconds to wait for the cluster to reach the state; 0 waits forever."),
    ),
]
UnitsArgument = Annotated[list[str], _units("Unit files, or names of submitted units.")]
SignOption = Annotated[
    str | None,
    typer.Option(
        "--sign",
        metavar="KEY",
        help="Sign the units with this key: a name in the keys directory, or a path "
        "(default: the sign_key setting, env FLEETPY_SIGN_KEY).",
        show_default=False,
    ),
]
GlobUnitsArgument = Annotated[
    list[str], _units("Names or globs of submitted units, or unit files.")
]
FieldsOption = Annotated[
    str | None,
    typer.Option("--fields", help="Comma-separated columns to show.", show_default=False),
]
NoLegendOption = Annotated[bool, typer.Option("--no-legend", help="Do not print the header row.")]
FullOption = Annotated[bool, typer.Option("--full", "-l", help="Do not shorten ids and hashes.")]
OutputOption = Annotated[
    Output,
    typer.Option("--output", "-o", help="table, or json (an array of objects; ignores --fields)."),
]
# The fleet cluster the verbs that read one (migrate, migrate-host) read: its etcd, and
# fleet's key prefix there (its default is fleet_keyspace.DEFAULT_FLEET_PREFIX).
FromFleetOption = Annotated[
    str,
    typer.Option(
        "--from-fleet",
        help="The client URL of fleet's etcd (its v2 API), e.g. http://10.0.0.1:2379.",
        show_default=False,
        metavar="ETCD_URL",
    ),
]
FleetPrefixOption = Annotated[
    str,
    typer.Option("--fleet-prefix", help="fleet's etcd key prefix (fleetd's etcd_key_prefix)."),
]
