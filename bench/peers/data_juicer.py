"""qspace's `lm_loss` against Data-Juicer's `llm_perplexity_filter`: the same 2,000 LLaVA-shaped samples, the same
tiny causal LM (a local transformers checkpoint), the same CPU, in one run (issue 19, "races against peers").

Data-Juicer lives in its own virtual environment (never in qspace's dependencies): ``bench/peers/setup_data_juicer.sh``
makes ``bench/peers/.venv-dj``. This script runs in qspace's environment, scores the samples with qspace's batched
``lm_loss`` scorer, then starts Data-Juicer's interpreter on the same samples (its operator's own
``compute_stats_single``, one sample at a time, as its executor calls it) and compares:

- samples/s of each, with the same number of torch threads;
- the per-sample values: Data-Juicer stores ``exp(loss)`` (perplexity) of the response tokens, qspace ``loss_mean``
  over the answer tokens. The texts they score differ by construction, so the values are compared after saying
  exactly how: Data-Juicer scores ``query + " " + response`` as plain text (no chat template, no end-of-answer
  token), counts ``len(tokenize(response)) - 1`` response tokens when the tokenizer has a BOS token (whether or not
  it adds one), and tokenizes the response alone to count them; qspace renders LLaVA's conversation format
  (``USER: q ASSISTANT: a</s>``, or the model's chat template) and counts exactly the answer's tokens (+ the
  end-of-answer token, as LLaVA trains). A third column recomputes Data-Juicer's formula with qspace's model code
  path disabled (plain transformers, in this process) to show the harness reads Data-Juicer's values right.

    python -m bench.peers.data_juicer [--samples 2000] [--layers 12] [--threads 1] [--dj-python PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.scorer_specs import ScoreItem  # noqa: E402
from workers.scorers.lm import LmLossScorer  # noqa: E402
from workers.tiny_models import _WORDS, write_tiny_models  # noqa: E402

HERE = Path(__file__).resolve().parent
DJ_PYTHON = HERE / ".venv-dj" / "bin" / "python"

DJ_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    from data_juicer.ops.filter.llm_perplexity_filter import LLMPerplexityFilter
    from data_juicer.utils.constant import Fields
    op = LLMPerplexityFilter(hf_model=sys.argv[1], query_template="{query}", response_template="{response}",
                             min_score=0.0, max_score=1e30)
    rows = [json.loads(line) for line in open(sys.argv[2])]
    for r in rows[:16]:  # warm-up: model load, first calls
        op.compute_stats_single({**r, Fields.stats: {}})
    t0 = time.perf_counter()
    ppl = [float(op.compute_stats_single({**r, Fields.stats: {}})[Fields.stats]["llm_perplexity"]) for r in rows]
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "ppl": ppl}))
    """
)


def make_samples(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Single-turn question/answer pairs of 4-40 words (the shape of LLaVA's short-answer and conversation turns)."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))

    return [{"query": words(4, 16).capitalize() + "?", "response": words(4, 40).capitalize() + "."} for _ in range(n)]


def score_qspace(model: Path, rows: list[dict[str, str]], batch: int) -> tuple[float, list[float]]:
    items = [
        ScoreItem(i, [{"from": "human", "value": r["query"]}, {"from": "gpt", "value": r["response"]}], [])
        for i, r in enumerate(rows)
    ]
    scorer = LmLossScorer({"model": str(model), "batch_size": batch, "num_workers": 0}).load()
    scorer.score_all(items[:16])  # warm-up, as for Data-Juicer
    t0 = time.perf_counter()
    got = scorer.score_all(items)
    seconds = time.perf_counter() - t0
    losses = []
    for i in range(len(rows)):
        metrics = got[i].metrics
        losses.append(float(metrics["loss_mean"]) if metrics else math.nan)
    return seconds, losses


def dj_formula(model_dir: Path, rows: list[dict[str, str]]) -> list[float]:
    """Data-Juicer's loss, recomputed here with plain transformers (the harness check)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            full = f"{r['query']} {r['response']}".strip()
            ids = tok(full, return_tensors="pt")["input_ids"]
            n = len(tok(r["response"].strip(), return_tensors="pt")["input_ids"][0]) - int(tok.bos_token_id is not None)
            labels = ids.clone()
            labels[0, :-n] = -100
            out.append(float(model(input_ids=ids, labels=labels).loss))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def race_arguments(description: str, layers_help: str) -> argparse.Namespace:
    """The options every race against Data-Juicer takes; this process's torch threads set from them."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=12, help=layers_help)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dj-python", type=Path, default=Path(os.environ.get("QSPACE_DJ_PYTHON", DJ_PYTHON)))
    args = ap.parse_args()
    if not args.dj_python.exists():
        raise SystemExit(f"no Data-Juicer interpreter at {args.dj_python}: run bench/peers/setup_data_juicer.sh")
    torch.set_num_threads(args.threads)
    return args


def run_data_juicer(args: argparse.Namespace, script: str, model: Path, data: Path, cwd: str) -> dict[str, Any]:
    """``script`` in Data-Juicer's interpreter on the samples in ``data``; its last line of output is the result.
    It runs from ``cwd`` (a temporary folder), never bench/peers, whose data_juicer.py would shadow the package."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [str(args.dj_python), "-c", script, str(model), str(data), str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"Data-Juicer failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    args = race_arguments(__doc__.splitlines()[0], "depth of the tiny GPT-2 (12 = GPT-2 small's)")
    rows = make_samples(args.samples)
    with tempfile.TemporaryDirectory(prefix="qspace-dj-") as tmp:
        lm = write_tiny_models(tmp, layers=args.layers)["lm"]
        data = Path(tmp) / "samples.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        q_seconds, q_loss = score_qspace(lm, rows, args.batch)
        dj = run_data_juicer(args, DJ_SCRIPT, lm, data, tmp)
        check = dj_formula(lm, rows[:100])
    dj_loss = np.log(np.asarray(dj["ppl"], dtype=np.float64))
    ql = np.asarray(q_loss, dtype=np.float64)
    harness = float(np.max(np.abs(dj_loss[:100] - np.asarray(check))))
    report = {
        "samples": args.samples,
        "layers": args.layers,
        "threads": args.threads,
        "qspace_lm_loss_samples_per_s": round(args.samples / q_seconds, 1),
        "data_juicer_llm_perplexity_samples_per_s": round(args.samples / dj["seconds"], 1),
        "speedup": round(dj["seconds"] / q_seconds, 2),
        "values": {
            "harness_max_abs_diff_dj_vs_same_formula_here": harness,
            "qspace_vs_dj_max_abs_diff_nats": round(float(np.max(np.abs(ql - dj_loss))), 4),
            "qspace_vs_dj_mean_diff_nats": round(float(np.mean(ql - dj_loss)), 4),
            "spearman": round(spearman(ql, dj_loss), 4),
        },
        "versions": {"torch": torch.__version__},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
