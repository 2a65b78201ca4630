"""Deployments: plan, apply and restart, and deploying from git (hooks, a watcher)."""

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import config
from ..log import escape_controls
from .options import GlobUnitsArgument, OutputOption, SignOption
from .output import Output, OutputError, out, print_json, say
from .wiring import edge, globals_of, open_registry, sign_settings, signer_for

if TYPE_CHECKING:  # gRPC and the unit-file grammar: loaded by the verbs that use them
    from ..registry import Registry
    from ..unitfile.signing import Signer

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()

DirectoryArgument = Annotated[
    str,
    typer.Argument(
        help="A deployment directory: fleetpy.yaml and its unit templates.",
        show_default=False,
        metavar="DIR",
    ),
]
PruneOption = Annotated[
    bool,
    typer.Option(
        "--prune", help="Destroy units this deployment created before and no longer renders."
    ),
]
CommitOption = Annotated[
    str | None,
    typer.Option(
        "--commit",
        help="The git commit being deployed (default: a digest of the rendered units).",
        show_default=False,
    ),
]


def _plan(
    ctx: typer.Context,
    directory: str,
    prune: bool,
    commit: str | None,
    signer: "Signer | None" = None,
) -> tuple["Registry", Any, Any, Any]:
    from ..deploy import deployment, rollout

    loaded = deployment.load_deployment(directory)
    units = deployment.render_deployment(loaded)  # all or nothing, before etcd is asked
    registry = open_registry(ctx)
    plan = rollout.plan_deployment(
        registry, loaded.name, units, commit or deployment.digest(units), prune, signer
    )
    return registry, loaded, units, plan


def _styled(line: str, colour: str | None) -> None:
    """A line of the plan; coloured only on a terminal (escaped first, always)."""
    text = escape_controls(line, "\t")
    if colour is not None and sys.stdout.isatty():
        text = typer.style(text, fg=colour)
    try:
        typer.echo(text)
    except OSError as exc:
        raise OutputError(f"cannot write output: {exc.strerror or exc}") from None


def _print_plan(plan: Any, output: Output) -> None:
    from ..deploy.rollout import ChangeKind

    if output is Output.json:
        print_json(
            [
                {
                    "deployment": plan.deployment,
                    "origin": plan.origin,
                    "last_applied": plan.last_applied or None,
                    "applying": plan.applying or None,
                    "changes": [
                        {
                            "unit": c.name,
                            "kind": c.kind.value,
                            "old_hash": c.old_hash,
                            "new_hash": c.new_hash,
                            "source": c.source or None,
                            "diff": c.diff or None,
                        }
                        for c in plan.changes
                    ],
                    "unchanged": list(plan.unchanged),
                }
            ]
        )
        return
    counts = {kind: len(plan.of(kind)) for kind in ChangeKind}
    last = f"; last applied {plan.last_applied}" if plan.last_applied else ""
    running = f"; an apply of {plan.applying} is running or died" if plan.applying else ""
    out(
        f"deployment {plan.deployment} at {plan.origin}: {counts[ChangeKind.ADD]} to add, "
        f"{counts[ChangeKind.CHANGE]} to change, {counts[ChangeKind.REMOVE]} to remove, "
        + (f"{counts[ChangeKind.SIGN]} to re-sign, " if counts[ChangeKind.SIGN] else "")
        + f"{len(plan.unchanged)} unchanged{last}{running}"
    )
    marks = {
        ChangeKind.ADD: ("+", "green"),
        ChangeKind.CHANGE: ("~", "yellow"),
        ChangeKind.REMOVE: ("-", "red"),
        ChangeKind.ORPHAN: ("?", None),
        ChangeKind.SIGN: ("~", "cyan"),
    }
    for change in plan.changes:
        mark, colour = marks[change.kind]
        note = change.source
        if change.kind is ChangeKind.ORPHAN:
            note = "no longer rendered; kept (--prune destroys it)"
        elif change.kind is ChangeKind.REMOVE:
            note = "no longer rendered; destroyed"
        _styled(f"{mark} {change.name}  {note}".rstrip(), colour)
        for line in change.diff.splitlines():
            diff_colour = (
                "green" if line.startswith("+") else "red" if line.startswith("-") else None
            )
            _styled("    " + line, diff_colour)


@verbs.command("plan")
@edge
def plan_command(
    ctx: typer.Context,
    directory: DirectoryArgument,
    prune: PruneOption = False,
    commit: CommitOption = None,
    output: OutputOption = Output.table,
    sign: SignOption = None,
) -> None:
    """Show what apply would do: units added, changed (with a diff) and removed.
    Exit code 0: nothing would change; 2: something would; 1: an error; 64: a usage
    error (a mistyped option or a missing argument)."""
    _, _, _, plan = _plan(ctx, directory, prune, commit, signer_for(ctx, sign))
    _print_plan(plan, output)
    raise typer.Exit(2 if plan.has_changes else 0)


@verbs.command("apply")
@edge
def apply_command(
    ctx: typer.Context,
    directory: DirectoryArgument,
    prune: PruneOption = False,
    commit: CommitOption = None,
    max_unavailable: Annotated[
        int | None,
        typer.Option(
            "--max-unavailable",
            min=1,
            help="Units (a global unit: machines) replaced at once (fleetpy.yaml, else 1).",
            show_default=False,
        ),
    ] = None,
    min_ready: Annotated[
        float | None,
        typer.Option(
            "--min-ready",
            min=0,
            max=3600,
            help="Seconds a new version must stay active "
            "before the next is touched (fleetpy.yaml, else 5).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            max=86400,
            help="Seconds a new version may take to become active (fleetpy.yaml, else 120).",
            show_default=False,
        ),
    ] = None,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback", help="On a failure, put the failed units' previous version back."
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only plan.")] = False,
    sign: SignOption = None,
) -> None:
    """Start new units, replace changed ones one step at a time (a rolling update), and
    with --prune destroy the units this deployment no longer renders. With a signing key
    every unit written is signed, and units signed otherwise are re-signed."""
    from ..deploy.rollout import ApplyOptions, apply_deployment

    signer = signer_for(ctx, sign)
    registry, loaded, units, plan = _plan(ctx, directory, prune, commit, signer)
    if dry_run or not plan.has_changes:
        _print_plan(plan, Output.table)
        if dry_run:
            raise typer.Exit(2 if plan.has_changes else 0)
        return
    _print_plan(plan, Output.table)
    options = ApplyOptions(
        max_unavailable=max_unavailable or loaded.rollout.max_unavailable,
        min_ready=loaded.rollout.min_ready if min_ready is None else min_ready,
        timeout=timeout or loaded.rollout.timeout,
        rollback=rollback,
    )
    result = apply_deployment(registry, plan, units, options, _apply_reporter(), signer)
    out(
        f"applied {plan.origin} to deployment {plan.deployment}: {len(result.added)} added, "
        f"{len(result.replaced)} replaced, {len(result.removed)} removed in "
        f"{result.seconds:.1f}s"
    )


def _apply_reporter() -> Callable[[Any], None]:
    """One stderr line per step of an apply or restart."""

    def report(event: Any) -> None:
        if event.step == "done":
            return
        shown = ", ".join(event.units[:4]) + (" ..." if len(event.units) > 4 else "")
        progress = f" [{event.done}/{event.total}]" if event.total else ""
        detail = f" ({event.detail})" if event.detail and event.step != "failed" else ""
        if event.step != "failed":
            say(f"{event.step}{progress}: {shown}{detail}")

    return report


@verbs.command("restart")
@edge
def restart_command(
    ctx: typer.Context,
    units: GlobUnitsArgument,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=1,
            max=86400,
            help="Seconds each machine's units may take to stop and to become active again.",
        ),
    ] = 120.0,
    max_unavailable: Annotated[
        int,
        typer.Option(
            "--max-unavailable",
            min=1,
            help="Machines a global unit is restarted on at once.",
        ),
    ] = 1,
) -> None:
    """Restart launched units in place, one machine at a time, waiting until they are
    active again before the next machine; a global unit --max-unavailable machines at a
    time."""
    from ..deploy.rollout import restart

    registry = open_registry(ctx)
    for name in restart(registry, units, timeout, _apply_reporter(), max_unavailable):
        out(f"Restarted {name}")


git_app = typer.Typer(
    name="git",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Deploy from git: hooks on a bare repository, or a watcher.",
)

BranchOption = Annotated[str, typer.Option("--branch", help="The branch that deploys.")]
DirOption = Annotated[
    str,
    typer.Option(
        "--dir",
        help="The deployment's directory in the repository, from its top (default: the "
        "top itself, for a repository that holds one deployment).",
        show_default=False,
    ),
]


def _settings_args(ctx: typer.Context) -> list[str]:
    """The global etcd settings as command-line options, for a hook or a watcher to run
    fleetpy as this command would."""
    settings = config.resolve(globals_of(ctx).etcd_cli, scopes=(config.Scope.ETCD,)).etcd
    args = [
        "--endpoint",
        ",".join(settings.endpoints),
        "--etcd-prefix",
        settings.prefix or "/",
        "--request-timeout",
        f"{settings.timeout:g}",
    ]
    for option, value in (
        ("--ca-file", settings.ca_file),
        ("--cert-file", settings.cert_file),
        ("--key-file", settings.key_file),
        ("--username", settings.username),
        ("--password", settings.password),
    ):
        if value is not None:
            args += [option, os.path.abspath(value) if option.endswith("-file") else value]
    sign = sign_settings(ctx)
    # A hook or watcher signs what it applies as this command would (paths made absolute:
    # it runs elsewhere).
    if sign.sign_key is not None:
        key = sign.sign_key
        args += [
            "--keys-dir",
            os.path.abspath(os.path.expanduser(sign.keys_dir)),
            "--sign-key",
            os.path.abspath(os.path.expanduser(key)) if "/" in key else key,
        ]
    return args


@git_app.command("install-hooks")
@edge
def git_install_hooks(
    ctx: typer.Context,
    repository: Annotated[str, typer.Argument(help="A bare git repository.", metavar="BARE_REPO")],
    branch: BranchOption = "main",
    directory: DirOption = ".",
    prune: PruneOption = False,
) -> None:
    """Install hooks: a push to the branch is rendered and validated (an invalid push is
    rejected, the branch does not move), then applied; the result goes back to the pusher."""
    from ..deploy.gitops import HookConfig, hook_command, install_hooks

    command = hook_command(_settings_args(ctx))
    hooks = install_hooks(
        repository, HookConfig(branch, directory, command, ("--prune",) if prune else ())
    )
    for hook in hooks:
        out(f"Installed {hook}")


@git_app.command("watch")
@edge
def git_watch(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Argument(help="The repository to follow (URL or path).", metavar="REPO_URL")
    ],
    branch: BranchOption = "main",
    directory: DirOption = ".",
    interval: Annotated[
        float, typer.Option("--interval", min=1, max=86400, help="Seconds between fetches.")
    ] = 30.0,
    workdir: Annotated[
        str | None,
        typer.Option(
            "--workdir",
            help="Where the clone is kept (default: ~/.cache/fleetpy/git).",
            show_default=False,
        ),
    ] = None,
    prune: PruneOption = False,
    once: Annotated[bool, typer.Option("--once", help="Fetch and apply once, then exit.")] = False,
) -> None:
    """Follow a branch: when it moves, plan and apply its deployment. Several watchers
    may run; one applies at a time (an etcd lease), the last applied commit is in etcd."""
    from pathlib import Path

    from ..deploy.gitops import WatchConfig, hook_command, watch

    command = hook_command(_settings_args(ctx))
    status = watch(
        WatchConfig(
            url,
            branch,
            directory,
            interval,
            Path(workdir) if workdir else None,
            ("--prune",) if prune else (),
        ),
        command,
        lambda: open_registry(ctx),
        once=once,
    )
    raise typer.Exit(status)
