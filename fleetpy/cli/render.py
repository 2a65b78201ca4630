"""render: a Jinja unit template rendered with values."""

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from .output import out
from .wiring import edge

# This module's verbs; fleetpy.cli adds them to the app, in the order of its help.
verbs = typer.Typer()


@verbs.command()
@edge
def render(
    template: Annotated[str, typer.Argument(help="Jinja unit template file.")],
    values: Annotated[
        str | None,
        typer.Option("--values", help="YAML file of template values.", show_default=False),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="key=value, overrides --values; repeatable.", show_default=False
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write to this file instead of stdout.", show_default=False
        ),
    ] = None,
) -> None:
    """Render a Jinja unit template with values."""
    from ..files import write_file_atomically
    from ..unitfile import template as templating

    # In a child process with a time and memory limit: a template is untrusted input.
    text = templating.render_bounded(template, _template_values(templating, values, set_ or []))
    if output is None:
        out(text, nl=False, keep="\n\t")
    else:
        write_file_atomically(output, text)


def _template_values(
    templating: Any, values_file: str | None, sets: Sequence[str]
) -> dict[str, Any]:
    overrides = templating.parse_set(sets)  # check the command line before reading files
    base = templating.load_values(values_file) if values_file else {}
    return dict(templating.merge_values(base, overrides))
