"""`qspace db ...`: the database schema (Alembic)."""

from __future__ import annotations

import typer

from backend.settings import get_settings

db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic).")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Bring the schema to REVISION (default: the newest)."""
    from backend.db import make_engine
    from backend.migrate import current, upgrade

    settings = get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine, revision)
    typer.echo(f"schema at {current(engine)} ({engine.url.render_as_string(hide_password=True)})")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Step the schema back to REVISION ('base' drops everything)."""
    from backend.db import make_engine
    from backend.migrate import current, downgrade

    engine = make_engine(get_settings().sqlalchemy_url)
    downgrade(engine, revision)
    typer.echo(f"schema at {current(engine)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision."""
    from backend.db import make_engine
    from backend.migrate import current

    typer.echo(current(make_engine(get_settings().sqlalchemy_url)) or "empty")
