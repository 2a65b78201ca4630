"""The CLI signing tests' environment (no FLEETPY_* setting, HOME and the working
directory in the test's tmp_path), the one line a refused key gets, and unit files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import Result


@pytest.fixture
def signing_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Registered by tests/conftest.py; test_cli_signing uses it on every test."""
    for name in list(os.environ):
        if name.startswith("FLEETPY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default keys dir lives there
    monkeypatch.chdir(tmp_path)


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleetpy: error: "), result.stderr
    return lines[0]


SERVICE = "[Service]\nExecStart=/bin/sleep 1000\n"


def unit_file(tmp_path: Path, name: str = "web.service", text: str = SERVICE) -> str:
    """A unit file under tmp_path/units (NAME may hold a subdirectory)."""
    path = tmp_path / "units" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)
