"""The type of the `run` fixture (tests/conftest.py): the CLI invoked in process.

Kept out of conftest.py because tests/ and tests/hostile/ both have a conftest module,
so `from conftest import ...` gets whichever pytest loaded last."""

from __future__ import annotations

from collections.abc import Callable

from typer.testing import Result

Run = Callable[..., Result]
