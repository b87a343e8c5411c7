"""Step 4b of the demo: its ``clip`` and ``mllm_loss`` runs, posted through the REST API and followed in the
terminal until they finish (runs already done are not scored again)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import httpx

from backend.settings import Settings
from qspace.demo.messages import DemoError

if TYPE_CHECKING:
    from qspace.demo.models import ModelPaths
    from qspace.worker import EmbeddedWorker

RUN_TIMEOUT_S = 3600.0  # give up following a run that makes no progress for this long


def api_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}


def run_specs(models: ModelPaths) -> dict[str, dict[str, Any]]:
    """kind -> params of the demo's two runs. Batch sizes and loader processes are runtime knobs: they change speed,
    not scores (nor the scorer key). The demo's 64 px images decode in well under a millisecond, so loader processes
    (forked again for every chunk) would cost more than they save on a 2-core machine."""
    return {
        "clip": {"model": str(models.clip), "batch_size": 64, "num_workers": 0},
        "mllm_loss": {"model": str(models.llava), "batch_size": 16, "num_workers": 0},
    }


def all_done(client: httpx.Client, dataset_id: int, specs: dict[str, dict[str, Any]]) -> bool:
    """Whether the dataset has a finished run of each spec (same scorer key), so there is nothing to score."""
    from backend.scorer_specs import scorer_key

    r = client.get(f"/api/datasets/{dataset_id}/runs")
    r.raise_for_status()
    status = {run["scorer_key"]: run["status"] for run in r.json()}
    return all(status.get(scorer_key(kind, params)) == "done" for kind, params in specs.items())


def post_runs(client: httpx.Client, dataset_id: int, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """POST the runs (create, or resume: samples already scored are not scored again); returns kind -> Run."""
    runs = {}
    for kind, params in specs.items():
        r = client.post(f"/api/datasets/{dataset_id}/runs", json={"kind": kind, "params": params})
        if r.status_code != 202:
            raise DemoError(f"POST {kind} run: HTTP {r.status_code}: {r.text[:500]}")
        runs[kind] = r.json()
    return runs


def follow_runs(
    client: httpx.Client,
    runs: dict[str, dict[str, Any]],
    worker: EmbeddedWorker,
    progress: bool = True,
    poll_s: float = 0.5,
    stall_s: float = RUN_TIMEOUT_S,
) -> dict[str, dict[str, Any]]:
    """Poll GET /api/runs/{id} until every run is finished, with one progress bar per run."""
    from tqdm import tqdm

    bars = {
        kind: tqdm(
            position=k,
            total=run["total"],
            initial=run["done"],
            desc=f"{kind:9s} run {run['id']}",
            unit="sample",
            dynamic_ncols=True,
            disable=not progress,
            file=sys.stderr,
        )
        for k, (kind, run) in enumerate(runs.items())
    }
    last_change = time.monotonic()
    try:
        while True:
            active = [k for k, r in runs.items() if r["status"] in ("queued", "running")]
            if not active:
                return runs
            time.sleep(poll_s)
            for kind in active:
                r = client.get(f"/api/runs/{runs[kind]['id']}")
                r.raise_for_status()
                run = r.json()
                if run["done"] != runs[kind]["done"] or run["status"] != runs[kind]["status"]:
                    last_change = time.monotonic()
                runs[kind] = run
                bar = bars[kind]
                bar.update(max(run["done"] - bar.n, 0))
                rate = run.get("samples_per_s")
                bar.set_postfix_str(f"{run['status']}" + (f", {rate:.0f}/s" if rate else ""), refresh=True)
            if not worker.alive():
                raise DemoError(f"the scoring worker exited (code {worker.process.poll()}); see its log")
            if time.monotonic() - last_change > stall_s:
                raise DemoError(f"no scoring progress for {stall_s:.0f} s; see the worker log")
    finally:
        for bar in bars.values():
            bar.close()
