"""Scorer kinds, their parameters and the scorer key. Torch-free: the API imports this module.

A scorer is a kind plus parameters. The canonical JSON of (kind, parameters that change the scores,
model identity) hashes to the **scorer key**; a run is (dataset, scorer key). Runtime knobs (batch
size, loader processes) change speed, not scores, and stay out of the key. The model identity is the
name for hub/builtin names and a content hash for a local checkpoint, so retraining a local checkpoint
in place gives a new key while moving it does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ClipParams",
    "IfdParams",
    "LengthParams",
    "LmLossParams",
    "MllmLossParams",
    "ScoreItem",
    "ScoreResult",
    "ScorerSpec",
    "get_spec",
    "list_specs",
    "metrics_for",
    "model_identity",
    "path_content_hash",
    "runtime_fields",
    "scorer_key",
    "validate_params",
]


# --- what the store and the workers exchange -------------------------------------------------------


@dataclass(frozen=True)
class ScoreItem:
    """One sample to score."""

    sample_id: int
    conversations: list[dict[str, str]]  # [{"from": "human"|"gpt", "value": str}, ...] roles normalised
    images: list[str]  # absolute paths, already resolved against the image root; [] = text-only


@dataclass
class ScoreResult:
    """The metrics of one sample, or the reason it could not be scored."""

    sample_id: int
    metrics: dict[str, float] | None
    error: str | None  # short reason, e.g. "image missing: a/b.jpg", "empty answer", "no image"
    # Optional metrics this sample has no value for, each with its reason (e.g. mllm_loss's image_gain of a
    # text-only sample: {"image_gain": "no image"}). The sample is scored: `metrics` holds the rest and
    # `error` stays None; the store keeps `metrics` only, where the metric is then simply missing.
    omitted: dict[str, str] | None = None


# --- parameters ------------------------------------------------------------------------------------

def _key_when_set(default: Any, description: str) -> Any:
    """A param added after runs existed: ``scorer_key`` counts it only when it differs from its default,
    so the keys of runs made before it (and of runs that leave it off) stay what they were."""
    return Field(default, description=description, json_schema_extra={"key_when_set": True})


def _runtime_int(default: int, ge: int, description: str) -> Any:
    """A runtime knob: changes speed only, so ``scorer_key`` leaves it out (marked in the JSON schema)."""
    return Field(default, ge=ge, description=description, json_schema_extra={"runtime": True})


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TemplateChoice = Literal["auto", "llava_v1"]
_TEMPLATE_DOC = (
    "Prompt format: 'auto' = the model's chat template if it has one, else LLaVA-1.5's "
    "'USER: <image>\\n{q} ASSISTANT: {a}</s>USER: ...'; 'llava_v1' forces the latter."
)
_EOS_DOC = (
    "Also count the token that ends each answer (</s> or the template's end-of-turn), as LLaVA's "
    "training loss does."
)
_MAXLEN_DOC = "Longest sequence in tokens; longer ones are cut at the end. None = the model's limit."


class ClipParams(_Params):
    """CLIP image-text correlation (open_clip)."""

    model: str = Field(
        "ViT-L-14-336",
        description="open_clip model name (builtin, 'hf-hub:org/repo', 'local-dir:PATH'), or a local "
        "directory holding one open_clip model config JSON and its weights (qspace tiny-models).",
    )
    pretrained: str | None = Field(
        "openai", description="open_clip pretrained tag or weights file; ignored for a local directory."
    )
    text: Literal["answers", "conversation", "first_turn", "questions"] = Field(
        "answers", description="Which text is compared with the image (the <image> token is removed)."
    )
    long_text: Literal["truncate", "chunks"] = Field(
        "truncate",
        description="'truncate' = first 77 tokens, as CLIP does; 'chunks' = mean of the normalised "
        "text embeddings of consecutive 77-token windows.",
    )
    scale: Literal["cosine", "x100"] = Field(
        "cosine", description="'cosine' in [-1, 1]; 'x100' = 100 * cosine (CLIPScore without the clamp)."
    )
    keep_embeddings: bool = _key_when_set(
        False,
        "Also keep each sample's image and text embeddings (float16, one folder of Arrow files per run in the "
        "data directory) for projections, clusters, duplicates, neighbours and text search. It changes what "
        "the run produces, not its scores: a run with it is another run (its own key).",
    )
    batch_size: int = _runtime_int(64, 1, "Samples per model call.")
    num_workers: int = _runtime_int(2, 0, "Image decoding processes (0 = in the scoring process).")


class MllmLossParams(_Params):
    """The paper's loss: a LLaVA-style model scores the conversation with its image."""

    model: str = Field(
        "llava-hf/llava-1.5-7b-hf",
        description="transformers image-text-to-text model: hub name or local directory.",
    )
    template: TemplateChoice = Field("auto", description=_TEMPLATE_DOC)
    include_eos: bool = Field(True, description=_EOS_DOC)
    max_length: int | None = Field(None, ge=8, description=_MAXLEN_DOC)
    image_gain: bool = _key_when_set(
        False,
        "Also score the answers with the image removed from the prompt: metrics loss_no_image (loss_mean "
        "without it) and image_gain = loss_no_image - loss_mean (nats per answer token; positive = the image "
        "helps; MAGIC's multimodal gain). One more model pass; text-only samples get neither metric.",
    )
    question_gain: bool = _key_when_set(
        False,
        "Also score the answers with the questions removed (the image kept): metrics loss_no_question "
        "(loss_mean without them) and mifd = loss_mean / loss_no_question (PreSel's multimodal "
        "instruction-following difficulty). One more model pass.",
    )
    batch_size: int = _runtime_int(8, 1, "Samples per model call (halved on CUDA out-of-memory).")
    num_workers: int = _runtime_int(2, 0, "Image decoding processes (0 = in the scoring process).")


class LmLossParams(_Params):
    """Answer-token loss of a text-only causal LM (a cheap proxy for mllm_loss)."""

    model: str = Field("gpt2", description="transformers causal LM: hub name or local directory.")
    template: TemplateChoice = Field("auto", description=_TEMPLATE_DOC)
    include_eos: bool = Field(True, description=_EOS_DOC)
    max_length: int | None = Field(None, ge=8, description=_MAXLEN_DOC)
    batch_size: int = _runtime_int(16, 1, "Sequences per model call (halved on CUDA out-of-memory).")
    num_workers: int = _runtime_int(
        1, 0, "Tokenizing processes, working ahead of the model (0 = in the scoring process)."
    )


class IfdParams(LmLossParams):
    """Instruction-following difficulty: loss_mean(answer | question) / loss_mean(answer alone)."""


class LengthParams(_Params):
    """Token and word counts of questions and answers."""

    model: str | None = Field(
        None,
        description="Tokenizer (hub name or local directory) to count tokens with; "
        "None = tokens are whitespace-separated words.",
    )


@dataclass(frozen=True)
class ScorerSpec:
    """What the API tells clients about one scorer kind."""

    kind: str
    params_model: type[_Params]
    metrics: tuple[str, ...]
    main_metric: str
    needs_image: bool
    description: str
    model_fields: tuple[str, ...] = ("model",)  # params that name a model or weights (identity-hashed)
    # bool param -> the metrics it adds when true (runs store them besides `metrics`)
    optional_metrics: tuple[tuple[str, tuple[str, ...]], ...] = ()


_LOSS_METRICS = ("loss_sum", "loss_mean", "tokens", "perplexity")

_SPECS: dict[str, ScorerSpec] = {
    s.kind: s
    for s in (
        ScorerSpec(
            "clip",
            ClipParams,
            ("similarity",),
            "similarity",
            needs_image=True,
            description="CLIP image-text similarity; multi-image samples: mean over images.",
            model_fields=("model", "pretrained"),
        ),
        ScorerSpec(
            "mllm_loss",
            MllmLossParams,
            _LOSS_METRICS,
            "loss_sum",
            needs_image=False,
            description="Answer-token loss of a LLaVA-style model given the sample's images "
            "(text-only samples are scored without one). loss_sum is the paper's formula.",
            optional_metrics=(
                ("image_gain", ("loss_no_image", "image_gain")),
                ("question_gain", ("loss_no_question", "mifd")),
            ),
        ),
        ScorerSpec(
            "lm_loss",
            LmLossParams,
            _LOSS_METRICS,
            "loss_sum",
            needs_image=False,
            description="Answer-token loss of a text-only causal LM.",
        ),
        ScorerSpec(
            "ifd",
            IfdParams,
            ("ifd", "loss_cond", "loss_direct", "tokens"),
            "ifd",
            needs_image=False,
            description="loss_mean(answer | question) / loss_mean(answer alone), one LM (Cherry LLM).",
        ),
        ScorerSpec(
            "length",
            LengthParams,
            ("tokens", "question_tokens", "answer_tokens", "words", "question_words", "answer_words"),
            "tokens",
            needs_image=False,
            description="Token and word counts (questions = human turns, answers = gpt turns).",
        ),
    )
}


def get_spec(kind: str) -> ScorerSpec:
    """The spec of ``kind``; ValueError for an unknown kind."""
    try:
        return _SPECS[kind]
    except KeyError:
        raise ValueError(f"kind: unknown scorer kind {kind!r} (known: {', '.join(_SPECS)})") from None


def metrics_for(kind: str, params: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The metrics a run of ``kind`` with ``params`` stores: the kind's metrics plus those its params turn on."""
    spec = get_spec(kind)
    canonical = validate_params(kind, params)
    extra = tuple(m for flag, names in spec.optional_metrics if canonical.get(flag) for m in names)
    return spec.metrics + extra


def _key_when_set_fields(kind: str) -> dict[str, Any]:
    """Params of ``kind`` counted in the key only when set, with their defaults."""
    model = get_spec(kind).params_model
    return {
        name: f.default
        for name, f in model.model_fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("key_when_set")
    }


def runtime_fields(kind: str) -> frozenset[str]:
    """Params of ``kind`` that change speed only (kept out of the scorer key)."""
    model = get_spec(kind).params_model
    return frozenset(
        name
        for name, f in model.model_fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("runtime")
    )


def list_specs() -> list[dict[str, Any]]:
    """All kinds as JSON-able dicts: kind, params_schema, metrics (with default params), optional_metrics
    (param -> the metrics it adds when true), main_metric, needs_image, description."""
    return [
        {
            "kind": s.kind,
            "params_schema": s.params_model.model_json_schema(),
            "metrics": list(s.metrics),
            "optional_metrics": {flag: list(names) for flag, names in s.optional_metrics},
            "main_metric": s.main_metric,
            "needs_image": s.needs_image,
            "description": s.description,
        }
        for s in _SPECS.values()
    ]


def _local_path(value: str) -> Path | None:
    """``value`` as an existing local path (a 'local-dir:' prefix allowed), else None."""
    raw = value.removeprefix("local-dir:")
    p = Path(raw).expanduser()
    return p.resolve() if p.exists() else None


def validate_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Canonical params of ``kind``: defaults filled in, local model paths made absolute.

    Raises ValueError naming the bad field.
    """
    spec = get_spec(kind)
    try:
        parsed = spec.params_model.model_validate(params or {})
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "params"
        raise ValueError(f"{kind}.{field}: {first['msg']}") from None
    out = parsed.model_dump(mode="json")
    for name in spec.model_fields:
        value = out.get(name)
        if isinstance(value, str) and (p := _local_path(value)) is not None:
            out[name] = ("local-dir:" if value.startswith("local-dir:") else "") + str(p)
    return out


# --- model identity --------------------------------------------------------------------------------

_hash_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_hash_lock = threading.Lock()


def _stat_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, mtime_ns, size) of every file under ``root`` (or of ``root`` itself), sorted."""
    if root.is_file():
        st = root.stat()
        return (("", st.st_mtime_ns, st.st_size),)
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            st = p.stat()
            rows.append((p.relative_to(root).as_posix(), st.st_mtime_ns, st.st_size))
    return tuple(sorted(rows))


def path_content_hash(path: str | os.PathLike[str]) -> str:
    """sha256 over the file names, sizes and bytes of a checkpoint file or directory.

    Cached per process by (path, each file's mtime and size), so a repeat costs one stat per file.
    """
    root = Path(path).resolve()
    sig = _stat_signature(root)
    key = (str(root), sig)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    for rel, _mtime, size in sig:
        h.update(f"{rel}\0{size}\0".encode())
        with open(root / rel if rel else root, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def model_identity(value: str | None) -> str | None:
    """A name stays itself; an existing local path becomes the hash of its content."""
    if value is None:
        return None
    p = _local_path(value)
    return path_content_hash(p) if p is not None else value


def scorer_key(kind: str, params: dict[str, Any] | None) -> str:
    """sha256 hex of the canonical JSON of (kind, score-affecting params, model identity)."""
    spec = get_spec(kind)
    canonical = validate_params(kind, params)
    skip = runtime_fields(kind) | set(spec.model_fields)
    skip |= {name for name, default in _key_when_set_fields(kind).items() if canonical.get(name) == default}
    payload = {
        "kind": kind,
        "params": {k: v for k, v in canonical.items() if k not in skip},
        "model": {name: model_identity(canonical.get(name)) for name in spec.model_fields},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
