"""The type of the `run` fixture (tests/conftest.py): the CLI invoked in process.

Here, not in conftest.py: test modules import from tests/support only, never a conftest
(each tier folder has one, and pytest imports them by path)."""

from __future__ import annotations

from typing import Protocol

from typer.testing import Result


class Run(Protocol):
    """fleetpy's command line after the test's own options (its etcd, its prefix)."""

    def __call__(self, *args: str) -> Result: ...
