"""The FastAPI application: one router per resource, JSON errors, auth, request-size limit."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
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
    runs,
    samples,
    scorers,
    selections,
    space,
)
from backend.datasets import NotFound, UnsafePath
from backend.db import make_engine, make_session_factory
from backend.ingest import IngestError
from backend.schemas import ERROR_RESPONSES
from backend.selections import SelectionError
from backend.settings import Settings, get_settings
from backend.space import AxisError, SpaceStore, UnknownTaskType


class BodySizeLimit:
    """Refuses request bodies over `limit` bytes with 413, before the body is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body is larger than the limit of {self.limit} bytes"}, status_code=413
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


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
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.space = SpaceStore(engine)

    guarded = [Depends(require_token)]
    app.include_router(health.router, prefix="/api")
    app.include_router(datasets.router, prefix="/api", dependencies=guarded)
    app.include_router(samples.router, prefix="/api", dependencies=guarded)
    app.include_router(scorers.router, prefix="/api", dependencies=guarded)
    app.include_router(runs.router, prefix="/api", dependencies=guarded)
    app.include_router(space.router, prefix="/api", dependencies=guarded)
    app.include_router(selections.router, prefix="/api", dependencies=guarded)
    app.include_router(curricula.router, prefix="/api", dependencies=guarded)
    app.include_router(jobs.router, prefix="/api", dependencies=guarded)
    app.include_router(eval_suites.router, prefix="/api", dependencies=guarded)
    app.include_router(experiments.router, prefix="/api", dependencies=guarded)

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

    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes)
    return app


def _plain(errors: Any) -> Any:
    # Validation errors may hold exception objects in "ctx"; keep only JSON-safe parts.
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
