"""The CLI signing tests' environment (no FLEETPY_* setting, HOME and the working
directory in the test's tmp_path) and the one line a refused key gets."""

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
