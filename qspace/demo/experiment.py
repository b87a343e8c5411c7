"""Step 6 of the served demo: the closed loop, in the background of the app. Once both runs are scored it makes the
paper's picks on the plane and trains on each against an equal-size random control, then prints what it measured.

Arms (each 10% of the dataset, so the cost does not depend on which region a pick lands in):

- **DIQ top 10%**: the paper's pick by both axes (the top-right corner of loss x CLIP);
- **3-stage curriculum**: the paper's staged builder (stage k keeps loss >= L0 + k*dL and CLIP >= S0 + k*dS,
  thresholds from the 20% and 60% quantiles as the curriculum page proposes), a third of the size per stage,
  each stage trained from the previous one;
- **grid top-right cell**: the cell of the 3 x 3 quantile grid the paper found best, capped at the same size.

Each arm gets a random control of its size (``control: "random"``), 3 seeds, the ``quick`` preset, from the
dataset's experiment base (the demo LLaVA with its projector re-initialised, :mod:`qspace.demo.experiment_base`),
evaluated on ``synthetic-colour-count`` (held-out, clean, multiple choice). The demo data has injected defects, and
the paper's picks go for high loss, which is where corrupted answers land: whatever the table shows is printed as
measured, "no evidence" included.

A second demo finds the experiment by name and shows it (or follows it, if it did not finish) instead of training
again.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import httpx
import numpy as np

from qspace.demo.messages import DemoError, Echo, say

NAME = "demo: the paper's picks vs random"
SUITE = "synthetic-colour-count"
SEEDS = [0, 1, 2]
SHARE = 0.10  # of the dataset, per arm
STAGES = 3
POLL_S = 1.0
FINISHED = ("done", "failed", "cancelled")


def plane_axes(runs: dict[str, int]) -> tuple[str, str]:
    """The paper's plane: x = the loss of the tiny LLaVA on the sample (summed over answer tokens), y = CLIP."""
    return f"{runs['mllm_loss']}:loss_sum", f"{runs['clip']}:similarity"


def arm_size(n_samples: int) -> int:
    return max(STAGES, round(n_samples * SHARE))


def curriculum_builder(x: np.ndarray, y: np.ndarray, size: int) -> dict[str, Any]:
    """The staged builder with the curriculum page's proposal: start at the 20% quantiles, step (q60 - q20) / k."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        raise DemoError("the plane has no finite points to build a curriculum from")
    qx = np.quantile(x[ok].astype(np.float64), [0.2, 0.6])
    qy = np.quantile(y[ok].astype(np.float64), [0.2, 0.6])
    return {
        "stages": STAGES,
        "x_min": float(qx[0]),
        "y_min": float(qy[0]),
        "dx": float(qx[1] - qx[0]) / STAGES,
        "dy": float(qy[1] - qy[0]) / STAGES,
        "per_stage": size // STAGES,
        "seed": 0,
    }


def _ok(r: httpx.Response, what: str, status: int) -> Any:
    """The response's JSON, or a DemoError naming the request."""
    if r.status_code != status:
        raise DemoError(f"{what}: HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


def find_experiment(client: httpx.Client, ds: int) -> dict[str, Any] | None:
    """The demo's experiment on this dataset from an earlier start, unless it failed or was cancelled."""
    found = _ok(client.get(f"/api/datasets/{ds}/experiments"), "GET experiments", 200)
    mine = [e for e in found if e.get("name") == NAME and e["status"] not in ("failed", "cancelled")]
    return max(mine, key=lambda e: e["id"]) if mine else None


def create_arms(client: httpx.Client, ds: int, runs: dict[str, int]) -> list[dict[str, int]]:
    """The three picks, saved (two selections and a curriculum), as experiment arms."""
    x, y = plane_axes(runs)
    n = int(_ok(client.get(f"/api/datasets/{ds}"), "GET dataset", 200)["n_samples"])
    size = arm_size(n)
    share = round(100 * SHARE)
    diq = {"name": f"DIQ top {share}%", "x": x, "y": y, "region": {"type": "top", "percent": share, "axes": "both"}}
    cell = {
        "name": "grid top-right cell",
        "x": x,
        "y": y,
        "region": {"type": "grid", "n": 3, "cell": [2, 2]},
        "sample": {"n": size, "seed": 0},
    }
    arms: list[dict[str, int]] = []
    for body in (diq, cell):
        sel = _ok(client.post(f"/api/datasets/{ds}/selections", json=body), f"POST selection {body['name']}", 201)
        arms.append({"selection": int(sel["id"])})
    plane = _ok(client.get(f"/api/datasets/{ds}/space", params={"x": x, "y": y, "format": "json"}), "GET space", 200)
    builder = curriculum_builder(np.asarray(plane["x"], dtype=float), np.asarray(plane["y"], dtype=float), size)
    body = {"name": "the paper's 3-stage curriculum", "x": x, "y": y, "builder": builder}
    cur = _ok(client.post(f"/api/datasets/{ds}/curricula", json=body), "POST curriculum", 201)
    arms.insert(1, {"curriculum": int(cur["id"])})
    return arms


def start_experiment(client: httpx.Client, ds: int, runs: dict[str, int], echo: Echo = say) -> dict[str, Any]:
    """The demo's experiment: found from an earlier start, or created now (arms saved, jobs enqueued)."""
    found = find_experiment(client, ds)
    if found is not None:
        echo(f"demo: experiment {found['id']} from an earlier start ({found['status']})")
        return found
    suites = {s["name"] for s in _ok(client.get("/api/eval_suites"), "GET eval suites", 200)}
    if SUITE not in suites:
        raise DemoError(f"the eval suite {SUITE!r} is missing (have: {sorted(suites)})")
    req = {
        "name": NAME,
        "arms": create_arms(client, ds, runs),
        "seeds": SEEDS,
        "control": "random",
        "train": {"preset": "quick"},
        "eval": {"suites": [SUITE]},
    }
    exp = _ok(client.post(f"/api/datasets/{ds}/experiments", json=req), "POST experiment", 202)
    echo(
        f"demo: experiment {exp['id']} started in the background: {len(exp['arms'])} arms "
        f"(3 picks, each with a random control) x {len(SEEDS)} seeds = {len(exp['jobs'])} training jobs"
    )
    return exp


def follow_experiment(
    client: httpx.Client, exp: dict[str, Any], progress: bool = True, echo: Echo = say, poll_s: float = POLL_S
) -> dict[str, Any]:
    """Wait for the experiment to finish, with a bar over its jobs; returns it as served."""
    from tqdm import tqdm

    total = len(exp["jobs"])
    bar = tqdm(desc="demo experiment", unit="job", total=total, disable=not progress, file=sys.stderr)
    try:
        while exp["status"] not in FINISHED:
            time.sleep(poll_s)
            exp = _ok(client.get(f"/api/experiments/{exp['id']}"), "GET experiment", 200)
            bar.update(sum(j["status"] == "done" for j in exp["jobs"]) - bar.n)
    finally:
        bar.close()
    if exp["status"] != "done":
        failed = [j for j in exp["jobs"] if j["status"] == "failed"]
        why = f"; first error: {failed[0]['error']}" if failed else ""
        echo(f"demo: experiment {exp['id']} {exp['status']}{why}")
    return exp


def _pct(v: float | None) -> str:
    return "  n/a" if v is None or not math.isfinite(v) else f"{100 * v:5.1f}"


def _signed(v: float | None) -> str:
    return "  n/a" if v is None or not math.isfinite(v) else f"{100 * v:+5.1f}"


def _level(mean: float | None, ci: list[float | None], fmt: Any) -> str:
    return f"{fmt(mean)} [{fmt(ci[0])},{fmt(ci[1])}]"


def verdict(ci: list[float | None]) -> str:
    """What a delta's 95% CI says, in words."""
    lo, hi = ci if len(ci) == 2 else (None, None)
    if lo is None or hi is None:
        return "no CI (too few results)"
    if lo > 0:
        return "better than random"
    if hi < 0:
        return "worse than random"
    return "no evidence it beats random (CI includes 0)"


def result_table(exp: dict[str, Any], metric: str = "accuracy") -> str:
    """Each pick against its control on each suite: accuracy (%) with 95% CIs over seeds, the delta with its paired
    bootstrap CI (items and seeds), and what that CI says."""
    arms = {a["id"]: a for a in exp["arms"]}
    rows = [r for r in exp["results"] if r["metric"] == metric and arms[r["arm_id"]]["kind"] != "control"]
    by_arm = {(r["arm_id"], r["suite"]): r for r in exp["results"] if r["metric"] == metric}
    lines = [
        f"experiment {exp['id']}: {metric} (%) on held-out items, mean over seeds {exp['seeds']} [95% CI]",
        f"{'pick':<44} {'n':>5}  {'pick':>19}  {'random control':>19}  {'delta':>19}  verdict",
    ]
    for r in rows:
        arm = arms[r["arm_id"]]
        delta = r.get("delta") or {}
        control = by_arm.get((delta.get("vs_arm_id"), r["suite"])) or {"mean": None, "ci": [None, None]}
        dci = delta.get("ci") or [None, None]
        lines.append(
            f"{arm['label'][:44]:<44} {arm['n']:>5}  {_level(r['mean'], r['ci'], _pct)}"
            f"  {_level(control['mean'], control['ci'], _pct)}"
            f"  {_level(delta.get('mean'), dci, _signed)}  {verdict(dci)}"
        )
    if not rows:
        lines.append("(no results)")
    return "\n".join(lines)
