"""`qspace serve` and `qspace demo`: the app, served."""

from __future__ import annotations

from typing import Annotated

import typer

from backend.settings import get_settings
from qspace.cli.errors import fail


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    worker: Annotated[bool, typer.Option(help="start an embedded scoring worker")] = True,
    ui: Annotated[bool, typer.Option(help="serve the Dash UI at /")] = True,
) -> None:
    """Run the API (and UI, and an embedded worker) in one command."""
    from qspace.server import run_server

    settings = get_settings()
    run_server(settings, host or settings.host, port or settings.port, with_worker=worker, with_ui=ui)


def demo(
    size: Annotated[int, typer.Option(help="synthetic samples")] = 3000,
    seed: Annotated[int, typer.Option(help="random seed (dataset and models)")] = 0,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open a browser")] = True,
    serve_app: Annotated[bool, typer.Option("--serve/--no-serve", help="serve when done, else exit")] = True,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    experiment: Annotated[
        bool, typer.Option(help="served: after scoring, train the paper's picks against random controls")
    ] = True,
) -> None:
    """Synthetic SVIT-like data, tiny CLIP + LLaVA trained here, scored through the queue, served (cached); then
    the paper's picks trained against random controls in the background (an experiment, about 3 minutes)."""
    from qspace.demo import DemoError, run_demo

    settings = get_settings()
    try:
        run_demo(
            settings,
            size=size,
            seed=seed,
            port=port or settings.port,
            open_browser=open_browser,
            serve=serve_app,
            progress=progress,
            experiment=experiment,
        )
    except DemoError as exc:
        fail(str(exc))
