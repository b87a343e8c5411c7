"""Does the closed loop have power? Clean vs defective arms of equal size, trained and scored on this CPU.

Issue 15's test "the loop has power": on the demo data (synthetic SVIT-like, labelled defects), an arm of
defect-free samples must beat an equal-size arm of defective samples on multiple-choice accuracy over a
held-out clean eval suite, in every seed, with a bootstrap CI of the delta that excludes 0. This benchmark
runs that experiment in one process with the engine the queue's jobs run (``workers.training.train``,
``workers.evaluation.evaluate_suite``) and prints one table per suite:

1. the demo's tiny CLIP + LLaVA (``qspace.demo.models.train_models``: about 2.5 min on 2 cores, cached under
   ``CACHE/models``), its LLaVA with the projector re-initialised (the experiment's base), a synthetic dataset
   (``make_svit_like``) and held-out clean eval suites (``make_eval_suite``), all cached under ``CACHE``;
2. per seed: N clean samples and N defective ones (defect kinds chosen with ``--defects``), each arm with the
   same task-type mix, trained from the base with the ``quick`` preset (plus ``--set`` overrides), then scored
   on every suite;
3. per suite and seed: both accuracies, the delta and its paired bootstrap CI over items; pooled over seeds:
   the mean delta and its paired bootstrap CI over items and seeds (the same items for both arms of a seed);
   with ``--references``, the full demo LLaVA and the base on the same suites; wall times and the load.

What was measured (2 shared cores; the defaults): the suite of ``colour`` and ``count`` items has the power,
the suite of all five kinds does not. Shape, position and word items stay at chance for every model at this
scale (the full demo LLaVA included), so they add noise and no signal: over 7 seeds, every seed's CI on the
colour+count suite excludes 0 (deltas +0.13 to +0.29), while on the all-kinds suite 5 of 7 include 0.
Fewer optimizer steps lose it (200 samples x 3 epochs: the clean arm barely leaves the base). Under load, 2
torch threads on 2 cores run ~3x slower than 1 thread (``--threads 1``): OpenMP threads wait on each other.

    python -m bench.loop_power [--cache DIR] [--n 300] [--seeds 3] [--first-seed 0] [--defects all]
        [--set epochs=3] [--suite colour,count --suite all] [--suite-items 500] [--references] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.eval_specs import EvalSuite, load_eval_suite
from backend.scorer_specs import ScoreItem
from qspace.synthetic import CLEAN, DEFECTS, TASK_TYPES, make_svit_like, svit_task_files
from qspace.synthetic.eval_suite import EVAL_ITEM_TYPES, make_eval_suite

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "qspace-loop-power"
SUITE_SEED = 0
DEMO_SEED = 0
ARMS = ("clean", "defective")
DEFAULT_SUITES = ("colour,count", "all")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


# --- inputs (cached) ---------------------------------------------------------------------------------


def demo_llava(cache: Path) -> Path:
    from qspace.demo.models import train_models

    return train_models(cache / "models", DEMO_SEED).llava


def base_model(cache: Path, llava: Path) -> Path:
    """The demo LLaVA with its projector re-initialised (issue 15's base); written once."""
    from workers.training import reinit_projector

    dst = cache / "base-reinit"
    if not (dst / "qspace_reinit.json").is_file():
        reinit_projector(llava, dst, seed=0)
    return dst


def dataset(cache: Path, size: int, rate: float) -> Path:
    folder = cache / f"svit-n{size}-rate{rate:g}-seed{DEMO_SEED}"
    if not all(p.is_file() for p in svit_task_files(folder)):
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_svit_like(tmp, n=size, seed=DEMO_SEED, defect_rate=rate)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return folder


def suite(cache: Path, n: int, types: Sequence[str]) -> EvalSuite:
    """The held-out suite of these item kinds (named after them); written once."""
    name = "all" if tuple(types) == EVAL_ITEM_TYPES else "+".join(types)
    folder = cache / f"suite-n{n}-seed{SUITE_SEED}-{name}"
    path = folder / "eval_suite.jsonl"
    if not path.is_file():
        make_eval_suite(folder, n=n, seed=SUITE_SEED, types=tuple(types))
    return load_eval_suite(path, name=name)


Record = tuple[str, str, ScoreItem]  # (task type, defect, item)


def records(folder: Path) -> list[Record]:
    out: list[Record] = []
    for task, path in zip(TASK_TYPES, svit_task_files(folder), strict=True):
        for rec in json.loads(path.read_text()):
            item = ScoreItem(len(out), rec["conversations"], [str(folder / rec["image"])])
            out.append((task, rec.get("defect", CLEAN), item))
    return out


def draw_arm(pool: Sequence[Record], n: int, rng: random.Random) -> list[ScoreItem]:
    """n samples of the pool, the same number of each task type (the rest spread round-robin)."""
    by_task = {t: [r[2] for r in pool if r[0] == t] for t in TASK_TYPES}
    share = [n // len(TASK_TYPES) + (k < n % len(TASK_TYPES)) for k in range(len(TASK_TYPES))]
    picked: list[ScoreItem] = []
    for t, k in zip(TASK_TYPES, share, strict=True):
        if len(by_task[t]) < k:
            raise SystemExit(f"only {len(by_task[t])} {t} samples in the pool, an arm of {n} needs {k}")
        picked += rng.sample(by_task[t], k)
    rng.shuffle(picked)
    return picked


# --- statistics ----------------------------------------------------------------------------------------


def paired_bootstrap(diff: np.ndarray, reps: int, seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean of ``diff`` (seeds x items, clean - defective per item), resampling seeds and
    items with replacement (the same items for both arms: paired)."""
    rng = np.random.default_rng(seed)
    n_seeds, n_items = diff.shape
    means = np.empty(reps)
    for b in range(reps):
        rows = rng.integers(0, n_seeds, n_seeds)
        cols = rng.integers(0, n_items, n_items)
        means[b] = diff[np.ix_(rows, cols)].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


# --- the experiment ------------------------------------------------------------------------------------


def parse_set(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair}: expected FIELD=VALUE")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def run_arm(
    base: Path, items: list[ScoreItem], params: dict[str, Any], seed: int, suites: Sequence[EvalSuite], work: Path
) -> dict[str, Any]:
    """Train one arm from the base in ``work`` (removed after) and score it on every suite."""
    from workers.evaluation import evaluate_suite
    from workers.training import train

    t0, c0 = time.perf_counter(), time.process_time()
    result = train(base, [items], work, params=params, seed=seed, device="cpu")
    out: dict[str, Any] = {"train_s": time.perf_counter() - t0, "train_cpu_s": time.process_time() - c0,
                           "steps": result.steps, "loss": result.train_loss, "suites": {}}
    assert result.model_dir is not None
    for ev in suites:
        t0, c0 = time.perf_counter(), time.process_time()
        scored = evaluate_suite(result.model_dir, ev, device="cpu")
        out["suites"][ev.name] = {
            "accuracy": scored.metrics["accuracy"],
            "by_type": {k: v["accuracy"] for k, v in scored.by_type.items()},
            "correct": [int(o.correct or 0) for o in scored.items],
            "eval_s": time.perf_counter() - t0,
            "eval_cpu_s": time.process_time() - c0,  # CPU seconds: what it costs, whatever else runs here
        }
    shutil.rmtree(work, ignore_errors=True)
    return out


def suite_table(ev: EvalSuite, runs: list[dict[str, Any]], reps: int) -> dict[str, Any]:
    """Per seed and pooled figures of one suite; prints its table."""
    rows = []
    for run in runs:
        clean, bad = run["clean"]["suites"][ev.name], run["defective"]["suites"][ev.name]
        diff = np.array(clean["correct"]) - np.array(bad["correct"])
        lo, hi = paired_bootstrap(diff[None, :], reps, run["seed"])
        rows.append({"seed": run["seed"], "clean": clean["accuracy"], "defective": bad["accuracy"], "diff": diff,
                     "delta": float(diff.mean()), "ci": [lo, hi],
                     "arm_s": [run[a]["train_s"] + run[a]["suites"][ev.name]["eval_s"] for a in ARMS],
                     "arm_cpu_s": [run[a]["train_cpu_s"] + run[a]["suites"][ev.name]["eval_cpu_s"] for a in ARMS],
                     "eval_s": [run[a]["suites"][ev.name]["eval_s"] for a in ARMS]})
    pooled = np.stack([r.pop("diff") for r in rows])
    lo, hi = paired_bootstrap(pooled, reps)
    kinds = sorted({it.type or "" for it in ev.items})
    by_kind = {k: float(pooled[:, [it.type == k for it in ev.items]].mean()) for k in kinds}
    print(f"\nsuite {ev.name}: {len(ev.items)} items ({', '.join(kinds)})")
    print("| seed | clean | defective | delta | 95% CI (items) | arm train+eval s (c/d) | eval s (c/d) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['clean']:.3f} | {r['defective']:.3f} | {r['delta']:+.3f} | "
              f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {r['arm_s'][0]:.1f} / {r['arm_s'][1]:.1f} | "
              f"{r['eval_s'][0]:.1f} / {r['eval_s'][1]:.1f} |")
    print(f"| pooled | {np.mean([r['clean'] for r in rows]):.3f} | {np.mean([r['defective'] for r in rows]):.3f} | "
          f"{pooled.mean():+.3f} | [{lo:+.3f}, {hi:+.3f}] (items x seeds) | | |")
    print("pooled delta by item kind: " + ", ".join(f"{k} {v:+.3f}" for k, v in by_kind.items()))
    every = all(r["ci"][0] > 0 for r in rows)
    print(f"power: every seed's CI excludes 0: {every}; pooled CI excludes 0: {lo > 0}")
    arm_s = [x for r in rows for x in r["arm_s"]]
    arm_cpu = [x for r in rows for x in r["arm_cpu_s"]]
    print(f"one arm (train + eval): mean {np.mean(arm_s):.1f} s, max {np.max(arm_s):.1f} s; "
          f"{np.mean(arm_cpu):.1f} CPU s")
    return {"items": len(ev.items), "digest": ev.digest, "seeds": rows, "pooled_delta": float(pooled.mean()),
            "pooled_ci": [lo, hi], "delta_by_kind": by_kind, "every_seed_excludes_0": every,
            "arm_s_mean": float(np.mean(arm_s)), "arm_s_max": float(np.max(arm_s)),
            "arm_cpu_s_mean": float(np.mean(arm_cpu))}


def parse_kinds(text: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    kinds = tuple(known) if text == "all" else tuple(k.strip() for k in text.split(","))
    unknown = sorted(set(kinds) - set(known))
    if unknown or not kinds:
        raise SystemExit(f"{what}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return kinds


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.loop_power", description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="models, base, data and suites (reused)")
    ap.add_argument("--n", type=int, default=300, help="samples per arm")
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds (arm draw and training); 0 = none")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--defects", default="all", help="defect kinds of the defective arm, comma-separated")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override the quick preset")
    ap.add_argument("--suite-items", type=int, default=500)
    ap.add_argument("--suite", action="append", metavar="KINDS",
                    help="a suite's item kinds, comma-separated or 'all'; repeat for several (default: "
                    f"{' and '.join(DEFAULT_SUITES)}: the first has the power, see the module's doc)")
    ap.add_argument("--dataset-size", type=int, default=3000)
    ap.add_argument("--defect-rate", type=float, default=0.2)
    ap.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--references", action="store_true", help="also score the full demo LLaVA and the base")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)

    kinds = parse_kinds(args.defects, DEFECTS, "--defects")
    suite_kinds = [parse_kinds(k, EVAL_ITEM_TYPES, "--suite") for k in (args.suite or DEFAULT_SUITES)]
    params = {"preset": "quick", **parse_set(args.set)}

    from workers.torch_compat import ensure_torchvision

    ensure_torchvision()
    import torch

    torch.set_num_threads(args.threads)
    print(f"load average at start: {load_average()} (cores: {os.cpu_count()})", flush=True)
    t_all = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    llava = demo_llava(args.cache)
    base = base_model(args.cache, llava)
    data = records(dataset(args.cache, args.dataset_size, args.defect_rate))
    suites = [suite(args.cache, args.suite_items, k) for k in suite_kinds]
    clean_pool = [r for r in data if r[1] == CLEAN]
    bad_pool = [r for r in data if r[1] in kinds]
    print(f"pools: {len(clean_pool)} clean, {len(bad_pool)} defective ({', '.join(kinds)}); arms of {args.n}; "
          f"params {params}", flush=True)

    report: dict[str, Any] = {"params": params, "n": args.n, "defects": list(kinds), "threads": args.threads,
                              "load_start": load_average(), "references": {}, "suites": {}}
    if args.references:
        from workers.evaluation import evaluate_suite

        for name, model in (("demo LLaVA", llava), ("base (projector reinit)", base)):
            for ev in suites:
                r = evaluate_suite(model, ev, device="cpu")
                by_type = {k: v["accuracy"] for k, v in r.by_type.items()}
                report["references"][f"{name} / {ev.name}"] = {"accuracy": r.metrics["accuracy"], "by_type": by_type}
                print(f"{name} on {ev.name}: accuracy {r.metrics['accuracy']:.3f} "
                      f"({', '.join(f'{k} {v:.2f}' for k, v in by_type.items())})", flush=True)

    runs: list[dict[str, Any]] = []
    work_root = Path(tempfile.mkdtemp(prefix="loop-power-", dir=args.cache))
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rng = random.Random(f"loop-power/{seed}")
            arms = {"clean": draw_arm(clean_pool, args.n, rng), "defective": draw_arm(bad_pool, args.n, rng)}
            run = {a: run_arm(base, arm, params, seed, suites, work_root / f"{a}-{seed}") for a, arm in arms.items()}
            runs.append({"seed": seed, **run})
            print(f"seed {seed}: " + "; ".join(
                f"{ev.name} clean {run['clean']['suites'][ev.name]['accuracy']:.3f} "
                f"defective {run['defective']['suites'][ev.name]['accuracy']:.3f}" for ev in suites
            ) + f"; train {run['clean']['train_s']:.1f} / {run['defective']['train_s']:.1f} s "
                f"({run['clean']['steps']} steps)", flush=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)

    for ev in suites if runs else ():
        report["suites"][ev.name] = suite_table(ev, runs, args.bootstrap)
    report["outcomes"] = {r["seed"]: {a: {ev.name: r[a]["suites"][ev.name]["correct"] for ev in suites} for a in ARMS}
                          for r in runs}  # per item, 1 = right: pool runs of other seeds offline
    report["train"] = [{"seed": r["seed"], **{f"{a}_{k}": r[a][k] for a in ARMS for k in ("train_s", "train_cpu_s",
                                                                                          "steps", "loss")}}
                       for r in runs]
    wall = time.perf_counter() - t_all
    report.update({"wall_s": wall, "load_end": load_average()})
    print(f"\nwall {wall:.0f} s for {args.seeds} seeds x 2 arms; load average at end: {report['load_end']} "
          f"({args.threads} torch threads, {os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
