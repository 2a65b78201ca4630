"""The previous release of fleetpy, installed from its wheel beside this checkout
(tests/system/test_upgrade.py): main as it was before schema versions, PREVIOUS.

Built once per commit (and venv whose dependencies it uses) and kept (cached under /var/cache/fleetpy, locked, so pytest-xdist
workers and later sessions share it): the commit's tree from `git archive` (no worktree
left behind in the repository), `pip wheel --no-deps` of it, and a venv of its own with that
wheel installed. Its dependencies are this checkout's (the commit is this branch's parent:
the same pins), reached through a .pth line to this venv's site-packages, which only adds
the directory: this checkout's editable fleetpy there is not activated, so `import fleetpy`
in that venv is the wheel's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from support.fleet import run_cli

# main's last commit before schema versions (this branch's parent).
PREVIOUS = "a804416c5e3c00f317064f7c803492238c5e5c10"
CHECKOUT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FLEETPY_PREVIOUS_CACHE", "/var/cache/fleetpy/previous"))


@dataclass(frozen=True)
class Release:
    commit: str
    python: Path  # the release's venv interpreter: `python -m fleetpy ...`
    package_dir: Path  # its installed fleetpy package (what a host binds and imports)

    def argv(self, *args: str) -> list[str]:
        # -P: not the working directory first on sys.path (a checkout's fleetpy there).
        return [str(self.python), "-P", "-m", "fleetpy", *args]


def previous_release(commit: str = PREVIOUS, cache: Path = CACHE) -> Release:
    """The release at COMMIT, built and installed on first use (per venv it borrows the
    dependencies of: another checkout's venv gets its own)."""
    deps = sysconfig.get_paths()["purelib"]
    home = cache / f"{commit}-{hashlib.sha256(deps.encode()).hexdigest()[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "ready").exists():
            _build(commit, home)
    python = home / "venv" / "bin" / "python"
    found = subprocess.run(
        [str(python), "-P", "-c", "import fleetpy, os; print(os.path.dirname(fleetpy.__file__))"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    package = Path(found.stdout.strip())
    if not package.is_relative_to(home):
        raise RuntimeError(f"the release at {commit} imports fleetpy from {package}")
    return Release(commit, python, package)


def _run(*argv: str, cwd: Path | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()[-2000:]}")


def _build(commit: str, home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="fleetpy-previous-") as temp:
        source, wheels = Path(temp) / "src", Path(temp) / "wheels"
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(CHECKOUT), "archive", "--format=tar", commit], capture_output=True
        )
        if archive.returncode != 0:
            raise RuntimeError(
                f"the previous release {commit[:12]} is not in this clone (a shallow one? "
                f"fetch main's history): {archive.stderr.decode(errors='replace').strip()}"
            )
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        # Built as nspawn.build_wheels builds this checkout (build isolation: setuptools).
        _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--wheel-dir", str(wheels), str(source))  # fmt: skip
        venv = home / "venv"
        _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
        purelib = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        _run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
             "--target", purelib, *map(str, wheels.glob("fleetpy-*.whl")))  # fmt: skip
        Path(purelib, "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (home / "ready").write_text(commit + "\n")


class Mixed:
    """fleetpy processes of this checkout (release None) and of another Release side by
    side against one etcd prefix: engines, simulated agents, CLI commands."""

    def __init__(self, endpoint: str, prefix: str, workdir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        self.env.update(FLEETPY_ENDPOINT=endpoint, FLEETPY_ETCD_PREFIX=prefix)
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, release: Release | None, *args: str) -> list[str]:
        return release.argv(*args) if release else [sys.executable, "-m", "fleetpy", *args]

    def spawn(self, name: str, release: Release | None, *args: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                self.argv(release, *args),
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        self.processes[name] = proc
        return proc

    def engine(self, name: str, release: Release | None) -> subprocess.Popen[bytes]:
        return self.spawn(name, release, "engine", "--lease-ttl", "2", "--reconcile-interval", "5")

    def agent(self, machine: str, release: Release | None) -> subprocess.Popen[bytes]:
        args = ("agent", "--unit-manager", "simulated", "--machine-id", machine, "--ttl", "2")
        return self.spawn(machine, release, *args)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        """End a daemon as an operator at its terminal would (^C: it steps down), and wait."""
        proc = self.processes[name]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)

    def cli(
        self, release: Release | None, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(self.argv(release, *args), self.env, self.workdir, check)

    def close(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
