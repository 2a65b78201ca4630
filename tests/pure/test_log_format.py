"""Log lines: the fast path for plain values writes exactly what the full quoting does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpy.log import escape_controls, format_event


def quoted_the_long_way(value: Any) -> str:
    text = escape_controls(str(value).replace("\\", "\\\\"))
    if text == "" or any(c in text for c in ' "=\\'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


TRICKY = st.sampled_from(["", " ", '"', "=", "\\", "\x1b", "\x7f", "\x9b", "\u202e", "\u2066", "é"])


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), TRICKY, st.integers()), min_size=1, max_size=4))
def test_values_are_written_as_the_full_quoting_writes_them(values: list[Any]) -> None:
    fields = {f"k{i}": value for i, value in enumerate(values)}
    line = format_event("e", fields)
    expected = " ".join(f"k{i}={quoted_the_long_way(v)}" for i, v in enumerate(values))
    assert line.split(" event=e ", 1)[1] == expected
