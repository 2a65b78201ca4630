"""The agent's entry point under its name before the rename to `fleetpy.entrypoints`: host
images provisioned earlier run `from fleetpy.daemons import agent_entry` (their
`/opt/fleetpy/venv/bin/fleetpy-agent`), and their agent must still start after fleetpy is
upgraded in place. Nothing else lives here."""

from __future__ import annotations

from .entrypoints import agent_entry

__all__ = ["agent_entry"]
