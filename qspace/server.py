"""`qspace serve`: migrations, the API (and the UI), and an embedded worker, in one process tree."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from backend.api.app import create_app
from backend.db import make_engine
from backend.migrate import upgrade
from backend.settings import Settings
from qspace.worker import start_embedded_worker

log = logging.getLogger("qspace")

# A server bound at a wildcard address is reached over loopback.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def loopback_url(host: str, port: int) -> str:
    """The base URL that reaches a server bound at (`host`, `port`) from this machine."""
    host = LOOPBACK.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def warm_up() -> None:
    """Load the numba point-in-polygon kernel now, so the first lasso does not pay for it."""
    import numpy as np

    from backend.regions import points_in_polygon

    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    points_in_polygon(np.zeros(8, np.float32), np.zeros(8, np.float32), square)


def build_app(settings: Settings, with_ui: bool = True) -> FastAPI:
    """The API with the schema upgraded, and the UI mounted at / when its extra is installed."""
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    app = create_app(settings, engine)
    warm_up()
    if with_ui:
        try:
            from frontend.mount import mount_ui
        except ImportError as exc:  # the `ui` extra is optional
            log.warning("UI not served: %s", exc)
        else:
            mount_ui(app, settings)
    return app


def run_server(settings: Settings, host: str, port: int, with_worker: bool = True, with_ui: bool = True) -> None:
    settings = settings.model_copy(update={"host": host, "port": port})  # the UI's client calls this address
    app = build_app(settings, with_ui=with_ui)
    worker = start_embedded_worker(settings) if with_worker else None
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        if worker is not None:
            worker.stop()
