"""The FastAPI application: one router per resource, JSON errors, auth, request-size limit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Receive, Scope, Send

from backend import __version__
from backend.api.deps import require_token
from backend.api.routers import (
    curricula,
    datasets,
    eval_suites,
    experiments,
    health,
    jobs,
    members,
    runs,
    samples,
    scorers,
    selections,
    semantic,
    space,
    tokens,
)
from backend.column_files import ColumnFiles, columns_root
from backend.datasets import NotFound, UnsafePath
from backend.db import make_engine, make_session_factory, session_scope
from backend.ingest import IngestError
from backend.ingest_jobs import fail_interrupted
from backend.schemas import ERROR_RESPONSES
from backend.selections import SelectionError
from backend.settings import Settings, get_settings
from backend.space import AxisError, SpaceStore, UnknownTaskType
from backend.sweeper import sweeper_lifespan
from backend.tokens import stamp_creators

log = logging.getLogger(__name__)

# Errors that say "the database is away for now" (a restart, a dropped connection, a full pool).
DATABASE_AWAY: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


class BodySizeLimit:
    """Refuses request bodies over `limit` bytes with 413, before the body is read.

    `larger` raises the limit for paths ending in one of its suffixes (subset imports carry id lists)."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = next((n for suffix, n in self.larger.items() if path.endswith(suffix)), self.default)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        response = JSONResponse({"detail": f"request body is larger than the limit of {limit} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # An ingest runs in a thread of the API process (backend/ingest_jobs.py): one the last server left running
    # died with it, its transaction rolled back; say so rather than show it running forever.
    try:
        with session_scope(app.state.session_factory) as session:
            fail_interrupted(session)
    except sa_exc.SQLAlchemyError:
        log.warning("could not mark interrupted ingest jobs (is the store migrated?)", exc_info=True)
    async with sweeper_lifespan(app):
        yield


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the API around `settings` and `engine` (both built from the environment when omitted)."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    engine = engine or make_engine(settings.sqlalchemy_url)
    app = FastAPI(
        title="qspace",
        version=__version__,
        description="Explore the quality space of multimodal instruction data.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        responses=ERROR_RESPONSES,
        lifespan=_lifespan,  # the stall sweeper (backend/sweeper.py) runs while the app serves
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    stamp_creators(app.state.session_factory)  # new rows record the token that made them (created_by)
    # Score columns persist as files in the data directory: a restart serves the plane without re-reading JSON.
    files = ColumnFiles(columns_root(settings.data_dir)) if settings.persist_columns else None
    app.state.space = SpaceStore(engine, files=files, max_bytes=settings.space_cache_mb * 2**20)
    # Called with a dataset's id once it is deleted: a UI mounted in this process drops what it cached of it.
    app.state.dataset_deleted = []

    guarded = [Depends(require_token)]
    app.include_router(health.router, prefix="/api")
    app.include_router(datasets.router, prefix="/api", dependencies=guarded)
    app.include_router(samples.router, prefix="/api", dependencies=guarded)
    app.include_router(scorers.router, prefix="/api", dependencies=guarded)
    app.include_router(runs.router, prefix="/api", dependencies=guarded)
    app.include_router(space.router, prefix="/api", dependencies=guarded)
    app.include_router(selections.router, prefix="/api", dependencies=guarded)
    app.include_router(members.router, prefix="/api", dependencies=guarded)  # selections' point ids
    app.include_router(curricula.router, prefix="/api", dependencies=guarded)
    app.include_router(jobs.router, prefix="/api", dependencies=guarded)
    app.include_router(semantic.router, prefix="/api", dependencies=guarded)
    app.include_router(eval_suites.router, prefix="/api", dependencies=guarded)
    app.include_router(experiments.router, prefix="/api", dependencies=guarded)
    app.include_router(tokens.router, prefix="/api", dependencies=guarded)

    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        # A restarting or unreachable database is an outage to retry, not a bug: 503, not 500.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return JSONResponse(
            {"detail": f"the database is unavailable: {reason[0][:300] if reason else type(exc).__name__}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    for away in DATABASE_AWAY:
        app.add_exception_handler(away, _database_away)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(UnsafePath)
    async def _unsafe(_: Request, exc: UnsafePath) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(AxisError)
    async def _axis(_: Request, exc: AxisError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(UnknownTaskType)
    async def _task_type(_: Request, exc: UnknownTaskType) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(SelectionError)
    async def _selection(_: Request, exc: SelectionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(IngestError)
    async def _ingest(_: Request, exc: IngestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "problems": exc.problems}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Keep FastAPI's structured errors, but lead with one readable sentence.
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"detail": f"{where}: {first.get('msg', 'invalid request')}", "errors": _plain(errors)},
            status_code=422,
        )

    app.add_middleware(
        BodySizeLimit,
        limit=settings.max_request_bytes,
        larger={
            suffix: max(settings.max_import_bytes, settings.max_request_bytes)
            for suffix in ("/selections/import", "/selections/import/file")
        },
    )
    return app


def _plain(errors: Any) -> Any:
    # Validation errors may hold exception objects in "ctx"; keep only JSON-safe parts.
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
