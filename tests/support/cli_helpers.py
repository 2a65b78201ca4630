"""Helpers of the in-process CLI tests (test_cli, test_container): a unit file written
into a folder, the registry's units in brief, and the one error line a failing verb prints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import Result

from fleetpy.registry import (
    Registry,
)

SERVICE = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/sleep 1000\n"


def write(folder: Path, name: str, text: str = SERVICE) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def snapshot(registry: Registry) -> dict[str, tuple[str, str]]:
    return {n: (u.hash, u.desired) for n, u in registry.list_units().items()}


def one_error_line(result: Result, progress: bool = False) -> str:
    """The single error line; blocking verbs may print plain progress lines before it."""
    assert "Traceback" not in result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    if progress:
        assert [line for line in lines if "error" in line] == lines[-1:], result.stderr
        lines = lines[-1:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fleetpy: error: "), lines[0]
    return lines[0]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLEETPY_* setting of the caller's environment (tests/conftest.py registers it;
    modules use it with pytestmark = pytest.mark.usefixtures("clean_env"))."""
    for name in list(os.environ):
        if name.startswith("FLEETPY_"):
            monkeypatch.delenv(name)
