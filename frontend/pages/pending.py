"""Work still going on for a dataset (background jobs, scorer runs), in words: what the Datasets page lists next
to its runs and what the explore page names while its plane waits for it."""

from __future__ import annotations

from frontend.api_shapes import Job, Run

ACTIVE = ("queued", "running")  # statuses that still move: pages poll while one is shown
JOB_LABELS = {"demo_models": "training the demo models", "ingest": "ingesting"}
# Runs of these scorers give the axes the explore page draws by default (the paper's loss x CLIP plane).
AXIS_SHORTCUT_OF = {"clip": "clip", "mllm_loss": "loss", "lm_loss": "loss"}
# Jobs of these kinds end by posting such runs (the demo's training posts clip and mllm_loss).
JOBS_THAT_SCORE = {"demo_models"}


def job_label(job: Job) -> str:
    kind = str(job.get("kind", ""))
    return JOB_LABELS.get(kind, kind.replace("_", " "))


def percent(done: int | None, total: int | None) -> float | None:
    """done / total in % (None while the total is unknown)."""
    if not total:
        return None
    return max(0.0, min(100.0, 100.0 * float(done or 0) / float(total)))


def where(status: str, done: int | None, total: int | None) -> str:
    """'queued', '40%', or the status when no share is known yet."""
    share = percent(done, total)
    if status == "running" and share is not None:
        return f"{share:.0f}%"
    return status


def job_phrase(job: Job) -> str:
    """'training the demo models 40%'."""
    return f"{job_label(job)} {where(str(job.get('status', '')), job.get('done'), job.get('total'))}"


def run_phrase(run: Run) -> str:
    """'clip run #3 queued', 'mllm_loss run #4 12%'."""
    status = str(run.get("status", ""))
    return f"{run.get('kind', '')} run #{run.get('id', '')} {where(status, run.get('done'), run.get('total'))}"


def active_jobs(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.get("status") in ACTIVE]


def jobs_to_show(jobs: list[Job]) -> list[Job]:
    """Active jobs, and the newest job of each kind when it failed (its error is news); newest first."""
    ordered = sorted(jobs, key=lambda j: -int(j.get("id") or 0))
    newest: dict[str, Job] = {}
    for j in ordered:
        newest.setdefault(str(j.get("kind", "")), j)
    failed = {int(j.get("id") or 0) for j in newest.values() if j.get("status") == "failed"}
    return [j for j in ordered if j.get("status") in ACTIVE or int(j.get("id") or 0) in failed]


def awaited(shortcuts: dict[str, str], runs: list[Run], jobs: list[Job], resolvable: bool) -> list[str]:
    """What the explore page's default plane is waiting for, in words; [] when it can be drawn now (or when
    nothing that would give it its axes is still going on).

    It waits while it cannot resolve both axes and some work is pending, or while a run (or a job that posts
    runs) is about to give it an axis of the paper's plane (`shortcuts`: clip, loss) that it lacks.
    """
    active_runs = [r for r in runs if r.get("status") in ACTIVE]
    pending_jobs = active_jobs(jobs)
    if not resolvable and (active_runs or pending_jobs):
        return [job_phrase(j) for j in pending_jobs] + [run_phrase(r) for r in active_runs]
    missing = set(AXIS_SHORTCUT_OF.values()) - set(shortcuts)
    coming = [r for r in active_runs if AXIS_SHORTCUT_OF.get(str(r.get("kind", ""))) in missing]
    scoring_jobs = [j for j in pending_jobs if j.get("kind") in JOBS_THAT_SCORE] if missing else []
    if not coming and not scoring_jobs:
        return []
    return [job_phrase(j) for j in scoring_jobs] + [run_phrase(r) for r in coming]
