"""test_cli_signing.py's tests that need no etcd and no process (README "Tests"); what the
module covers as a whole: tests/integration/test_cli_signing.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetpy.cli import app
from fleetpy.config import Settings

from support.signing_cli import one_error_line

# No FLEETPY_* setting, HOME and the working directory in tmp_path (support.signing_cli).
pytestmark = pytest.mark.usefixtures("signing_env")


def test_agent_trusted_keys_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetpy.entrypoints

    seen: dict[str, Settings] = {}
    real_run_agent = fleetpy.entrypoints.run_agent
    monkeypatch.setattr(fleetpy.entrypoints, "run_agent", lambda settings: seen.update(s=settings))
    config = tmp_path / "agent.yaml"
    config.write_text("trusted_keys: /etc/fleetpy/trusted\nmachine_id: m1\n")
    result = CliRunner().invoke(app, ["agent", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert seen["s"].agent.trusted_keys == "/etc/fleetpy/trusted"
    monkeypatch.setattr(fleetpy.entrypoints, "run_agent", real_run_agent)
    # The real agent: a missing directory is one line, before etcd is even asked.
    result = CliRunner().invoke(
        app,
        [
            "--endpoint",
            "http://127.0.0.1:1",
            "agent",
            "--machine-id",
            "m1",
            "--unit-manager",
            "simulated",
            "--trusted-keys",
            str(tmp_path / "missing"),
        ],
    )
    assert "cannot read trusted keys directory" in one_error_line(result)


def test_agent_signatures_required_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetpy.entrypoints

    seen: dict[str, Settings] = {}
    monkeypatch.setattr(fleetpy.entrypoints, "run_agent", lambda settings: seen.update(s=settings))
    config = tmp_path / "agent.yaml"
    config.write_text("signatures_required: 2\nmachine_id: m1\n")
    result = CliRunner().invoke(app, ["agent", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert seen["s"].agent.signatures_required == 2
    monkeypatch.setenv("FLEETPY_SIGNATURES_REQUIRED", "3")
    assert CliRunner().invoke(app, ["agent", "--config", str(config)]).exit_code == 0
    assert seen["s"].agent.signatures_required == 3
    flag = ["agent", "--config", str(config), "--signatures-required", "1"]
    assert CliRunner().invoke(app, flag).exit_code == 0
    assert seen["s"].agent.signatures_required == 1
    monkeypatch.delenv("FLEETPY_SIGNATURES_REQUIRED")
    for bad in ("0", "9", "two", "-1"):
        line = one_error_line(CliRunner().invoke(app, [*flag[:-1], bad]))
        assert "signatures" in line, line
