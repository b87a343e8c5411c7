"""`qspace token create | list | revoke`: API tokens, on the store directly (shell access to it is admin access).

The secret is printed once, as the last line of `create` (so `T=$(qspace token create ... | tail -n1)` works);
only its sha256 is stored. A revoke takes effect on the server's next request: nothing caches tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from backend.settings import get_settings
from qspace.cli.errors import fail

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

token_app = typer.Typer(no_args_is_help=True, help="API tokens: named, scoped (read < write < admin), stored hashed.")


def _factory() -> sessionmaker[Session]:
    from backend.db import make_engine, make_session_factory
    from backend.migrate import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    return make_session_factory(engine)


@token_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="who holds it; shown as `created_by` of what it creates")],
    scope: Annotated[str, typer.Option(help="read (view, export), write (+ ingest, score, select, experiment) "
                                            "or admin (+ delete, manage tokens)")] = "read",
) -> None:
    """Create a token and print it (last line, shown this once)."""
    from backend.tokens import TokenError, create_token

    with _factory()() as session:
        try:
            info, secret = create_token(session, name, scope)
        except TokenError as exc:
            fail(str(exc))
    typer.echo(f"token {info.name!r} ({info.scope}) created; it is shown only now:")
    typer.echo(secret)


@token_app.command("list")
def list_() -> None:
    """The tokens: name, scope, created, revoked (never the secret, which is not stored)."""
    from backend.tokens import list_tokens

    with _factory()() as session:
        rows = list_tokens(session)
    if not rows:
        typer.echo("no tokens (the server is open unless QSPACE_API_TOKEN is set)")
        return
    typer.echo(f"{'name':<24} {'scope':<6} {'created':<20} revoked")
    for t in rows:
        revoked = t.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if t.revoked_at else "-"
        typer.echo(f"{t.name:<24} {t.scope:<6} {t.created_at:%Y-%m-%d %H:%M:%S} {revoked}")


@token_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Revoke a token; the server refuses it from its next request on."""
    from backend.tokens import TokenError, revoke_token

    with _factory()() as session:
        try:
            info = revoke_token(session, name)
        except TokenError as exc:
            fail(str(exc))
    typer.echo(f"token {info.name!r} revoked")
