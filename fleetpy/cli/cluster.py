"""The cluster group: a whole cluster on this machine (up, status, down)."""

from typing import Annotated

import typer

from .output import out, print_table, say
from .wiring import edge

cluster_app = typer.Typer(
    name="cluster",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="A whole cluster on this machine (root): etcd, engines, hosts with their own IPs.",
)
NameOption = Annotated[
    str, typer.Option("--name", help="The cluster's name (1-8 lowercase letters and digits).")
]


@cluster_app.command("up")
@edge
def cluster_up(
    name: NameOption = "fleetpy",
    hosts: Annotated[int, typer.Option("--hosts", min=1, max=200)] = 3,
    etcd_members: Annotated[int, typer.Option("--etcd-members", min=1, max=3)] = 1,
    subnet: Annotated[
        str, typer.Option("--subnet", help="A private IPv4 range.")
    ] = "10.213.0.0/24",
    ttl: Annotated[int, typer.Option("--ttl", min=2, max=3600, help="The agents' TTL.")] = 5,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="etcd over TLS only (clients and peers), with its auth on: a role per kind "
            "of client, a client certificate per engine, agent and you (in the env file).",
        ),
    ] = False,
) -> None:
    """Start etcd, two engines and HOSTS hosts (real systemd, sshd, docker, the agent),
    each in its own network namespace with its own address; print how to use it."""
    from ..cluster import local
    from ..registry.access import OPERATOR

    state = local.up(
        name,
        hosts,
        etcd_members,
        subnet,
        ttl,
        log=lambda m: say(f"cluster: {m}"),
        secure=secure,
    )
    out(
        f"cluster {name} is up in {state.up_seconds:.1f}s: {len(state.hosts)} hosts on "
        f"{state.subnet}"
    )
    for host in state.hosts:
        meta = ",".join(f"{k}={v}" for k, v in sorted(host.metadata.items()))
        out(f"  {host.name}  {host.address}  {host.machine_id}  {meta}")
    out(f"endpoint:     {','.join(state.endpoints)}")
    out(f"ssh user:     {local.SSH_USER}")
    out(f"ssh key:      {state.identity}")
    out(f"known hosts:  {state.known_hosts}")
    if state.operator_tls:
        out(f"CA:           {state.operator_tls['FLEETPY_CA_FILE']}")
        out(f"you (etcd):   {state.operator_tls['FLEETPY_CERT_FILE']} (user {OPERATOR})")
    out(f"to use it:    . {state.env_file}   (sets all of the above for fleetpy)")
    out(f"to end it:    fleetpy cluster down --name {name}")


@cluster_app.command("status")
@edge
def cluster_status(name: NameOption = "fleetpy") -> None:
    """What the cluster runs: etcd members, engines, hosts (alive or not)."""
    from ..cluster import local

    state, rows = local.status(name)
    secure = ", etcd TLS and roles" if state.pki else ""
    out(f"cluster {name}: {state.subnet}{secure}, env file {state.env_file or '-'}")
    print_table(
        ["what", "name", "alive", "detail"],
        [
            {
                "what": r.what,
                "name": r.name,
                "alive": "yes" if r.alive else "NO",
                "detail": r.detail,
            }
            for r in rows
        ],
        no_legend=False,
    )


@cluster_app.command("down")
@edge
def cluster_down(name: NameOption = "fleetpy") -> None:
    """Remove everything the cluster made, and nothing else; what is gone already counts
    as removed. Exits non-zero only if something could not be removed."""
    from ..cluster import local

    local.down(name, say=out)
