"""test_cli.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or tools
of the machine (README "Tests"); what the module covers as a whole:
tests/integration/test_cli.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetpy.cli import app
from fleetpy.cluster.etcd import EtcdServer

from support.cli_helpers import SERVICE, one_error_line, write
from support.cli_run import Run

# No FLEETPY_* setting of the caller reaches these tests (support.cli_helpers).
pytestmark = pytest.mark.usefixtures("clean_env")


def test_plan_exits_2_only_for_changes(run: Run, tmp_path: Path) -> None:
    """A CI script applies when plan exits 2: a typo must not look like changes."""
    (tmp_path / "fleetpy.yaml").write_text(
        "name: ci\nunits:\n  - {name: a.service, template: a.service.j2}\n"
    )
    (tmp_path / "a.service.j2").write_text(SERVICE)
    result = run("plan", "--prnue", str(tmp_path))
    assert result.exit_code == 64
    assert "No such option: --prnue (Possible options: --prune)" in one_error_line(result)
    assert run("plan").exit_code == 64
    assert run("plan", str(tmp_path), "extra").exit_code == 64
    assert run("plan", "-o", "yaml", str(tmp_path)).exit_code == 64
    assert run("plan", str(tmp_path / "nothere")).exit_code == 1
    assert run("plan", str(tmp_path)).exit_code == 2  # the one meaning of 2
    # The real process, as a CI script sees it.
    done = python_m("plan", "--prnue", str(tmp_path))
    assert done.returncode == 64 and done.stdout == ""
    assert done.stderr.startswith("fleetpy: error: No such option: --prnue")


def python_m(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    return subprocess.run(
        [sys.executable, "-m", "fleetpy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_unreachable_etcd_fails_fast_naming_the_endpoint(units_dir: Path) -> None:
    began = time.monotonic()
    done = python_m(
        "--endpoint",
        "http://127.0.0.1:1",
        "--request-timeout",
        "1",
        "start",
        "--no-block",
        write(units_dir, "a.service"),
    )
    assert time.monotonic() - began < 3
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:1" in lines[0], done.stderr
    assert lines[0].startswith("fleetpy: error: cannot reach etcd")


def test_subprocess_bad_file_is_one_line(etcd: EtcdServer, prefix: str, units_dir: Path) -> None:
    path = write(units_dir, "bad.service", "[Service\n")
    done = python_m("--endpoint", etcd.endpoint, "--etcd-prefix", prefix, "submit", path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"fleetpy: error: {path}:1: invalid section header '[Service' (expected [Name])"
    ]


def test_agent_without_dbus_bindings_is_one_line_naming_the_packages() -> None:
    """This venv has neither dbus-python nor PyGObject, as a new user's would not."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetpy",
            "--endpoint",
            "http://127.0.0.1:1",
            "agent",
            "--machine-id",
            "m1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "fleetpy: error: the systemd unit manager needs D-Bus and GLib bindings (dbus is "
        "missing): apt-get install python3-dbus python3-gi, in a venv made with "
        "--system-site-packages, or pip install 'fleetpy[agent]'"
    ]


def test_version_verb() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0 and result.stdout == "fleetpy 0.1.0\n"
    done = python_m("version")
    assert done.returncode == 0 and done.stdout == python_m("--version").stdout == "fleetpy 0.1.0\n"


def test_shell_completion(tmp_path: Path) -> None:
    script = python_m("--show-completion", "bash")
    assert script.returncode == 0, script.stderr
    assert "_FLEETPY_COMPLETE=complete_bash" in script.stdout
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")},
        "_FLEETPY_COMPLETE": "complete_bash",
    }

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        done = subprocess.run(
            [sys.executable, "-m", "fleetpy"],
            env={**env, "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("fleetpy list-u") == ["list-unit-files", "list-units"]
    assert complete("fleetpy git w") == ["watch"]
    assert complete("fleetpy list-units --end") == ["--endpoint"]  # a global one, after
    home = tmp_path / "home"
    home.mkdir()
    installed = subprocess.run(
        [sys.executable, "-m", "fleetpy", "--install-completion", "bash"],
        env={**env, "HOME": str(home), "_FLEETPY_COMPLETE": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert installed.returncode == 0, installed.stderr
    assert "fleetpy" in (home / ".bashrc").read_text()
