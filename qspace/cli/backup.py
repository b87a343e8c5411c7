"""`qspace backup OUT` and `qspace restore IN`: the store and the data directory's derived files (what an archive
holds and leaves out: backend/backups.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backend.settings import get_settings
from qspace.cli.errors import fail


def backup(
    out: Annotated[Path, typer.Argument(help="the archive to write (.tar.gz)")],
    with_models: Annotated[
        bool, typer.Option(help="also the training jobs' weights and data_dir/models (large)")
    ] = False,
) -> None:
    """Back up the store (SQLite online backup, or pg_dump) and the data directory's derived files."""
    from backend.backups import BackupError
    from backend.backups import backup as run_backup
    from backend.db import make_engine

    settings = get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    try:
        manifest = run_backup(settings, engine, out, with_models=with_models)
    except BackupError as exc:
        fail(str(exc))
    size = sum(f["bytes"] for f in manifest["files"])
    typer.echo(
        f"backed up a {manifest['database']} store at revision {manifest['alembic_revision']} and "
        f"{len(manifest['files']) - 1} files ({size / 1e6:.1f} MB before compression) to {out}"
    )


def restore(
    archive: Annotated[Path, typer.Argument(help="an archive written by `qspace backup`")],
    force: Annotated[bool, typer.Option(help="replace a store that is not empty")] = False,
) -> None:
    """Restore a backup into the configured store and data directory, then migrate it forward."""
    from backend.backups import BackupError
    from backend.backups import restore as run_restore
    from backend.db import make_engine

    settings = get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    try:
        manifest = run_restore(settings, engine, archive, force=force)
    except BackupError as exc:
        fail(str(exc))
    typer.echo(
        f"restored a backup of {manifest['created_at']} (revision {manifest['alembic_revision']}, now "
        f"{manifest['restored_revision']}) and {len(manifest['files']) - 1} files into {settings.data_dir}"
    )
