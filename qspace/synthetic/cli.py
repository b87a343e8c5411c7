"""python -m qspace.synthetic svit OUT --n N --seed S | llava665k OUT.json --n N

A plain argparse entry point, so the generators run without the app's console command (benchmarks, CI).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from qspace.synthetic.llava665k import make_llava665k_like
from qspace.synthetic.svit import make_svit_like

DESCRIPTION = "Synthetic data: an SVIT-like dataset with rendered images, and a LLaVA-665K-shaped file."


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qspace.synthetic", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("svit", help="SVIT-like dataset with rendered images and labelled defects")
    a.add_argument("out", type=Path)
    a.add_argument("--n", type=int, default=3000)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--image-size", type=int, default=128)
    a.add_argument("--defect-rate", type=float, default=0.2)
    b = sub.add_parser("llava665k", help="LLaVA-665K-shaped JSON/JSONL file (no images)")
    b.add_argument("out", type=Path)
    b.add_argument("--n", type=int, default=665_000)
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.cmd == "svit":
        out = make_svit_like(args.out, args.n, args.seed, args.image_size, args.defect_rate)
        print(f"wrote {args.n} samples to {out} in {time.perf_counter() - t0:.1f} s")
    else:
        summary = make_llava665k_like(args.out, args.n, args.seed)
        print(orjson.dumps(summary).decode())
    return 0
