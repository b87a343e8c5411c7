"""Build the paper's 3-stage curriculum and an equal-size random control over REST, and download both.

    python examples/paper_curriculum.py --url http://127.0.0.1:8000 --dataset svit --per-stage 2400 --out out/

Stage k keeps loss >= L_min + k*dL and clip >= S_min + k*dS (Wu et al., arXiv 2407.00102). Here L_min and
S_min are the pool's medians and dL, dS a sixth of the distance from the median to the 95th percentile, so
the last stage sits near the top-right corner. Set QSPACE_API_TOKEN if the server requires it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--dataset", required=True, help="dataset name or id")
    p.add_argument("--per-stage", type=int, default=2400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("curriculum-out"))
    args = p.parse_args(argv)

    token = os.environ.get("QSPACE_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.url.rstrip("/") + "/api", headers=headers, timeout=300) as api:
        datasets = api.get("/datasets").raise_for_status().json()
        match = [d for d in datasets if d["name"] == args.dataset or str(d["id"]) == args.dataset]
        if not match:
            print(f"no dataset {args.dataset!r}; have {[d['name'] for d in datasets]}", file=sys.stderr)
            return 2
        ds = match[0]["id"]

        q = api.get(f"/datasets/{ds}/summary", params={"x": "loss", "y": "clip"}).raise_for_status().json()["quantiles"]
        x_min, y_min = q["x"]["0.5"], q["y"]["0.5"]
        dx, dy = (q["x"]["0.95"] - x_min) / 6, (q["y"]["0.95"] - y_min) / 6
        builder = {
            "stages": 3,
            "x_min": x_min,
            "y_min": y_min,
            "dx": dx,
            "dy": dy,
            "per_stage": args.per_stage,
            "seed": args.seed,
        }
        r = api.post(
            f"/datasets/{ds}/curricula", json={"name": "paper 3-stage", "x": "loss", "y": "clip", "builder": builder}
        )
        if r.status_code != 201:
            print(f"curriculum refused: {r.json()['detail']}", file=sys.stderr)
            return 1
        cur = r.json()
        total = cur["count"]
        for st in cur["stages"]:
            print(f"stage {st['position'] + 1} {st['name']:<15} {st['count']:>7} samples  ({st['recipe']['rule']})")

        control = (
            api.post(
                f"/datasets/{ds}/selections",
                json={
                    "name": f"random control n={total}",
                    "region": {"type": "all"},
                    "sample": {"n": total, "seed": args.seed},
                },
            )
            .raise_for_status()
            .json()
        )
        print(f"random control       {control['count']:>7} samples")

        args.out.mkdir(parents=True, exist_ok=True)
        zip_path = args.out / f"curriculum-{cur['id']}.zip"
        with api.stream("GET", f"/curricula/{cur['id']}/export") as resp, zip_path.open("wb") as fh:
            resp.raise_for_status()
            for chunk in resp.iter_bytes():
                fh.write(chunk)
        ctrl_path = args.out / f"random-control-{control['id']}.json"
        with (
            api.stream("GET", f"/selections/{control['id']}/export", params={"format": "llava"}) as resp,
            ctrl_path.open("wb") as fh,
        ):
            resp.raise_for_status()
            for chunk in resp.iter_bytes():
                fh.write(chunk)
        print(f"wrote {zip_path} and {ctrl_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
