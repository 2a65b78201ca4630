"""test_properties.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole: tests/pure/test_properties.py."""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import given, settings

from fleetpy.unitfile.template import render_bounded

from support.strategies import (
    SETTINGS,
    TEMPLATE_FRAGMENTS,
    own_errors_only,
    pieces,
    value_maps,
    write_template,
)


@given(pieces(TEMPLATE_FRAGMENTS, 25), value_maps)
@settings(SETTINGS, max_examples=6)
def test_bounded_renderer_raises_only_fleetpy_errors(text: str, values: dict[str, Any]) -> None:
    """The real path of `fleetpy render`: a child process with time and memory limits."""
    with tempfile.TemporaryDirectory() as directory:
        path = write_template(directory, text)
        output = own_errors_only(lambda: render_bounded(path, values, timeout=10))
        assert output is None or isinstance(output, str)
