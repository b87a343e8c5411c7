"""Generate the LLaVA-665K-shaped input for the ingest benchmark and report its size and time.

Streams 665,000 multi-turn records (LLaVA-1.5's mix of sources and response-format prompts, 5% text-only)
to one JSON list (or JSONL when --out ends in .jsonl), about 1 GB, with bounded memory.

    .venv/bin/python bench/make_llava665k.py [--n 665000] [--out /tmp/llava665k.json] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import resource
from pathlib import Path

from qspace.synthetic import make_llava665k_like


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=665_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/llava665k.json"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    s = make_llava665k_like(args.out, n=args.n, seed=args.seed)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(
        f"wrote {s['path']}: {s['n']:,} records, {s['bytes'] / 1e9:.3f} GB "
        f"({s['bytes'] / max(s['n'], 1):,.0f} B/record), {s['turns']:,} turns, {s['text_only']:,} text-only"
    )
    print(f"time: {s['seconds']:.1f} s ({s['n'] / max(s['seconds'], 1e-9):,.0f} records/s), peak RSS {peak_mb:,.0f} MB")
    print("by source: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s["by_source"].items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
