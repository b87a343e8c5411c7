"""The LLaVA-665K-shaped file for the ingest benchmark: LLaVA-1.5's source mix, streamed record by record.

Text comes from pre-built pools (see pools), so ~1 GB streams out in well under a minute; no image files are
written. Every random draw below is part of the output's identity for a seed: reordering or skipping one
changes every later record.
"""

from __future__ import annotations

import random
import string
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from qspace.synthetic.phrasing import QuestionAnswer, capitalise
from qspace.synthetic.pools import TextPools
from qspace.synthetic.words import PROMPT_BOX, PROMPT_REGION, PROMPT_SHORT

# Records per 1,000, after LLaVA-1.5's mix (Liu et al. 2023, Table 7), with text-only ShareGPT at 5%.
MIX665K: dict[str, int] = {
    "llava_instruct": 237,
    "sharegpt": 50,
    "vqav2": 125,
    "gqa": 108,
    "okvqa": 14,
    "ocrvqa": 120,
    "aokvqa": 100,
    "textcaps": 33,
    "refcoco": 72,
    "vg": 141,
}
BLOCK = sum(MIX665K.values())

Record = dict[str, Any]


def llava_turns(pairs: Sequence[QuestionAnswer], image_first: bool = True) -> list[dict[str, str]]:
    """LLaVA's conversation list; the first question carries the <image> token, before or after its text."""
    conv: list[dict[str, str]] = []
    for t, (q, a) in enumerate(pairs):
        if t == 0:
            q = ("<image>\n" + q) if image_first else (q + "\n<image>")
        conv.append({"from": "human", "value": q})
        conv.append({"from": "gpt", "value": a})
    return conv


def id_number(i: int) -> int:
    """A bijection of the record index onto [0, 10**8): unique, random-looking ids."""
    return (i * 48_271_337 + 7_654_321) % 100_000_000


BASE62_DIGITS = string.digits + string.ascii_letters


def base62(x: int) -> str:
    """Seven base-62 digits, least significant first: ShareGPT-style ids."""
    out = []
    for _ in range(7):
        x, d = divmod(x, 62)
        out.append(BASE62_DIGITS[d])
    return "".join(out)


class RecordMaker:
    """Builds one record of a given source from the pools, with ids and image paths shaped like that source's."""

    def __init__(self, seed: int) -> None:
        self.pools = TextPools(seed)

    def record(self, source: str, i: int, rng: random.Random) -> Record:
        num = id_number(i)
        if source == "llava_instruct":
            return self._llava_instruct(num, rng)
        if source == "sharegpt":
            return self._sharegpt(num, rng)
        if source in ("vqav2", "gqa", "okvqa"):
            return self._short_answers(source, num, rng)
        if source == "ocrvqa":
            return self._book_covers(num, rng)
        if source == "aokvqa":
            pairs = rng.choices(self.pools.multiple_choice, k=rng.randint(1, 3))
            return {"id": f"{num:012d}", "image": coco_image(num), "conversations": llava_turns(pairs)}
        if source == "textcaps":
            hid = f"{(num * 0x9E3779B97F4A7C15) % (1 << 64):016x}"  # a 64-bit hash-looking id, as TextCaps has
            turns = llava_turns([rng.choice(self.pools.captions)])
            return {"id": hid, "image": f"textvqa/train_images/{hid}.jpg", "conversations": turns}
        return self._grounding(source, num, rng)

    def _llava_instruct(self, num: int, rng: random.Random) -> Record:
        p = self.pools
        kind = rng.choices(("conv", "complex", "detail"), weights=(37, 49, 14))[0]
        if kind == "conv":
            pairs = [
                (rng.choice(p.llava_questions["conv"]), " ".join(rng.choices(p.llava_sentences, k=rng.randint(3, 7))))
                for _ in range(rng.randint(2, 7))
            ]
        else:
            pairs = [
                (rng.choice(p.llava_questions[kind]), " ".join(rng.choices(p.llava_sentences, k=rng.randint(7, 15))))
            ]
        turns = llava_turns(pairs, rng.random() < 0.5)
        return {"id": f"{num:012d}", "image": coco_image(num), "conversations": turns}

    def _sharegpt(self, num: int, rng: random.Random) -> Record:
        """Text-only, long, multi-turn; some answers carry a code block."""
        p = self.pools
        conv = []
        for _ in range(rng.randint(1, 9)):
            conv.append({"from": "human", "value": " ".join(rng.choices(p.human, k=rng.randint(1, 3)))})
            body = " ".join(rng.choices(p.gpt, k=rng.randint(8, 30)))
            if rng.random() < 0.4:
                body += "\n\n" + rng.choice(p.code) + "\n\n" + rng.choice(p.gpt)
            conv.append({"from": "gpt", "value": body})
        return {"id": f"{base62(num)}_{rng.randrange(4)}", "conversations": conv}

    def _short_answers(self, source: str, num: int, rng: random.Random) -> Record:
        """VQAv2, GQA, OK-VQA: several one-word answers per image, with the short-answer prompt."""
        p = self.pools
        pool = {"vqav2": p.vqa, "gqa": p.gqa, "okvqa": p.okvqa}[source]
        # All three counts are drawn whatever the source: the stream for a seed depends on it.
        m = {"vqav2": rng.randint(1, 10), "gqa": rng.randint(3, 22), "okvqa": rng.randint(1, 2)}[source]
        pairs = [(q + "\n" + PROMPT_SHORT, a) for q, a in rng.choices(pool, k=m)]
        if source == "gqa":
            return {"id": str(num), "image": f"gqa/images/{num}.jpg", "conversations": llava_turns(pairs)}
        return {"id": f"{num:012d}", "image": coco_image(num), "conversations": llava_turns(pairs)}

    def _book_covers(self, num: int, rng: random.Random) -> Record:
        """OCR-VQA: questions about a book cover, the image named by its ISBN."""
        pairs = [(q + "\n" + PROMPT_SHORT, a) for q, a in rng.choices(self.pools.ocr, k=rng.randint(1, 9))]
        isbn = str(num + 1_000_000_000)
        return {"id": isbn, "image": f"ocr_vqa/images/{isbn}.jpg", "conversations": llava_turns(pairs)}

    def _grounding(self, source: str, num: int, rng: random.Random) -> Record:
        """RefCOCO / Visual Genome: grounding and region-description turns, as LLaVA-1.5 mixes them."""
        p = self.pools
        m = rng.randint(2, 8) if source == "refcoco" else rng.randint(4, 14)
        pairs = []
        for _ in range(m):
            phrase, box = rng.choice(p.phrases), rng.choice(p.boxes)
            if rng.random() < 0.5:
                pairs.append((PROMPT_BOX + phrase + ".", box))
            else:
                pairs.append((PROMPT_REGION + box, capitalise(phrase) + "."))
        if source == "refcoco":
            return {"id": f"{num:012d}", "image": coco_image(num), "conversations": llava_turns(pairs)}
        folder = "VG_100K" if num % 3 else "VG_100K_2"
        return {"id": str(num), "image": f"vg/{folder}/{num}.jpg", "conversations": llava_turns(pairs)}


def coco_image(num: int) -> str:
    return f"coco/train2017/{num:012d}.jpg"


def llava665k_records(n: int, seed: int) -> Iterator[tuple[str, Record]]:
    """(source, record) in file order; each block of 1,000 has the mix's exact counts."""
    maker = RecordMaker(seed)
    for b, start in enumerate(range(0, n, BLOCK)):
        rng = random.Random(seed * 1_000_003 + b)  # one RNG per block: a block does not depend on the ones before
        schedule = [s for s, k in MIX665K.items() for _ in range(k)]
        rng.shuffle(schedule)
        for k, source in enumerate(schedule[: n - start]):
            yield source, maker.record(source, start + k, rng)


def make_llava665k_like(path: Path, n: int = 665_000, seed: int = 0) -> dict[str, Any]:
    """Stream a LLaVA-665K-shaped file (a JSON list, or JSONL if `path` ends in .jsonl); return counts.

    Sources and response-format prompts follow LLaVA-1.5's mix; 5% of records are text-only (no `image`
    key). Memory stays bounded (records are written one by one); ~1.5 KB per record, ~1 GB at 665k.
    """
    path = Path(path)
    if n < 0:
        raise ValueError("n must be >= 0")
    jsonl = path.suffix == ".jsonl"
    t0 = time.perf_counter()
    by_source: Counter[str] = Counter()
    turns = text_only = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb", buffering=1 << 22) as f:
        if not jsonl:
            f.write(b"[\n")
        buf: list[bytes] = []
        first = True
        for source, rec in llava665k_records(n, seed):
            by_source[source] += 1
            turns += len(rec["conversations"]) // 2
            text_only += "image" not in rec
            buf.append(orjson.dumps(rec))
            if len(buf) >= 2000:
                first = flush_records(f, buf, jsonl, first)
        flush_records(f, buf, jsonl, first)
        if not jsonl:
            f.write(b"\n]\n")
    return {
        "path": str(path),
        "n": n,
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "text_only": text_only,
        "turns": turns,
        "by_source": dict(by_source),
    }


def flush_records(f: BinaryIO, buf: list[bytes], jsonl: bool, first: bool) -> bool:
    """Write the buffered records (a JSON list needs a comma between batches too) and empty the buffer.

    Returns whether the next batch is still the first (only when nothing was written).
    """
    if not buf:
        return first
    if jsonl:
        f.write(b"\n".join(buf) + b"\n")
    else:
        f.write((b"" if first else b",\n") + b",\n".join(buf))
    buf.clear()
    return False
