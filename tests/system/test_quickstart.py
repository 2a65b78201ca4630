"""The README's quick start works as written, for a user without root: its shell block
is run as is (ports moved to free ones) by an unprivileged user, in an empty directory."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import free_port

from support.paths import ROOT

README = ROOT / "README.md"
UNPRIVILEGED = "nobody"


def quickstart_block() -> str:
    section = README.read_text().split("\n## Quick start on a laptop, without root\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert match, "the quick start has no ```sh block"
    return match.group(1)


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """fleetpy as a user installs it: its wheel in a fresh venv, readable by anyone (the
    checkout's venv may sit on an interpreter under root's home)."""
    python = "/usr/bin/python3" if os.geteuid() == 0 else sys.executable
    folder = Path(tempfile.mkdtemp(prefix="fleetpy-quickstart-venv-"))
    folder.chmod(0o755)
    try:
        subprocess.run([python, "-m", "venv", str(folder / "venv")], check=True)
        pip = [str(folder / "venv" / "bin" / "pip"), "install", "-q"]
        subprocess.run(
            [pip[0], "wheel", "-q", "--no-deps", "-w", str(folder), str(README.parent)],
            check=True,
        )
        subprocess.run([*pip, *map(str, folder.glob("fleetpy-*.whl"))], check=True)
        yield folder / "venv" / "bin"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are root's alone, and the user must get in.
    folder = Path(tempfile.mkdtemp(prefix="fleetpy-quickstart-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED)
        os.chown(folder, user.pw_uid, user.pw_gid)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_quickstart_runs_as_an_unprivileged_user(installed: Path, scratch: Path) -> None:
    client, peer = free_port(), free_port()
    script = quickstart_block().replace(":2379", f":{client}").replace(":2380", f":{peer}")
    argv = ["bash", "-euo", "pipefail", "-c", script]
    if os.geteuid() == 0:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        argv = [runuser, "-u", UNPRIVILEGED, "--", *argv]
    env = {
        "PATH": f"{installed}:/usr/bin:/bin",
        "HOME": str(scratch),
        "LANG": "C.UTF-8",
    }
    process = subprocess.Popen(
        argv,
        cwd=scratch,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=120)
    finally:  # whatever the block left running (it kills its jobs when it gets that far)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in scratch.glob("*.log")}
    assert process.returncode == 0, (output, logs)
    assert "Unit hello.service launched on laptop2" in output, output
    assert re.search(r"^hello\.service\s+laptop2\s+active\s+running$", output, re.M), output
    assert re.search(r"^laptop3\s+-\s+rack=r3$", output, re.M), output
    assert "Destroyed hello.service" in output
