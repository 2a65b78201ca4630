"""The keys group: signing keys for units (generate, list)."""

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from .listings import Listing, listing_command
from .output import out, say
from .wiring import edge, open_registry, sign_settings

keys_app = typer.Typer(
    name="keys",
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Signing keys for units (the agents' --trusted-keys hold their root keys' .pub "
    "files; the trust record, signed by a root key, adds, expires and revokes keys).",
)

RootOption = Annotated[
    str,
    typer.Option(
        "--root",
        help="The root key that signs the trust record (a key name in the keys directory, "
        "or a path): its .pub is in every agent's trusted directory.",
        show_default=False,
    ),
]


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


def _warn(message: str) -> None:
    say(f"fleetpy: warning: {message}")


def _root(ctx: typer.Context, spec: str) -> Any:
    from ..unitfile.signing import load_signer

    return load_signer(spec, sign_settings(ctx).keys_dir, _warn)


def _until(expires: float | None) -> str:
    import time

    return "-" if expires is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))


@keys_app.command("trust")
@edge
def keys_trust(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="A key name in the keys directory, or a .pub file.")],
    root: RootOption,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            help="When its signatures stop counting: a span (90d, 12h) or a UTC date "
            "(2027-01-31). Default: never. Given again, replaces the expiry.",
        ),
    ] = None,
) -> None:
    """Let KEY sign units on every agent from now on (the trust record, signed with
    --root; agents follow it within a second, without a restart)."""
    import time

    from ..client import trust

    signer = _root(ctx, root)
    when = None if expires is None else trust.parse_when(expires, "--expires", time.time())
    release = trust.release_key(key, sign_settings(ctx).keys_dir, when)
    record, _ = trust.trust(open_registry(ctx), signer, release, _warn)
    out(
        f"Trusted key {release.key_id} ({release.name}) until {_until(when)}; "
        f"trust record serial {record.serial}"
    )


@keys_app.command("revoke")
@edge
def keys_revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="A key id, a key name, or a .pub file.")],
    root: RootOption,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record.")] = "",
) -> None:
    """Revoke KEY for good: its signatures stop counting on every agent at once. A unit
    running with only its signature keeps running or is stopped as each agent's
    on_revoke says (default keep); re-sign it with another key."""
    from ..client import trust

    kid = trust.key_ref(key, sign_settings(ctx).keys_dir)
    record = trust.revoke(open_registry(ctx), _root(ctx, root), kid, reason, _warn)
    out(f"Revoked key {kid}; trust record serial {record.serial}")


@keys_app.command("rotate")
@edge
def keys_rotate(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(help="The key going: a key name or a .pub file.")],
    new: Annotated[str, typer.Argument(help="The key coming: a key name or a .pub file.")],
    root: RootOption,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="How long OLD's signatures still count (a span: 90m, 24h, 7d): re-sign "
            "meanwhile (`fleetpy apply --sign NEW`).",
        ),
    ] = "24h",
) -> None:
    """Trust NEW and let OLD expire after --grace, in one trust record."""
    import time

    from ..client import trust

    keys_dir = sign_settings(ctx).keys_dir
    signer = _root(ctx, root)
    now = time.time()
    until = trust.parse_when(grace, "--grace", now)
    coming = trust.release_key(new, keys_dir, None)
    going = trust.release_key(old, keys_dir, None)
    record = trust.rotate(open_registry(ctx), signer, going, coming, until - now, _warn)
    out(
        f"Trusted key {coming.key_id} ({coming.name}); key {going.key_id} ({going.name}) "
        f"expires {_until(until)}: re-sign before (`fleetpy apply --sign {coming.name}`); "
        f"trust record serial {record.serial}"
    )


def _trusted(ctx: typer.Context) -> Sequence[Any]:
    import time

    from ..client import trust
    from ..unitfile.signing import load_trusted_keys

    own = load_trusted_keys(sign_settings(ctx).keys_dir, _warn)
    return trust.rows(trust.read(open_registry(ctx), own), time.time())


keys_app.command("trusted")(
    listing_command(
        Listing(
            "trusted",
            "List the trust record's keys (checked with the keys directory's public keys): "
            "id, name, state (trusted, expired, revoked), expiry or revocation time, serial.",
            _trusted,
            lambda r: {
                "id": r.key_id,
                "name": r.name or None,
                "state": r.state,
                "expires" if r.state != "revoked" else "revoked_at": r.expires,
                "reason": r.reason or None,
                "serial": r.serial,
            },
            lambda r, full: {
                "id": r.key_id,
                "name": r.name or "-",
                "state": r.state,
                "until": _until(r.expires),
                "serial": str(r.serial),
            },
            ("id", "name", "state", "until", "serial"),
        )
    )
)
