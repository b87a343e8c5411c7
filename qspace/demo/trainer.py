"""``python -m qspace.demo.trainer JOB --seed S``: the demo's tiny models trained in a child process of the served
demo, their progress written to background job JOB (kind ``demo_models``), which the Datasets page, the explore
page and the demo's terminal show.

A child process, not a thread: training keeps both cores busy in torch and in Python, and the server in the
demo's process must keep answering (it runs at a lower priority, too). Its settings come as ``QSPACE_*``
variables (:func:`qspace.worker.child_environment`); its log goes where the parent points stdout and stderr.

The job stays ``running`` when the models are trained (its message says so and its result names them): the
demo posts the scoring runs and then ends the job, so there is no moment when neither the job nor the runs are
pending. Exit status: 0 trained (or found in the cache), 1 failed (the job says why), 3 cancelled, 143 stopped
(SIGTERM: the demo stops; its temporary folders are removed on the way out).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from backend.db import make_engine, make_session_factory
from backend.jobs import JobCancelled, JobProgress
from backend.settings import get_settings
from qspace.demo.models import models_root, train_models

NICENESS = 5  # below the server and the scoring worker: the app stays responsive while this trains
CANCELLED = 3
STOPPED = 128 + signal.SIGTERM  # the demo stopped it (its job says so)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (the demo stopping) unwinds the training, so its temporary folders are removed on the way out."""
    raise SystemExit(STOPPED)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qspace.demo.trainer", description=__doc__.splitlines()[0])
    ap.add_argument("job", type=int, help="the demo_models job to report to")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    settings = get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    job = JobProgress(make_session_factory(engine), args.job, every_s=0.5)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        job.say(line.strip())

    try:
        say("demo models: preparing the training")
        with job.heartbeat():
            models = train_models(models_root(settings), args.seed, echo=say, progress=job.step)
        result = {"clip": str(models.clip), "llava": str(models.llava), "seconds": models.manifest.get("seconds")}
        job.step(job.total, job.total)
        job.say("models trained; the scoring runs start next", result=result)
        return 0
    except JobCancelled:
        print("demo models: the job was cancelled; training stopped", file=sys.stderr, flush=True)
        return CANCELLED
    except SystemExit as exc:
        if exc.code != STOPPED:
            raise
        print("demo models: stopped by the demo", file=sys.stderr, flush=True)
        return STOPPED
    except BaseException as exc:
        traceback.print_exc()
        with contextlib.suppress(Exception):
            job.finish("failed", error=f"{type(exc).__name__}: {exc}"[:2000], message="training failed")
        return 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
