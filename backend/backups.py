"""Backups: the store plus the data directory's derived files, in one tar.gz with a manifest (`qspace backup`,
`qspace restore`).

What an archive holds:

- ``manifest.json`` (first member): format, qspace version, the store's Alembic revision, created_at, the backend,
  and every other member with its size and sha256.
- ``store/qspace.sqlite3`` (SQLite's online backup API: a consistent copy while the server runs) or
  ``store/qspace.pgdump`` (``pg_dump --format=custom``: one snapshot).
- ``data/eval_suites/``: the eval suites experiments name.
- ``data/experiments/``: each training job's folder, without its weights (``model/``, ``adapter/``,
  ``checkpoint-*/``), so job.json, result.json and each stage's done.json; ``with_models`` keeps the weights and
  adds ``data/models/`` (the demo's and other local models).
- ``data/runs/``: what runs keep beside their scores: CLIP embeddings (``keep_embeddings``; ~3 GB per 1M samples at
  768-d) and cluster labels. Costly to recompute (a GPU pass), so they travel with the store.

Not included: the broker and result databases (queued work is re-enqueued by the runs' sweeper and re-posting),
thumbnails, tmp and ``columns/`` (caches: persisted score columns are rebuilt from the store), and the source data
(dataset files and images, wherever they lie: a dataset names its image root; back those up with the source).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import URL

from backend import __version__
from backend.migrate import current, upgrade
from backend.models import Base
from backend.settings import Settings

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "store/qspace.sqlite3"
PG_MEMBER = "store/qspace.pgdump"
DATA_DIRS = ("eval_suites", "experiments", "runs")  # runs/: kept CLIP embeddings and cluster labels (derived, costly)
MODEL_DIRS = ("models",)
WEIGHT_DIRS = ("model", "adapter")  # of a training job's stage; and checkpoint-*


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


# --- helpers ---------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_weights(rel: Path) -> bool:
    return any(p in WEIGHT_DIRS or p.startswith("checkpoint-") for p in rel.parts[:-1])


def derived_files(data_dir: Path, with_models: bool = False) -> Iterator[tuple[Path, str]]:
    """(file, archive name) of the data directory's derived files, in a stable order."""
    for top in DATA_DIRS + (MODEL_DIRS if with_models else ()):
        root = data_dir / top
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(data_dir)
            if top == "experiments" and not with_models and _is_weights(rel.relative_to(top)):
                continue
            yield path, f"data/{rel.as_posix()}"


def _pg_args(engine: Engine) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and an environment carrying it (never on a command line)."""
    url: URL = engine.url
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} is not on PATH: install the PostgreSQL client tools (e.g. apt install "
                          "postgresql-client) of the server's major version")
    return found


def _run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def _sqlite_path(engine: Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite store has nothing to back up")
    return Path(database)


def _revision_of_sqlite_file(path: Path) -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return str(row[0]) if row else None


def _sqlite_copy(src: Path, dst: Path) -> None:
    """Page-by-page copy with SQLite's online backup API: consistent while others read and write `src`."""
    source = sqlite3.connect(src, timeout=30)
    target = sqlite3.connect(dst, timeout=30)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


# --- backup ----------------------------------------------------------------------------------------------------


def backup(settings: Settings, engine: Engine, out: Path, with_models: bool = False) -> dict[str, Any]:
    """Write the store and the derived files of `settings.data_dir` to the tar.gz `out`; returns the manifest."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".qspace-backup-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        if engine.dialect.name == "sqlite":
            store, member = tmp / "store.sqlite3", SQLITE_MEMBER
            _sqlite_copy(_sqlite_path(engine), store)
            revision = _revision_of_sqlite_file(store)  # the copy's own, not a later migration's
        elif engine.dialect.name == "postgresql":
            store, member = tmp / "store.pgdump", PG_MEMBER
            revision = current(engine)
            uri, env = _pg_args(engine)
            _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={store}",
                  f"--dbname={uri}"], env)
        else:
            raise BackupError(f"no backup for a {engine.dialect.name} store")
        entries = [(store, member), *derived_files(Path(settings.data_dir), with_models)]
        manifest = {
            "format": FORMAT,
            "qspace_version": __version__,
            "alembic_revision": revision,
            "created_at": datetime.now(UTC).isoformat(),
            "database": engine.dialect.name,
            "store": member,
            "with_models": with_models,
            "files": [{"path": name, "bytes": p.stat().st_size, "sha256": _sha256(p)} for p, name in entries],
        }
        partial = tmp / "archive.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            blob = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(blob), int(datetime.now(UTC).timestamp()), 0o644
            tar.addfile(info, io.BytesIO(blob))
            for path, name in entries:
                tar.add(path, arcname=name, recursive=False)
        os.replace(partial, out)  # a reader never sees half an archive
    return manifest


# --- restore ---------------------------------------------------------------------------------------------------


def read_manifest(archive: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            manifest: dict[str, Any] = json.load(member)
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise BackupError(f"{archive}: not a qspace backup ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: backup format {manifest.get('format')!r}; this qspace reads format {FORMAT}")
    return manifest


def store_rows(engine: Engine) -> int:
    """Rows in qspace's tables (0 for a store without them)."""
    from sqlalchemy import inspect

    present = set(inspect(engine).get_table_names())
    total = 0
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in present:
                total += int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    return total


def _known_revision(revision: str | None) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from backend.migrate import alembic_config

    if revision is None:
        raise BackupError("the backup's store has no schema revision: not a qspace store")
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        raise BackupError(
            f"the backup's schema revision {revision} is unknown here: it was made by a newer qspace; upgrade qspace"
        ) from None


def _extract(archive: Path, manifest: dict[str, Any], into: Path) -> None:
    wanted = {f["path"]: f for f in manifest["files"]}
    with tarfile.open(archive, "r:gz") as tar:
        names = [m for m in tar.getmembers() if m.name in wanted]
        if {m.name for m in names} != set(wanted):
            missing = sorted(set(wanted) - {m.name for m in names})
            raise BackupError(f"{archive}: members the manifest lists are missing: {', '.join(missing[:5])}")
        tar.extractall(into, members=names, filter="data")  # no absolute paths, links out, or devices
    for name, entry in wanted.items():
        if _sha256(into / name) != entry["sha256"]:
            raise BackupError(f"{archive}: {name} does not match its checksum in the manifest (damaged archive)")


def _restore_postgresql(engine: Engine, dump: Path) -> None:
    uri, env = _pg_args(engine)
    # A clean slate: pg_restore --clean only drops what the dump holds, and tables of a newer schema would stay.
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    _run([_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", f"--dbname={uri}", str(dump)], env)


def restore(settings: Settings, engine: Engine, archive: Path, force: bool = False) -> dict[str, Any]:
    """Restore `archive` into the store of `engine` and `settings.data_dir`, then migrate the store to head.

    Refuses a store that holds rows unless `force`; refuses a backup of another backend or from a newer qspace."""
    archive = Path(archive)
    manifest = read_manifest(archive)
    if manifest.get("database") != engine.dialect.name:
        raise BackupError(
            f"the backup holds a {manifest.get('database')} store, the configured store is {engine.dialect.name} "
            "(set QSPACE_DATABASE_URL to a store of the same kind)"
        )
    _known_revision(manifest.get("alembic_revision"))
    rows = store_rows(engine)
    if rows and not force:
        raise BackupError(
            f"the store {engine.url.render_as_string(hide_password=True)} is not empty ({rows} rows); "
            "restore into an empty one, or pass --force to replace it"
        )
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".qspace-restore-", dir=data_dir) as tmp_name:
        tmp = Path(tmp_name)
        _extract(archive, manifest, tmp)
        store = tmp / manifest["store"]
        if engine.dialect.name == "sqlite":
            target = _sqlite_path(engine)
            engine.dispose()  # no pooled connection may hold the old pages
            target.parent.mkdir(parents=True, exist_ok=True)
            _sqlite_copy(store, target)
        else:
            _restore_postgresql(engine, store)
        for entry in manifest["files"]:
            name = entry["path"]
            if not name.startswith("data/"):
                continue
            dst = data_dir / name.removeprefix("data/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / name, dst)
    engine.dispose()
    upgrade(engine)  # an older backup's schema is brought forward
    manifest["restored_revision"] = current(engine)
    return manifest
