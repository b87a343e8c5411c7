"""The synthetic data generators: SVIT-like demo data (images, task types, defects) and the 665K-shaped file."""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from qspace import synthetic as S

N = 600
SEED = 3
WORD_RE = re.compile(r"[a-z]+")


def _load(d: Path) -> dict[str, list[dict[str, Any]]]:
    return {t: orjson.loads((d / f"{t}.json").read_bytes()) for t in S.TASK_TYPES}


@pytest.fixture(scope="module")
def svit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return S.make_svit_like(tmp_path_factory.mktemp("svit"), n=N, seed=SEED)


@pytest.fixture(scope="module")
def clean_twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same seed without defects: every sample's uncorrupted version, for comparison."""
    return S.make_svit_like(tmp_path_factory.mktemp("clean"), n=N, seed=SEED, defect_rate=0.0)


@pytest.fixture(scope="module")
def records(svit: Path) -> dict[str, list[dict[str, Any]]]:
    return _load(svit)


@pytest.fixture(scope="module")
def scenes(svit: Path) -> dict[str, Any]:
    return orjson.loads((svit / "scenes.json").read_bytes())


def _answers(rec: dict[str, Any]) -> list[str]:
    return [t["value"] for t in rec["conversations"] if t["from"] == "gpt"]


def _mentions(text: str) -> tuple[set[str], set[str]]:
    """Colour and shape names mentioned in a text (plurals folded)."""
    colors, shapes = set(), set()
    for w in WORD_RE.findall(text.lower()):
        if w in S.COLORS:
            colors.add(w)
        for cand in (w, w[:-1], w[:-2]):
            if cand in S.SHAPES:
                shapes.add(cand)
                break
    return colors, shapes


def _content(scene: dict[str, Any]) -> tuple[set[str], set[str]]:
    return {o["color"] for o in scene["objects"]}, {o["shape"] for o in scene["objects"]}


def _tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(d).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# --- SVIT-like ------------------------------------------------------------------------------------


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = S.make_svit_like(tmp_path / "a", n=60, seed=7)
    b = S.make_svit_like(tmp_path / "b", n=60, seed=7)
    c = S.make_svit_like(tmp_path / "c", n=60, seed=8)
    assert _tree_digest(a) == _tree_digest(b)
    assert _tree_digest(a) != _tree_digest(c)


def test_files_exist_and_parse(svit: Path, records: dict[str, list[dict[str, Any]]]) -> None:
    for t in S.TASK_TYPES:
        assert (svit / f"{t}.json").is_file()
    assert sum(len(v) for v in records.values()) == N
    assert all(len(v) == N // 4 for v in records.values())  # equal shares
    prompts = orjson.loads((svit / "task_type_prompts.json").read_bytes())
    assert set(prompts) == set(S.TASK_TYPES)
    assert all(isinstance(v, str) and len(v.split()) > 30 for v in prompts.values())
    assert len(list((svit / "images").glob("*.jpg"))) == N
    with Image.open(svit / records["conversation"][0]["image"]) as im:
        assert im.format == "JPEG" and im.size == (128, 128) and im.mode == "RGB"


def test_llava_record_shape(svit: Path, records: dict[str, list[dict[str, Any]]]) -> None:
    ids = []
    for recs in records.values():
        for rec in recs:
            assert {"id", "image", "conversations", "defect"} <= set(rec)
            ids.append(rec["id"])
            assert not Path(rec["image"]).is_absolute() and rec["image"].startswith("images/")
            assert (svit / rec["image"]).is_file()
            conv = rec["conversations"]
            assert len(conv) >= 2 and len(conv) % 2 == 0
            assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
            assert all(isinstance(t["value"], str) and t["value"].strip() for t in conv)
            assert conv[0]["value"].startswith("<image>\n")
            assert sum(t["value"].count("<image>") for t in conv) == 1
    assert len(ids) == len(set(ids))


def test_task_type_lengths_and_turns(records: dict[str, list[dict[str, Any]]]) -> None:
    def words(t: str) -> float:
        return statistics.mean(sum(len(a.split()) for a in _answers(r)) for r in records[t] if r["defect"] == "none")

    def turns(t: str) -> set[int]:
        return {len(r["conversations"]) // 2 for r in records[t]}

    assert words("referring_qa") < 8
    assert words("detail_description") > 80
    assert words("referring_qa") < words("conversation") < words("detail_description")
    assert turns("referring_qa") == {1} and turns("detail_description") == {1}
    assert turns("conversation") == {2, 3}
    assert turns("complex_reasoning") == {2, 3, 4}
    # Phrasing varies: many distinct questions and answers per type.
    for t in S.TASK_TYPES:
        qs = {r["conversations"][0]["value"] for r in records[t]}
        assert len(qs) > len(records[t]) / (20 if t == "detail_description" else 3)


def test_defect_rate_and_labels(records: dict[str, list[dict[str, Any]]]) -> None:
    labels = Counter(r["defect"] for recs in records.values() for r in recs)
    assert set(labels) == {S.CLEAN, *S.DEFECTS}
    assert sum(labels.values()) - labels[S.CLEAN] == round(0.2 * N)
    assert all(labels[d] == round(0.2 * N) // len(S.DEFECTS) for d in S.DEFECTS)
    for recs in records.values():  # every task type gets its share
        assert sum(r["defect"] != S.CLEAN for r in recs) == pytest.approx(0.2 * len(recs), abs=1)


def test_clean_answers_are_grounded(records: dict[str, list[dict[str, Any]]], scenes: dict[str, Any]) -> None:
    for recs in records.values():
        for r in recs:
            if r["defect"] != S.CLEAN:
                continue
            scene = scenes[r["image"]]
            colors, shapes = _mentions(" ".join(_answers(r)))
            present_c, present_s = _content(scene)
            assert colors <= present_c and shapes <= present_s, r["id"]
            for quoted in re.findall(r'"([A-Z]+)"', " ".join(_answers(r))):
                assert quoted == scene["word"]


def test_swapped_images_show_other_content(records: dict[str, list[dict[str, Any]]], scenes: dict[str, Any]) -> None:
    swapped = [r for recs in records.values() for r in recs if r["defect"] == "swapped_image"]
    assert swapped
    shapes_changed = 0
    for r in swapped:
        assert r["image"] != r["original_image"]
        shown, meant = scenes[r["image"]], scenes[r["original_image"]]
        shown_c, shown_s = _content(shown)
        meant_c, meant_s = _content(meant)
        assert not shown_c & meant_c  # no colour survives the swap
        assert shown["word"] != meant["word"]
        said_c, _ = _mentions(" ".join(_answers(r)))
        assert not said_c & shown_c
        shapes_changed += not shown_s & meant_s
    assert shapes_changed / len(swapped) > 0.8  # most swaps change every shape too


def test_wrong_fact_answers_name_what_is_absent(
    records: dict[str, list[dict[str, Any]]], scenes: dict[str, Any]
) -> None:
    wrong = [r for recs in records.values() for r in recs if r["defect"] == "wrong_fact"]
    assert wrong
    for r in wrong:
        scene = scenes[r["image"]]
        text = " ".join(_answers(r))
        colors, shapes = _mentions(text)
        present_c, present_s = _content(scene)
        words = set(re.findall(r'"([A-Z]+)"', text))
        assert (colors - present_c) or (shapes - present_s) or (words - {scene["word"]}), r["id"]


def test_corruptions_against_clean_twin(svit: Path, clean_twin: Path, records: dict[str, list[dict[str, Any]]]) -> None:
    twin = {r["id"]: r for recs in _load(clean_twin).values() for r in recs}
    assert all(r["defect"] == S.CLEAN for r in twin.values())
    for recs in records.values():
        for r in recs:
            c = twin[r["id"]]
            q, cq = r["conversations"][::2], c["conversations"][::2]
            assert q == cq  # questions are never corrupted
            a, ca = _answers(r), _answers(c)
            d = r["defect"]
            if d in (S.CLEAN, "swapped_image"):
                assert a == ca
                assert (r["image"] != c["image"]) == (d == "swapped_image")
            elif d == "shuffled":
                assert all(sorted(x.split()) == sorted(y.split()) for x, y in zip(a, ca, strict=True))
                assert a != ca
            elif d == "truncated":
                for x, y in zip(a, ca, strict=True):
                    assert len(x.split()) < len(y.split()) and y.startswith(x.rstrip())
                    assert not x.endswith((".", "!", "?"))
            elif d == "filler":
                for x in a:
                    assert all(s + "." in S.FILLER for s in x.rstrip(".").split(". "))
            elif d == "wrong_fact":
                assert a != ca and len(a) == len(ca)


def test_images_match_scene_colours(svit: Path, scenes: dict[str, Any]) -> None:
    """Each object's colour is really drawn at its centre (the text refers to real pixels)."""
    for name in list(scenes)[:40]:
        with Image.open(svit / name) as im:
            px = im.convert("RGB").load()
            assert px is not None
            for o in scenes[name]["objects"]:
                x, y = round(o["cx"] * 127), round(o["cy"] * 127)
                if o["shape"] in ("star", "cross", "heart"):  # centre may be thin; sample a ring
                    continue
                got = px[x, y]
                want = S.COLORS[o["color"]]
                assert isinstance(got, tuple)
                assert sum(abs(int(g) - w) for g, w in zip(got, want, strict=True)) < 60, (name, o)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        S.make_svit_like(tmp_path, n=2)
    with pytest.raises(ValueError):
        S.make_svit_like(tmp_path, n=100, defect_rate=1.5)


# --- LLaVA-665K-shaped ----------------------------------------------------------------------------

PROMPTS = (S.PROMPT_SHORT, S.PROMPT_MC, S.PROMPT_CAPTION, S.PROMPT_BOX.strip(), S.PROMPT_REGION.strip())


def test_llava665k_small(tmp_path: Path) -> None:
    n = 2000
    out = tmp_path / "mix.json"
    summary = S.make_llava665k_like(out, n=n, seed=1)
    data = orjson.loads(out.read_bytes())
    assert isinstance(data, list) and len(data) == n
    assert summary["n"] == n and sum(summary["by_source"].values()) == n
    assert summary["bytes"] == out.stat().st_size
    text_only = [r for r in data if "image" not in r]
    assert len(text_only) == summary["text_only"] == pytest.approx(0.05 * n, abs=0.01 * n)
    assert len({r["id"] for r in data}) == n
    joined = "\n".join(t["value"] for r in data for t in r["conversations"] if t["from"] == "human")
    for p in PROMPTS:
        assert p in joined, p
    prefixes = Counter(r["image"].split("/")[0] for r in data if "image" in r)
    assert set(prefixes) == {"coco", "gqa", "ocr_vqa", "textvqa", "vg"}
    multi = 0
    for r in data:
        conv = r["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2) and conv
        n_img = sum(t["value"].count("<image>") for t in conv)
        if "image" in r:
            assert n_img == 1 and "<image>" in conv[0]["value"]
        else:
            assert n_img == 0
        multi += len(conv) > 2
    assert multi / n > 0.5  # mostly multi-turn, as in LLaVA-665K
    per_record = summary["bytes"] / n
    assert 1300 < per_record < 1800, per_record  # ~1 GB at 665k
    # Text-only ShareGPT records are long multi-turn text.
    assert statistics.mean(len(orjson.dumps(r)) for r in text_only) > 3000


def test_llava665k_jsonl_and_determinism(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.jsonl"
    S.make_llava665k_like(a, n=1500, seed=2)
    S.make_llava665k_like(b, n=1500, seed=2)
    S.make_llava665k_like(c, n=1500, seed=2)
    assert a.read_bytes() == b.read_bytes()
    lines = c.read_bytes().splitlines()
    assert len(lines) == 1500
    assert [orjson.loads(x) for x in lines] == orjson.loads(a.read_bytes())
    empty = tmp_path / "empty.json"
    S.make_llava665k_like(empty, n=0)
    assert orjson.loads(empty.read_bytes()) == []


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert S.main(["svit", str(tmp_path / "svit"), "--n", "40", "--seed", "1"]) == 0
    assert len(_load(tmp_path / "svit")["referring_qa"]) == 10
    assert S.main(["llava665k", str(tmp_path / "m.json"), "--n", "30"]) == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 30 and len(orjson.loads((tmp_path / "m.json").read_bytes())) == 30


def test_task_files_helper(svit: Path) -> None:
    files = S.svit_task_files(svit)
    assert [f.stem for f in files] == list(S.TASK_TYPES) and all(f.is_file() for f in files)
