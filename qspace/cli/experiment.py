"""`qspace experiment create | status | results`: the closed loop from the command line.

Like `qspace score --queue`, the commands work on the store and enqueue on the task queue directly (the same code
as ``POST /api/datasets/{ds}/experiments``); the workers (`qspace serve` or `qspace worker`) do the training.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backend.settings import Settings, get_settings
from qspace.cli.errors import fail
from qspace.cli.scoring import parse_params

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from backend.experiment_schemas import ExperimentOut

experiment_app = typer.Typer(no_args_is_help=True, help="Train on selections and curricula, compare with controls.")

FINISHED = ("done", "failed", "cancelled")


def _open(settings: Settings) -> tuple[Engine, sessionmaker[Session]]:
    from backend.db import make_engine, make_session_factory
    from backend.migrate import upgrade

    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    return engine, make_session_factory(engine)


def _factory(settings: Settings) -> sessionmaker[Session]:
    return _open(settings)[1]


def _arms(selections: list[int], curricula: list[int]) -> list[dict[str, int]]:
    return [{"selection": s} for s in selections] + [{"curriculum": c} for c in curricula]


def _out(factory: sessionmaker[Session], exp_id: int) -> ExperimentOut:
    from backend.experiment_results import experiment_out
    from backend.experiments import get_experiment

    with factory() as session:
        return experiment_out(session, get_experiment(session, exp_id))


def _progress_line(out: ExperimentOut) -> str:
    done = sum(j.status == "done" for j in out.jobs)
    running = [j for j in out.jobs if j.status == "running"]
    now = ", ".join(f"job {j.id} step {j.step}/{j.total_steps}" for j in running[:3])
    return f"experiment {out.id} {out.status}: {done}/{len(out.jobs)} jobs done" + (f" ({now})" if now else "")


@experiment_app.command()
def create(
    dataset: Annotated[str, typer.Argument(help="dataset name or id")],
    selection: Annotated[list[int] | None, typer.Option(help="an arm: a saved selection id (repeatable)")] = None,
    curriculum: Annotated[list[int] | None, typer.Option(help="an arm: a saved curriculum id (repeatable)")] = None,
    suite: Annotated[
        list[str] | None, typer.Option(help="eval suite name (repeatable; see GET /api/eval_suites)")
    ] = None,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1,2",
    base_model: Annotated[str | None, typer.Option(help="LLaVA folder or hub name (default: the dataset's)")] = None,
    preset: Annotated[str, typer.Option(help="training preset: quick or paper_lora")] = "quick",
    train: Annotated[list[str] | None, typer.Option(help="training override key=value (repeatable)")] = None,
    control: Annotated[str, typer.Option(help="random (an equal-size random control per arm) or none")] = "random",
    task_mix: Annotated[bool, typer.Option(help="controls match their arm's task-type mix")] = False,
    name: Annotated[str | None, typer.Option(help="experiment name")] = None,
    follow: Annotated[bool, typer.Option(help="wait until every job has finished")] = False,
    poll_s: Annotated[float, typer.Option(help="with --follow: seconds between progress lines")] = 5.0,
) -> None:
    """Create an experiment (or resume the same one) and enqueue its jobs. Prints the experiment id."""
    from pydantic import ValidationError

    from backend.datasets import NotFound
    from backend.experiment_schemas import ExperimentCreate
    from backend.experiments import ExperimentError, submit_experiment
    from backend.queue import QueueUnavailable, TaskQueue
    from backend.space import SpaceStore

    settings = get_settings()
    try:
        overrides = parse_params(None, train or [])
        req = ExperimentCreate.model_validate(
            {
                "name": name,
                "base_model": base_model,
                "arms": _arms(selection or [], curriculum or []),
                "seeds": [int(s) for s in seeds.split(",") if s.strip()],
                "control": control,
                "control_task_mix": task_mix,
                "train": {"preset": preset, **overrides},
                "eval": {"suites": suite or []},
            }
        )
    except (ValidationError, ValueError) as exc:
        fail(str(exc).replace("\n", " "), code=2)
    engine, factory = _open(settings)
    queue = TaskQueue(settings)
    try:
        with factory() as session:
            store = SpaceStore(engine)
            exp = submit_experiment(session, store, settings, queue, dataset, req, check=queue.check)
            exp_id = exp.id
    except (ExperimentError, NotFound, QueueUnavailable) as exc:
        fail(str(exc), code=2)
    finally:
        queue.close()
    out = _out(factory, exp_id)
    typer.secho(_progress_line(out), err=True)
    while follow and out.status not in FINISHED:
        time.sleep(poll_s)
        out = _out(factory, exp_id)
        typer.secho(_progress_line(out), err=True)
    typer.echo(exp_id)
    if out.status in ("failed", "cancelled"):
        raise typer.Exit(1)


@experiment_app.command()
def status(experiment: Annotated[int, typer.Argument(help="experiment id")]) -> None:
    """Arms and jobs of an experiment: status, step, loss, ETA, trained model folder."""
    from backend.datasets import NotFound

    try:
        out = _out(_factory(get_settings()), experiment)
    except NotFound as exc:
        fail(str(exc), code=2)
    labels = {a.id: a.label for a in out.arms}
    typer.echo(f"experiment {out.id} ({out.name or 'unnamed'}) {out.status}; base model {out.base_model}")
    for j in out.jobs:
        loss = "-" if j.loss is None else f"{j.loss:.4f}"
        eta = "" if j.eta_s is None or j.status != "running" else f", eta {j.eta_s:.0f} s"
        where = f"  {j.model_dir}" if j.model_dir else ""
        error = f"  error: {j.error}" if j.error and j.status == "failed" else ""
        typer.echo(
            f"job {j.id:>4}  {labels[j.arm_id]:<40.40} seed {j.seed:<4} {j.status:<9} step {j.step}/{j.total_steps}"
            f"  loss {loss}{eta}{where}{error}"
        )


def _ci(ci: list[float | None]) -> str:
    lo, hi = ci
    return "[-]" if lo is None or hi is None else f"[{lo:.4f}, {hi:.4f}]"


@experiment_app.command()
def results(
    experiment: Annotated[int, typer.Argument(help="experiment id")],
    format: Annotated[str, typer.Option(help="table, json or csv (one row per job x suite x metric)")] = "table",
) -> None:
    """Results per arm, suite and metric: mean over seeds with its 95% CI, and the delta against the control."""
    from backend.datasets import NotFound

    factory = _factory(get_settings())
    try:
        out = _out(factory, experiment)
    except NotFound as exc:
        fail(str(exc), code=2)
    if format == "csv":
        from backend.experiment_results import results_csv
        from backend.experiments import get_experiment

        with factory() as session:
            for part in results_csv(session, get_experiment(session, experiment)):
                typer.echo(part, nl=False)
        return
    if format == "json":
        body: dict[str, Any] = {
            "results": [r.model_dump(mode="json") for r in out.results],
            "contrasts": [c.model_dump(mode="json") for c in out.contrasts],
        }
        typer.echo(json.dumps(body, indent=1))
        return
    if format != "table":
        fail(f"--format: expected table, json or csv, got {format!r}", code=2)
    labels = {a.id: a.label for a in out.arms}
    typer.echo(f"experiment {out.id} {out.status}: {sum(j.status == 'done' for j in out.jobs)}/{len(out.jobs)} jobs")
    for r in out.results:
        mean = "-" if r.mean is None else f"{r.mean:.4f}"
        line = f"{labels[r.arm_id]:<40.40} {r.suite:<16.16} {r.metric:<12} {mean} {_ci(r.ci)} n={len(r.per_seed)}"
        if r.delta is not None and r.delta.mean is not None:
            zero = " (CI includes 0)" if r.delta.ci_includes_zero else ""
            line += f"  delta {r.delta.mean:+.4f} {_ci(r.delta.ci)}{zero}"
        typer.echo(line)
    for c in out.contrasts:
        typer.echo(
            f"contrast {labels[c.arm_id]} - {labels[c.vs_arm_id]}: {c.suite} {c.metric} "
            f"{'-' if c.mean is None else f'{c.mean:+.4f}'} {_ci(c.ci)}"
        )
