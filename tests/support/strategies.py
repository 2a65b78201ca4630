"""hypothesis settings and strategies of the property tests (test_properties.py, pure and
integration): unit texts, template fragments and values, and the check that only
fleetpy's own errors are raised."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fleetpy.errors import FleetpyError

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def own_errors_only(function: Callable[[], Any]) -> Any:
    """function()'s result, or None if it raised a FleetpyError; anything else fails."""
    try:
        return function()
    except FleetpyError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None


def pieces(fragments: list[str], max_size: int = 30) -> st.SearchStrategy[str]:
    """Text made of meaningful fragments and a little noise: reaches the parsers'
    corners far more often than uniform text does."""
    return st.lists(st.sampled_from(fragments) | st.text(max_size=3), max_size=max_size).map(
        "".join
    )


# --------------------------------------------------------------------------- templates

TEMPLATE_FRAGMENTS = [
    "{{ ", " }}", "{% ", " %}", "{# ", " #}", "{%- ", " -%}", "x", "y", "items", ".", "[0]",
    "['a']", "__class__", "__globals__", "__init__", "__subclasses__()", "mro", "_x", "|",
    "systemd_quote", "exec_args", "systemd_value", "systemd_key", "docker_name", "as_list",
    "docker_env(x, y)", "fail(x)", "(", ")", "[", "]", ",", "'a'", "'%s'", "'{}'", '"\\n"',
    "~", " * ", " ** ", " + ", " % ", " / ", " // ", "3", "40", "-1", "range(3)", "for i in ",
    "endfor", "if ", "else", "endif", "set z = ", "z", "macro m()", "endmacro", "m()",
    "include 'x'", "import 'x' as q", "extends 'x'", "lipsum", "cycler", "joiner", "namespace",
    "self", "loop", "format", "join", "center", "replace('a', 'b')", "attr('__class__')",
    "map(attribute='__class__')", "tojson", "length", "list", "dictsort", "\n", "\x00",
    "\u2028", " ", "é", "\x1b",
]  # fmt: skip


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["a\nb", "\x00", "$HOME", "%i", "\\", '"', "'", "\x1b[2J", "\u2028"])
)


values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)


value_maps = st.dictionaries(
    st.sampled_from(["x", "y", "items", "a"]) | st.text(max_size=3), values
)


def write_template(directory: str, text: str) -> Path:
    path = Path(directory) / "t.j2"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    (Path(directory) / "x").write_text("{{ x }}\n")  # an include inside the directory
    return path
