"""The keys group: signing keys for units (generate, list)."""

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from .listings import Listing, listing_command
from .output import out, say
from .wiring import edge, sign_settings

keys_app = typer.Typer(
    name="keys",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Signing keys for units (the agents' --trusted-keys hold their .pub files).",
)


@keys_app.command("generate")
@edge
def keys_generate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)],
) -> None:
    """Make an ed25519 key pair NAME.key (mode 0600) and NAME.pub in the keys directory;
    prints the public key's path and id. Never replaces a key."""
    from ..unitfile.signing import generate_key

    info = generate_key(sign_settings(ctx).keys_dir, name)
    out(f"{info.public_path}  {info.key_id}")


def _keys(ctx: typer.Context) -> Sequence[Any]:
    from ..unitfile.signing import list_keys

    keys = list_keys(sign_settings(ctx).keys_dir)
    for key in keys:
        if key.problem:
            say(f"fleetpy: warning: key {key.name}: {key.problem}")
    return keys


keys_app.command("list")(
    listing_command(
        Listing(
            "list",
            "List the keys in the keys directory: name, id, whether the private key is there.",
            _keys,
            lambda k: {
                "name": k.name,
                "id": k.key_id or None,
                "private": k.has_private,
                "public_key": str(k.public_path) if k.public_path.exists() else None,
            },
            lambda k, full: {
                "name": k.name,
                "id": k.key_id or "-",
                "private": "yes" if k.has_private else "no",
            },
            ("name", "id", "private"),
        )
    )
)
