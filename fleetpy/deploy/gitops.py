"""Deploys from git: hooks on a bare repository (push deploys) and a watcher that
follows a remote branch (pull deploys). Both render the deployment directory of a
commit and hand it to `fleetpy plan` / `fleetpy apply`, run as a child process with the
settings the hooks were installed with, so what a push does is what an operator's
`fleetpy apply` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeploymentError
from ..log import escape_controls, log_event
from .deployment import DEPLOYMENT_FILE, load_deployment

if TYPE_CHECKING:
    from ..registry.roles import OperatorRegistry

ZERO = "0" * 40
HOOKS = ("pre-receive", "post-receive")


def _git(
    args: Sequence[str],
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> bytes:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            input=input,
            env=None if env is None else {**os.environ, **env},
            timeout=300,
        )
    except FileNotFoundError:
        raise DeploymentError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"git {' '.join(args)} took longer than 300 s") from None
    if result.returncode != 0:
        detail = " ".join(result.stderr.decode("utf-8", "replace").split()) or "failed"
        raise DeploymentError(f"git {' '.join(args)}: {detail}")
    return result.stdout


def repository_directory(directory: str) -> str:
    """A deployment directory as a path inside the repository, as git names it: "" for
    the top ("", ".", "./"), else without "./" or a trailing "/" ("./deploy/" is
    "deploy"). One outside the repository (absolute, or through "..") is refused."""
    text = directory.replace("\\", "/")
    if text.startswith("/"):
        raise DeploymentError(
            f"--dir {directory!r}: expected a directory inside the repository, relative "
            "to its top (such as deploy, or . for the top itself)"
        )
    path = posixpath.normpath(text or ".")
    if path == ".." or path.startswith("../"):
        raise DeploymentError(f"--dir {directory!r} is outside the repository")
    return "" if path == "." else path


def _shown(directory: str, commit: str) -> str:
    """Where a deployment directory is, for a message."""
    path = repository_directory(directory)
    return f"{path!r} in commit {commit[:12]}" if path else f"the top of commit {commit[:12]}"


def export_commit(git_dir: str | Path, commit: str, directory: str, target: Path) -> Path:
    """The deployment directory of `commit` (a path inside the repository; "." or "" for
    its top), written under `target`; returns the directory to render."""
    # `commit:path` names a tree; `commit:` is the commit's top tree (the commit itself
    # is not a tree, so `commit` alone would not do).
    spec = f"{commit}:{repository_directory(directory)}"
    try:
        kind = _git(["--git-dir", str(git_dir), "cat-file", "-t", spec]).decode().strip()
    except DeploymentError:
        raise DeploymentError(f"commit {commit[:12]} has no directory {directory!r}") from None
    if kind != "tree":
        raise DeploymentError(f"{_shown(directory, commit)} is not a directory")
    archive = _git(["--git-dir", str(git_dir), "archive", "--format=tar", spec])
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-x", "-C", str(target), "--no-same-owner", "--no-same-permissions"],
        input=archive,
        check=True,
        capture_output=True,
        timeout=300,
    )
    if not (target / DEPLOYMENT_FILE).exists():
        raise DeploymentError(f"{_shown(directory, commit)} has no {DEPLOYMENT_FILE}")
    return target


# ----------------------------------------------------------------------------- push deploys


@dataclass(frozen=True)
class HookConfig:
    """What an installed hook needs: the branch, the directory in the repository, and
    the fleetpy command line (interpreter and global settings) to run."""

    branch: str
    directory: str
    command: tuple[str, ...]  # e.g. (python, -m, fleetpy, --endpoint, ...)
    apply_args: tuple[str, ...] = ()  # e.g. --prune

    def to_json(self) -> str:
        return json.dumps(
            {
                "branch": self.branch,
                "directory": self.directory,
                "command": list(self.command),
                "apply_args": list(self.apply_args),
            }
        )


_HOOK = """#!{python}
# Installed by `fleetpy git install-hooks`: {what}
import sys
sys.path.insert(0, {root!r})
from fleetpy.deploy.gitops import run_hook
sys.exit(run_hook({hook!r}, {config!r}))
"""


def install_hooks(repository: str | Path, config: HookConfig) -> list[Path]:
    """Write pre-receive (render and validate: an invalid push is rejected) and
    post-receive (apply) hooks into a bare repository."""
    repository_directory(config.directory)  # refused now, not at the first push
    repo = Path(repository)
    if not (repo / "HEAD").is_file() or not (repo / "objects").is_dir():
        raise DeploymentError(f"{repo} is not a bare git repository")
    hooks = repo / "hooks"
    hooks.mkdir(exist_ok=True)
    root = str(Path(__file__).resolve().parents[1])
    written = []
    for hook, what in (
        ("pre-receive", "renders a pushed deployment and rejects it if invalid"),
        ("post-receive", "applies a pushed deployment"),
    ):
        path = hooks / hook
        text = _HOOK.format(
            python=sys.executable, what=what, root=root, hook=hook, config=config.to_json()
        )
        temp = path.with_name(f".{hook}.tmp")
        temp.write_text(text)
        # The hook may hold etcd credentials: only the repository's owner reads it.
        temp.chmod(0o700)
        os.replace(temp, path)
        written.append(path)
    return written


def run_hook(hook: str, config_json: str) -> int:
    """The body of an installed hook; git gives `<old> <new> <ref>` lines on stdin."""
    data = json.loads(config_json)
    config = HookConfig(
        data["branch"], data["directory"], tuple(data["command"]), tuple(data.get("apply_args", ()))
    )
    git_dir = os.environ.get("GIT_DIR", ".")
    status = 0
    for line in sys.stdin.read().splitlines():
        try:
            _old, new, ref = line.split()
        except ValueError:
            continue
        if ref != f"refs/heads/{config.branch}" or new == ZERO:
            continue
        with tempfile.TemporaryDirectory(prefix="fleetpy-push-") as temp:
            # Exported under its own path and rendered from there: messages name the
            # files as they are in the repository (deploy/web.service.j2:3: ...).
            try:
                relative = repository_directory(config.directory) or "."
                export_commit(git_dir, new, config.directory, Path(temp) / relative)
            except DeploymentError as exc:
                print(escape_controls(f"fleetpy: error: {exc}"), file=sys.stderr)
                return 1
            verb = ["plan"] if hook == "pre-receive" else ["apply", *config.apply_args]
            print(f"fleetpy: {verb[0]} of {config.branch} at {new[:12]}", file=sys.stderr)
            result = subprocess.run(
                [*config.command, *verb, "--commit", new, relative],
                cwd=temp,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if hook == "pre-receive" and result.returncode not in (0, 2):
                print(
                    f"fleetpy: push rejected: {config.branch} at {new[:12]} does not deploy",
                    file=sys.stderr,
                )
                return 1
            if hook == "post-receive" and result.returncode != 0:
                print(
                    f"fleetpy: apply of {new[:12]} failed; the cluster is as the rollout left "
                    "it (see above)",
                    file=sys.stderr,
                )
                status = 1
    return status


# ----------------------------------------------------------------------------- pull deploys


@dataclass(frozen=True)
class WatchConfig:
    url: str
    branch: str = "main"
    directory: str = "."
    interval: float = 30.0
    workdir: Path | None = None  # where the clone lives (default: a cache dir per URL)
    apply_args: tuple[str, ...] = ()


def _clone(config: WatchConfig) -> Path:
    base = (
        config.workdir
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleetpy" / "git"
    )
    path = Path(base) / hashlib.sha256(config.url.encode()).hexdigest()[:16]
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--bare", "--quiet", config.url, str(path)])
    return path


def fetch_head(config: WatchConfig) -> tuple[Path, str]:
    """Fetch the branch; (the local bare clone, the commit the branch points at)."""
    clone = _clone(config)
    _git(
        [
            "--git-dir",
            str(clone),
            "fetch",
            "--quiet",
            "--prune",
            config.url,
            f"+refs/heads/{config.branch}:refs/heads/{config.branch}",
        ]
    )
    head = _git(["--git-dir", str(clone), "rev-parse", f"refs/heads/{config.branch}"])
    return clone, head.decode().strip()


def watch(
    config: WatchConfig,
    command: Sequence[str],
    registry_factory: Callable[[], OperatorRegistry],
    once: bool = False,
) -> int:
    """Follow the branch: when it moves past what etcd says was applied, plan and apply.
    Several watchers may run; only the one holding the deployment's watcher lease
    applies (the others wait). Returns the last apply's exit status (`once`)."""
    repository_directory(config.directory)  # refused now, not once per interval
    registry = registry_factory()
    candidate = f"{os.uname().nodename}-{os.getpid()}"
    lease = None
    status = 0
    try:
        while True:
            try:
                clone, head = fetch_head(config)
                with tempfile.TemporaryDirectory(prefix="fleetpy-pull-") as temp:
                    directory = export_commit(clone, head, config.directory, Path(temp) / "d")
                    name = load_deployment(directory).name
                    if lease is None or registry.refresh_lease(lease) <= 0:
                        lease = registry.grant_lease(max(10, int(config.interval * 3)))
                    if not registry.campaign_watcher(name, candidate, lease):
                        log_event("git_watch_standby", deployment=name, commit=head[:12])
                    else:
                        record = registry.get_deployment(name)
                        if record is None or record.commit != head:
                            log_event(
                                "git_watch_apply",
                                deployment=name,
                                commit=head[:12],
                                applied=(record.commit[:12] if record else "") or None,
                            )
                            status = subprocess.run(
                                [
                                    *command,
                                    "apply",
                                    *config.apply_args,
                                    "--commit",
                                    head,
                                    str(directory),
                                ],
                                stdin=subprocess.DEVNULL,
                                check=False,
                            ).returncode
                            log_event(
                                "git_watch_applied",
                                deployment=name,
                                commit=head[:12],
                                status=status,
                            )
            except DeploymentError as exc:
                log_event("git_watch_error", url=config.url, error=str(exc))
                status = 1
            if once:
                return status
            time.sleep(config.interval)
    finally:
        if lease is not None:
            try:
                registry.revoke_lease(lease)
            except Exception:
                pass
        registry.close()


def hook_command(settings_args: Sequence[str]) -> tuple[str, ...]:
    """The fleetpy command line an installed hook or a watcher runs."""
    return (sys.executable, "-m", "fleetpy", *settings_args)


__all__ = [
    "HOOKS",
    "HookConfig",
    "WatchConfig",
    "export_commit",
    "fetch_head",
    "hook_command",
    "install_hooks",
    "repository_directory",
    "run_hook",
    "watch",
]
