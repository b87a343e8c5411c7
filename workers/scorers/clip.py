"""CLIP image-text correlation with open_clip (metric ``similarity``).

similarity = mean over the sample's images of cos(image embedding, text embedding), times 100 for
``scale="x100"``. With ``long_text="chunks"`` the text embedding is the re-normalised mean of the
normalised embeddings of consecutive 77-token windows; with ``truncate`` it is CLIP's first 77 tokens.

An image file shown by several samples (same path, size and modification time) is decoded and embedded
once; the scorer keeps the last ``IMAGE_CACHE`` image embeddings for later windows and calls.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from backend.scorer_specs import ClipParams, ScoreItem, ScoreResult, model_identity
from workers.scorers.base import (
    Failed,
    SampleError,
    Scorer,
    cached_model,
    each,
    load_image,
    model_key,
    select_text,
)
from workers.scorers.clip_images import (
    HostTransform,
    ImageKey,
    device_jpeg_decoder,
    image_key,
    jpeg_bytes,
    split_transform,
)
from workers.scorers.embeddings import KeptEmbeddings, image_means

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}



def _resolve_local_dir(folder: Path, pretrained: str | None) -> tuple[str, str]:
    """(registered model name, weights file) for a folder with an open_clip model config + weights."""
    import open_clip

    configs = []
    for f in sorted(folder.glob("*.json")):
        try:
            cfg = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict) and all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            configs.append(f)
    if len(configs) != 1:
        raise ValueError(f"model: {folder} must hold exactly one open_clip model config JSON")
    open_clip.add_model_config(configs[0])  # registers the config under its file stem
    if pretrained and Path(pretrained).is_file():
        weights = pretrained
    else:
        found = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if not found:
            raise ValueError(f"model: no weights file in {folder}")
        weights = str(found[0])
    return configs[0].stem, weights


def load_clip(
    model: str, pretrained: str | None, device: torch.device, dtype: torch.dtype
) -> tuple[Any, Callable[[Any], torch.Tensor], Any]:
    """(model in eval mode, eval image transform, tokenizer) through open_clip's own loading code."""
    import open_clip

    name, weights = model, pretrained
    folder = Path(model).expanduser()
    if folder.is_dir() and not (folder / "open_clip_config.json").is_file():
        name, weights = _resolve_local_dir(folder, pretrained)
    elif folder.is_dir():
        name, weights = f"local-dir:{folder}", None  # open_clip's own folder layout
    clip, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=weights, device=device, precision=_PRECISION[dtype]
    )
    clip.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return clip, preprocess, tokenizer


def clip_text_tokens(tokenizer: Any, text: str, long_text: str) -> torch.Tensor:
    """Token rows for ``text``: one (CLIP's truncation) or one per 77-token window."""
    if long_text == "truncate":
        return tokenizer([text])
    if not all(hasattr(tokenizer, a) for a in ("encode", "sot_token_id", "eot_token_id")):
        raise ValueError("long_text: 'chunks' needs open_clip's CLIP BPE tokenizer")
    ctx = int(tokenizer.context_length)
    ids = tokenizer.encode(text)
    step = ctx - 2  # room for start and end tokens in every window
    windows = [ids[i : i + step] for i in range(0, max(len(ids), 1), step)]
    out = torch.zeros(len(windows), ctx, dtype=torch.long)
    for row, w in enumerate(windows):
        seq = [tokenizer.sot_token_id, *w, tokenizer.eot_token_id]
        out[row, : len(seq)] = torch.tensor(seq)
    return out


def trims_text_padding(model: Any) -> bool:
    """True for open_clip's CLIP with a causal text tower pooled at the end token: the tokens after the
    end token then cannot change the embedding, so a batch may be cut to its longest text."""
    return (
        type(model).__name__ == "CLIP"
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        and all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final"))
    )


def encode_text_trimmed(model: Any, text: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on tokens cut to the batch's longest text (causal mask: same result)."""
    from open_clip.transformer import text_global_pool

    eos: int | None = getattr(model, "text_eos_id", None)
    if model.text_pool_type == "argmax":  # CLIP: the end token has the largest id
        ends = text.argmax(-1)
    else:
        ends = (text == int(eos if eos is not None else -1)).int().argmax(-1)
    n = int(ends.max()) + 1  # the pooled position of every row stays inside
    text = text[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=eos)
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


@dataclass
class _ClipJob:
    """A sample as the loader gets it: which of its images to decode (the others reuse an embedding)."""

    item: ScoreItem
    decode: tuple[bool, ...]
    keys: tuple[ImageKey | None, ...]


@dataclass
class _ClipInput:
    sample_id: int
    # One per decoded image: uint8 [3, H, W] (normalised on the device) or float32 [3, H, W] (transformed
    # on the host); or, where ``pending`` says so, an image the device still has to finish.
    images: list[torch.Tensor]
    tokens: torch.Tensor  # [n_windows, context]
    # per decoded image: "" = ready; "hwc" = decoded full size (uint8 [H, W, 3]), the device resizes and
    # crops it; "jpeg" = the file's bytes (1-D uint8), the device decodes (nvJPEG), resizes and crops it
    pending: list[str] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # per decoded image: its index among the sample's images
    keys: list[ImageKey | None] = field(default_factory=list)  # per image of the sample; None: not reusable


IMAGE_PATHS = ("host", "device_resize", "nvjpeg")
IMAGE_CACHE = 16384  # image embeddings a scorer keeps for later samples showing the same file


class ClipScorer(Scorer):
    kind = "clip"
    params: ClipParams

    def _load(self) -> None:
        p = self.params
        key = (*model_key("clip", p.model, self.device, self.dtype), model_identity(p.pretrained))
        self.model, self.preprocess, self.tokenizer = cached_model(
            key, lambda: load_clip(p.model, p.pretrained, self.device, self.dtype)
        )
        if p.long_text == "chunks":
            clip_text_tokens(self.tokenizer, "", "chunks")  # fail at load, not per sample
        self.trim_text = trims_text_padding(self.model)
        self.kept = KeptEmbeddings()  # keep_embeddings: drained per chunk by the task
        self._image_cache: OrderedDict[ImageKey, torch.Tensor] = OrderedDict()
        self._cache_path = ""  # the image path the cached embeddings were made on
        self.host_transform, mean, std = split_transform(self.preprocess)
        self.mean = mean.to(self.device) if mean is not None else None
        self.std = std.to(self.device) if std is not None else None
        # Where images are decoded and resized (``image_path``, one of IMAGE_PATHS):
        # - "host": PIL decodes and the open_clip transform resizes in the loader workers (the CPU default,
        #   and the fallback on CUDA without nvJPEG);
        # - "nvjpeg" (the CUDA default): the workers ship the file's bytes; nvJPEG decodes on the GPU and
        #   torchvision's tensor transforms resize and crop there (within a grey level of PIL: scores move
        #   by ~1e-3). Only whole RGB/grey JPEGs; other files take the "host" path. Fastest measured on an
        #   H100 (BENCHMARKS.md, Scoring);
        # - "device_resize": PIL decodes in the workers, which ship the full-size uint8 image; the GPU
        #   resizes and crops it.
        splittable = isinstance(self.host_transform, HostTransform)
        self.device_decode = device_jpeg_decoder(self.device) if splittable else None
        self.image_path = "nvjpeg" if self.device_decode is not None else "host"

    def text_of(self, item: ScoreItem) -> str:
        text = select_text(item.conversations, self.params.text)
        if not text:
            raise SampleError("empty answer" if self.params.text == "answers" else "empty text")
        return text

    def prepare(
        self,
        item: ScoreItem,
        decode: Sequence[bool] | None = None,
        keys: Sequence[ImageKey | None] | None = None,
    ) -> _ClipInput:
        """Decode and transform the images (those ``decode`` marks; default all) and tokenize the text
        (runs in loader workers)."""
        if not item.images:
            raise SampleError("no image")
        tokens = clip_text_tokens(self.tokenizer, self.text_of(item), self.params.long_text)
        images: list[torch.Tensor] = []
        pending: list[str] = []
        slots: list[int] = []
        for j, path in enumerate(item.images):
            if decode is not None and not decode[j]:
                continue
            slots.append(j)
            data = jpeg_bytes(path) if self.image_path == "nvjpeg" and self.device_decode is not None else None
            if data is not None:
                images.append(data)
                pending.append("jpeg")
            elif self.image_path == "device_resize":
                images.append(torch.from_numpy(np.array(load_image(path), dtype=np.uint8)))
                pending.append("hwc")
            else:
                images.append(self.host_transform(load_image(path)))
                pending.append("")
        key_list: list[ImageKey | None] = list(keys) if keys is not None else [None] * len(item.images)
        return _ClipInput(item.sample_id, images, tokens, pending, slots, key_list)

    def _prepare_job(self, job: _ClipJob) -> _ClipInput:
        return self.prepare(job.item, job.decode, job.keys)

    def plan(self, items: list[ScoreItem], batches: list[list[int]]) -> list[_ClipJob]:
        """Per sample, which images to decode: each image file (same path, size and modification time)
        once, in the first batch that shows it, unless an earlier window already embedded it; later
        samples reuse its embedding (datasets such as SVIT and ShareGPT4V ask several questions of one
        image)."""
        if self._cache_path != self.image_path:  # embeddings depend on where images are decoded and resized
            self._image_cache.clear()
            self._cache_path = self.image_path
        planned = set(self._image_cache)
        jobs: list[_ClipJob | None] = [None] * len(items)
        for batch in batches:
            for i in batch:
                keys = tuple(image_key(p) for p in items[i].images)
                decode = tuple(k is None or k not in planned for k in keys)
                planned.update(k for k in keys if k is not None)
                jobs[i] = _ClipJob(items[i], decode, keys)
        assert all(j is not None for j in jobs)
        return jobs  # type: ignore[return-value]

    def _finish_images(self, batch: list[_ClipInput]) -> tuple[list[_ClipInput], list[ScoreResult]]:
        """Finish the images the loader left to the device (in place): decode JPEG bytes (nvJPEG), resize
        and crop. A JPEG nvJPEG cannot decode falls back to PIL; one PIL cannot decode either becomes an
        error row, and the rest of the batch goes on."""
        todo = [(k, j, how) for k, x in enumerate(batch) for j, how in enumerate(x.pending) if how]
        if not todo:
            return batch, []
        assert isinstance(self.host_transform, HostTransform)
        steps = self.host_transform.steps  # Resize, CenterCrop: torchvision runs them on tensors too
        for k, j, how in todo:
            if how == "hwc":
                im = batch[k].images[j].to(self.device, non_blocking=True).permute(2, 0, 1)
                batch[k].images[j] = steps(im)
                batch[k].pending[j] = ""
        jpegs = [(k, j) for k, j, how in todo if how == "jpeg"]
        if not jpegs:
            return batch, []
        assert self.device_decode is not None
        data = [batch[k].images[j] for k, j in jpegs]
        try:
            decoded: list[torch.Tensor | None] = list(self.device_decode(data))
        except Exception:  # one bad stream fails nvJPEG's batch: find it
            decoded = []
            for d in data:
                try:
                    decoded.append(self.device_decode([d])[0])
                except Exception:
                    decoded.append(None)
        bad: dict[int, str] = {}
        for (k, j), dec, raw in zip(jpegs, decoded, data, strict=True):
            batch[k].pending[j] = ""
            if dec is not None:
                batch[k].images[j] = steps(dec)
                continue
            try:
                with Image.open(io.BytesIO(raw.numpy().tobytes())) as pic:
                    pic.load()
                    batch[k].images[j] = self.host_transform(pic.convert("RGB"))
            except Exception as e:
                bad[k] = f"image unreadable ({type(e).__name__})"
        ok = [x for k, x in enumerate(batch) if k not in bad]
        return ok, [self.failed(batch[k].sample_id, e) for k, e in bad.items()]

    def _score_window(self, items: list[ScoreItem]) -> Iterator[ScoreResult]:
        # Bucket by text length (characters: a free proxy for tokens) so each batch's text is cut short.
        chars = [len(select_text(it.conversations, self.params.text)) for it in items]
        order = sorted(range(len(items)), key=chars.__getitem__)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        jobs = self.plan(items, batches)
        for batch in self.loader("prepare", each(self._prepare_job)).batches(jobs, batches):
            ok = [x for x in batch if isinstance(x, _ClipInput)]
            for x in batch:
                if isinstance(x, Failed):
                    yield self.failed(x.sample_id, x.error)
            if ok:
                yield from self.run_with_backoff(ok, self.forward, lambda x: x.sample_id)

    @torch.inference_mode()
    def forward(self, batch: list[_ClipInput]) -> list[ScoreResult]:
        """One image call (the images this batch decoded) and one text call for the whole batch; images
        embedded before are taken from the cache; per-sample means by owner index."""
        batch, failed = self._finish_images(batch)
        if not batch:
            return failed
        ims = [im for x in batch for im in x.images]
        fresh: dict[tuple[int, int], torch.Tensor] = {}  # (sample in batch, image slot) -> embedding
        if ims:
            embedded = self._embed_images(ims)
            rows = iter(embedded)
            for b, x in enumerate(batch):
                for slot in x.slots:
                    fresh[b, slot] = e = next(rows)
                    key = x.keys[slot]
                    if key is not None:
                        self._remember(key, e.clone())  # a row of its own: a view would keep its whole batch alive
        per_image: list[torch.Tensor] = []
        counts: list[int] = []
        ok: list[_ClipInput] = []
        for b, x in enumerate(batch):
            try:
                embs = [fresh[b, j] if (b, j) in fresh else self._reused(x.keys[j]) for j in range(len(x.keys))]
            except SampleError as e:
                failed.append(self.failed(x.sample_id, str(e)))
                continue
            ok.append(x)
            per_image += embs
            counts.append(len(embs))
        if not ok:
            return failed
        img = torch.stack(per_image)
        tokens = torch.cat([x.tokens for x in ok]).to(self.device, non_blocking=True)
        encoded = encode_text_trimmed(self.model, tokens) if self.trim_text else self.model.encode_text(tokens)
        txt = F.normalize(encoded.float(), dim=-1)
        img_owner = torch.repeat_interleave(torch.arange(len(ok)), torch.tensor(counts)).to(self.device)
        txt_owner = torch.repeat_interleave(
            torch.arange(len(ok)), torch.tensor([len(x.tokens) for x in ok])
        ).to(self.device)
        # Text embedding per sample: mean of its window embeddings, re-normalised (one window: itself).
        t = torch.zeros(len(ok), txt.shape[1], device=self.device).index_add_(0, txt_owner, txt)
        t = F.normalize(t, dim=-1)
        sims = (img * t[img_owner]).sum(-1)
        per_sample = torch.zeros(len(ok), device=self.device).index_add_(0, img_owner, sims)
        per_sample = per_sample / torch.tensor(counts, device=self.device)
        if self.params.keep_embeddings:
            self.kept.add([x.sample_id for x in ok], image_means(img, img_owner, counts), t)
        scale = 100.0 if self.params.scale == "x100" else 1.0
        values = (per_sample * scale).tolist()
        return failed + [
            ScoreResult(x.sample_id, {"similarity": float(v)}, None) for x, v in zip(ok, values, strict=True)
        ]

    def _embed_images(self, ims: list[torch.Tensor]) -> torch.Tensor:
        """Normalised float32 embeddings of prepared images (one model call)."""
        if all(im.device == ims[0].device for im in ims):
            images = torch.stack(ims).to(self.device, non_blocking=True)  # one host-to-device copy
        else:  # some decoded on the device already
            images = torch.stack([im.to(self.device, non_blocking=True) for im in ims])
        if self.mean is not None and self.std is not None:  # finish ToTensor + Normalize, float32 as torchvision
            images = (images.float().div(255) - self.mean) / self.std
        return F.normalize(self.model.encode_image(images.to(self.dtype)).float(), dim=-1)

    def clear_image_cache(self) -> None:
        """Forget the image embeddings kept for reuse (benchmarks: every timed run decodes and embeds)."""
        self._image_cache.clear()

    def _remember(self, key: ImageKey, embedding: torch.Tensor) -> None:
        self._image_cache[key] = embedding
        self._image_cache.move_to_end(key)
        while len(self._image_cache) > IMAGE_CACHE:
            self._image_cache.popitem(last=False)

    def _reused(self, key: ImageKey | None) -> torch.Tensor:
        """The cached embedding of ``key``'s image; if it is not there (the sample that was to decode it
        failed for another reason, or it was evicted), the image is embedded here, alone."""
        assert key is not None  # the plan decodes every image without a key
        e = self._image_cache.get(key)
        if e is not None:
            self._image_cache.move_to_end(key)
            return e
        image = self.preprocess(load_image(key[0]))
        e = F.normalize(self.model.encode_image(image[None].to(self.device, self.dtype)).float(), dim=-1)[0]
        self._remember(key, e)
        return e

    @torch.inference_mode()
    def reference(self, item: ScoreItem) -> ScoreResult:
        """The slow, obvious computation for one sample: every image and text window its own model call.

        Tests and the benchmark check :meth:`score` against it.
        """
        self.load()
        try:
            if not item.images:
                raise SampleError("no image")
            text = self.text_of(item)
            images = [self.preprocess(load_image(p)) for p in item.images]
        except SampleError as e:
            return self.failed(item.sample_id, str(e))
        if self.params.long_text == "truncate":
            rows = [self.tokenizer([text])]
        else:
            rows = [w[None] for w in clip_text_tokens(self.tokenizer, text, "chunks")]
        txt = [F.normalize(self.model.encode_text(r.to(self.device)).float(), dim=-1)[0] for r in rows]
        t = F.normalize(torch.stack(txt).mean(0), dim=0)
        sims = []
        for im in images:
            f = F.normalize(self.model.encode_image(im[None].to(self.device, self.dtype)).float(), dim=-1)[0]
            sims.append(float(f @ t))
        scale = 100.0 if self.params.scale == "x100" else 1.0
        return ScoreResult(item.sample_id, {"similarity": scale * sum(sims) / len(sims)}, None)
