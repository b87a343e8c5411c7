"""Near-duplicates on a labelled synthetic set: exact copies, resized and re-encoded images, reworded answers are
injected into SVIT-like samples (qspace.synthetic), embedded by the tiny CLIP with keep_embeddings, grouped by the
duplicates run's maths; pair precision and recall are printed (pytest -s) and held to thresholds."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.queue.embeddings import read_embeddings, write_chunk
from backend.scorer_specs import ScoreItem
from qspace.synthetic import make_svit_like, svit_task_files
from workers.derived.duplicates import groups, ranks
from workers.scorers.registry import build_scorer

N_BASE = 60


def reword(answer: str) -> str:
    """The same answer in other words: a lead-in, and the full stop moved."""
    return "Looking at the picture, " + answer[0].lower() + answer[1:].rstrip(".") + ", as far as I can tell."


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> dict:
    root = make_svit_like(tmp_path_factory.mktemp("svit"), n=120, seed=0, defect_rate=0.0)
    records = [r for f in svit_task_files(root) for r in json.loads(f.read_text())][:N_BASE]
    assert len(records) == N_BASE
    items = [ScoreItem(i, r["conversations"], [str(root / r["image"])]) for i, r in enumerate(records)]
    copies = root / "copies"
    copies.mkdir()
    image_of = {i: r["image"] for i, r in enumerate(records)}
    answer_of = {i: r["conversations"][1]["value"] for i, r in enumerate(records)}
    image_dups: list[tuple[int, int]] = []
    text_dups: list[tuple[int, int]] = []
    for j in range(24):  # 8 exact copies, 8 resized to 70%, 8 re-encoded at JPEG quality 35
        src, sid = root / records[j]["image"], len(items)
        im = Image.open(src).convert("RGB")
        if j < 8:
            dst = copies / f"exact{j}.jpg"
            shutil.copy(src, dst)
        elif j < 16:
            dst = copies / f"resized{j}.png"
            im.resize((int(im.width * 0.7), int(im.height * 0.7)), Image.Resampling.BICUBIC).save(dst)
        else:
            dst = copies / f"q35-{j}.jpg"
            im.save(dst, quality=35)
        items.append(ScoreItem(sid, records[j]["conversations"], [str(dst)]))
        image_dups.append((j, sid))
        text_dups.append((j, sid))  # the copy keeps the sample's conversation: the same text
    for j in range(24, 32):  # reworded answers under another sample's image
        conv = [dict(t) for t in records[j]["conversations"]]
        conv[1]["value"] = reword(conv[1]["value"])
        sid = len(items)
        items.append(ScoreItem(sid, conv, [str(root / records[(j + 30) % N_BASE]["image"])]))
        text_dups.append((j, sid))
        image_dups.append(((j + 30) % N_BASE, sid))  # ... which makes it an exact image duplicate of that one
    # Samples of the base set that show the same image file or give the same answer are duplicates too.
    for a, b in itertools.combinations(range(N_BASE), 2):
        if image_of[a] == image_of[b]:
            image_dups.append((a, b))
        if answer_of[a].strip().lower() == answer_of[b].strip().lower():
            text_dups.append((a, b))
    scorer = build_scorer("clip", {"model": str(tiny_models["clip"]), "num_workers": 0, "keep_embeddings": True},
                          device="cpu")  # fmt: skip
    results = scorer.score_all(items)
    assert all(r.error is None for r in results.values())
    ids, image, text = scorer.kept.take()
    folder = tmp_path_factory.mktemp("emb")
    write_chunk(folder, ids, image, text)
    reworded = text_dups[24:32]
    return {"emb": read_embeddings(folder), "image": image_dups, "text": text_dups, "n": len(items),
            "reworded": reworded}  # fmt: skip


def closure(pairs: list[tuple[int, int]], n: int) -> set[tuple[int, int]]:
    """Every pair linked by the labelled pairs, transitively (what a grouping should put together)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return {p for g in members.values() for p in itertools.combinations(sorted(g), 2)}


def grouped_pairs(roots: np.ndarray, ids: np.ndarray) -> set[tuple[int, int]]:
    members: dict[int, list[int]] = {}
    for row, root in enumerate(roots.tolist()):
        members.setdefault(root, []).append(int(ids[row]))
    return {p for g in members.values() for p in itertools.combinations(sorted(g), 2)}


@pytest.mark.parametrize(
    ("source", "threshold", "min_precision", "min_recall"),
    # The tiny model is untrained: its text tower tells identical texts apart from others, but not a reworded
    # answer from an unrelated one (recall of the 8 reworded pairs: 0 of 8); a trained CLIP is needed for those.
    [("image", 0.95, 1.0, 1.0), ("text", 0.95, 1.0, 0.7)],
)
def test_injected_duplicates_are_found_and_unrelated_samples_are_not(
    labelled: dict, source: str, threshold: float, min_precision: float, min_recall: float
) -> None:
    emb = labelled["emb"]
    truth = closure(labelled[source], labelled["n"])
    roots = groups(emb, source, threshold, max_neighbours=32, center=True)
    got = grouped_pairs(roots, emb.ids)
    tp = len(got & truth)
    precision = tp / len(got) if got else 1.0
    recall = tp / len(truth)
    print(f"\nduplicates {source} @ {threshold} (centred): {len(truth)} true pairs, {len(got)} found, "
          f"precision {precision:.3f}, recall {recall:.3f}")  # fmt: skip
    if source == "text":
        found = sum(1 for a, b in labelled["reworded"] if (min(a, b), max(a, b)) in got)
        print(f"reworded answers found: {found} of {len(labelled['reworded'])}")
    assert precision >= min_precision and recall >= min_recall
    rank, size = ranks(roots)
    for row, root in enumerate(roots.tolist()):  # the group keeps its lowest sample id
        assert (rank[row] == 0) == (row == root) and emb.ids[root] <= emb.ids[row]
        assert size[row] == int((roots == root).sum())


def test_raw_cosines_of_an_untrained_model_need_centring(labelled: dict) -> None:
    """Why `center` exists: the tiny random CLIP puts every image in one narrow cone (raw cosines ~0.999)."""
    emb = labelled["emb"]
    raw = groups(emb, "image", 0.95, max_neighbours=32, center=False)
    assert len(set(raw.tolist())) == 1  # everything in one group
