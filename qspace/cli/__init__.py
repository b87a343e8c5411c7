"""The `qspace` command. Each subject has its module (db, data, scoring, serving); this one assembles them in the
order `qspace --help` lists them. Commands import what they need when they run, so `qspace --help` stays quick and
torch loads only for the commands that score."""

from __future__ import annotations

import sys

import typer

from qspace.cli import backup, data, scoring, serving
from qspace.cli.db import db_app
from qspace.cli.experiment import experiment_app
from qspace.cli.tokens import token_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Explore the quality space of multimodal data.")
app.add_typer(db_app, name="db")
app.command()(data.ingest)
app.command()(serving.serve)
app.command()(serving.demo)
app.command("export")(data.export)
app.command()(scoring.worker)
app.command()(scoring.score)
app.command("tiny-models")(scoring.tiny_models)
app.add_typer(experiment_app, name="experiment")
app.add_typer(token_app, name="token")
app.command()(backup.backup)
app.command()(backup.restore)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
