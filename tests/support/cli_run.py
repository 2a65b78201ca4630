"""The type of the `run` fixture (tests/conftest.py): the CLI invoked in process.

Here, not in conftest.py: test modules import from tests/support only, never a conftest
(each tier folder has one, and pytest imports them by path)."""

from __future__ import annotations

from collections.abc import Callable

from typer.testing import Result

Run = Callable[..., Result]
