"""Browser tests: a live `uvicorn` server (API + UI) on a free port over a seeded SQLite store, driven by
Debian's Chromium through Playwright. A missing Chromium fails the tests; it never skips them."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from backend.db import make_engine, make_session_factory
from backend.settings import Settings
from qspace.server import build_app
from tests.seeding import SeededPlane, add_runs, seed_svit

CHROMIUM = os.environ.get("QSPACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DASH_UPDATE = "/_dash-update-component"
HOSTILE = '<b>bold</b> <script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    base_url: str
    settings: Settings
    factory: sessionmaker[Session]
    seeded: SeededPlane
    hostile_ds: int
    root: Path


def _seed_hostile(factory: sessionmaker[Session], root: Path) -> int:
    """A tiny dataset whose text is HTML and script: the UI must show it as text."""
    from backend.ingest import IngestOptions, ingest

    path = root / "hostile.json"
    records = [
        {
            "id": f"h{i}",
            "conversations": [
                {"from": "human", "value": f"{HOSTILE} question {i}"},
                {"from": "gpt", "value": f"**not markdown** {HOSTILE} answer {i}"},
            ],
            "task": "html" if i % 2 else "script",
            "defect": "none",
        }
        for i in range(12)
    ]
    path.write_text(json.dumps(records))
    with factory() as session:
        report = ingest(
            session,
            IngestOptions(name="hostile", paths=[path], task_type_field="task", task_type_prompts={"html": HOSTILE}),
        )
        session.commit()
    add_runs(factory, report.dataset_id, seed=3)
    return report.dataset_id


@contextmanager
def serving_in_thread(settings: Settings, name: str, prepare: Callable[[Any], None] | None = None) -> Iterator[Any]:
    """The app of ``settings`` (API and UI) served by uvicorn in a thread on ``settings.port``; ``prepare(app)``
    runs before it serves. Yields the app; stops it and closes the UI's pooled API connections after."""
    app = build_app(settings)
    if prepare is not None:
        prepare(app)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start", pytrace=False)
        time.sleep(0.05)
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(15)
        # The UI's own API client keeps pooled connections to this server: close them with it.
        app.state.dash_app.server.config["QSPACE_UI_CONTEXT"].api.close()
        app.state.engine.dispose()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("ui")
    port = free_port()
    settings = Settings(
        data_dir=root / "data",
        database_url=f"sqlite:///{root / 'qspace.db'}",
        port=port,
        image_roots=[root],
        data_roots=[root],
        chunk_size=40,  # small chunks: a run's progress moves in many steps
    )
    engine = make_engine(settings.sqlalchemy_url)
    with serving_in_thread(settings, "uvicorn-ui-tests"):
        factory = make_session_factory(engine)
        seeded = seed_svit(factory, root, n=400)
        hostile = _seed_hostile(factory, root)
        try:
            yield Live(f"http://127.0.0.1:{port}", settings, factory, seeded, hostile, root)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium chromium-driver); "
            "the browser tests need it",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1100},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Traffic:
    """Every Dash callback request the page made: (body size in bytes, parsed body)."""

    requests: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def bodies_with_input(self, component_id: str) -> list[dict[str, Any]]:
        out = []
        for _, body in self.requests:
            for item in [*body.get("inputs", []), *body.get("state", [])]:
                items = item if isinstance(item, list) else [item]
                if any(isinstance(i, dict) and i.get("id") == component_id for i in items):
                    out.append(body)
                    break
        return out


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture
def page(browser_context: Any, traffic: Traffic) -> Iterator[Any]:
    pg = browser_context.new_page()

    def on_request(req: Any) -> None:
        if DASH_UPDATE in req.url:
            raw = req.post_data_buffer or b""
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            traffic.requests.append((len(raw), body))

    pg.on("request", on_request)
    pg.on("pageerror", lambda exc: traffic.errors.append(str(exc)))
    try:
        yield pg
    finally:
        pg.close()
