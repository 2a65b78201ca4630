"""The fleetpy command line: argument parsing and printing only; the work is in the client
library (fleetpy.client), which never imports the CLI.

Global options (etcd, ssh, signing) go before or after the verb, as with fleetctl. They,
and the agent's and engine's options, are generated from config.SETTINGS so CLI,
environment and YAML stay one table. Every FleetpyError becomes one `fleetpy: error: ...`
line on stderr; usage errors exit EXIT_USAGE.

One module per verb group (units, listings, history, drain, deploy, etcd, remote, render, daemons, and the
groups keys and cluster), the app and its option wiring in wiring, what is printed and how
in output, options several groups share in options.
"""

from collections.abc import Sequence

from . import cluster, daemons, deploy, drain, etcd, history, keys, listings, remote, render, units
from .wiring import app

# The verbs in the order `fleetpy --help` lists them, then the groups.
for module in (units, listings, history, drain, deploy, etcd, remote, render, daemons):
    app.add_typer(module.verbs)
app.add_typer(etcd.etcd_app)
app.add_typer(keys.keys_app)
app.add_typer(deploy.git_app)
app.add_typer(cluster.cluster_app)

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """The `fleetpy` command. Ends the process itself (see fleetpy.exits)."""
    from ..exits import exit_process

    try:
        app(args=None if argv is None else list(argv), prog_name="fleetpy")
    except SystemExit as exc:
        exit_process(exc.code)
    exit_process(0)


if __name__ == "__main__":
    main()
