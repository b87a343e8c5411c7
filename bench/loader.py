"""What moving prepared samples out of loader workers costs the scoring process.

The work of preparing is taken away (each sample's tensors are made once, before the workers fork), so the
time left is the loader's own: starting workers, sending records, receiving tensors. Two loaders over
the same windows, in one process:

- baseline: a torch DataLoader forked for each window (what the scorers used before), tensors through
  torch's shared-memory reductions (one segment and file descriptor per tensor);
- ``Loader`` (workers/scorers/loader.py): workers forked once and kept, tensors by value in one pickle.

    python -m bench.loader [--windows 4] [--window 512] [--workers 2]

Shapes per sample: ``clip-jpeg`` = the GPU path's JPEG bytes (60 kB) + 77 tokens; ``clip-host`` = a
336 px uint8 image + 77 tokens (CPU path at ViT-L-14-336); ``llava`` = 336 px float32 pixel values.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from workers.scorers.loader import Loader

SHAPES: dict[str, Callable[[], list[torch.Tensor]]] = {
    "clip-jpeg": lambda: [torch.zeros(60_000, dtype=torch.uint8), torch.zeros(1, 77, dtype=torch.long)],
    "clip-host": lambda: [torch.zeros(3, 336, 336, dtype=torch.uint8), torch.zeros(1, 77, dtype=torch.long)],
    "llava": lambda: [torch.zeros(1, 3, 336, 336, dtype=torch.float32)],
}

_MADE: list[list[torch.Tensor]] = []  # filled before the workers fork: preparing costs nothing


def _prepared(i: int) -> tuple[int, list[torch.Tensor]]:
    return i, [t.clone() for t in _MADE[i % len(_MADE)]]  # a fresh tensor, as a real prepare returns


class _Records(torch.utils.data.Dataset[Any]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, list[torch.Tensor]]:
        return _prepared(i)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def dataloader_windows(windows: int, window: int, batch: int, workers: int) -> float:
    """Seconds for ``windows`` windows through a DataLoader forked per window (the previous loader)."""
    t0 = time.perf_counter()
    for _ in range(windows):
        pieces = [list(range(i, min(window, i + batch // workers))) for i in range(0, window, batch // workers)]
        loader = torch.utils.data.DataLoader(
            _Records(window), batch_sampler=pieces, num_workers=workers, collate_fn=_as_list,
            multiprocessing_context="fork", prefetch_factor=4,
        )
        n = sum(len(p) for p in loader)
        assert n == window
    return time.perf_counter() - t0


def kept_windows(windows: int, window: int, batch: int, workers: int) -> float:
    """Seconds for ``windows`` windows through one kept :class:`Loader` (its start-up counted)."""
    loader = Loader(lambda piece: [_prepared(i) for i in piece], workers)
    t0 = time.perf_counter()
    try:
        for _ in range(windows):
            batches = [list(range(i, min(window, i + batch))) for i in range(0, window, batch)]
            n = sum(len(b) for b in loader.batches(list(range(window)), batches))
            assert n == window
        return time.perf_counter() - t0
    finally:
        loader.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--window", type=int, default=512, help="samples per window (batch 32 x 16, the loss scorers')")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each loader (fastest counts)")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    args = ap.parse_args(argv)
    if "fork" not in mp.get_all_start_methods():
        print("needs fork (Linux)", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    n = args.windows * args.window
    print(f"{args.windows} windows of {args.window} samples, batches of {args.batch}, {args.workers} workers, "
          f"fastest of {args.repeats}\n")
    print("| sample | DataLoader per window (samples/s) | kept Loader (samples/s) | speed-up "
          "| DataLoader us/sample | Loader us/sample |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in args.shapes.split(","):
        _MADE[:] = [SHAPES[shape]() for _ in range(8)]
        best_d = best_k = float("inf")
        for _ in range(args.repeats):
            best_d = min(best_d, dataloader_windows(args.windows, args.window, args.batch, args.workers))
            best_k = min(best_k, kept_windows(args.windows, args.window, args.batch, args.workers))
        print(f"| {shape} | {n / best_d:,.0f} | {n / best_k:,.0f} | {best_d / best_k:.1f}x "
              f"| {best_d / n * 1e6:.0f} | {best_k / n * 1e6:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
