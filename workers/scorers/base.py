"""Scorer base: batching, timing, counters, device/dtype choice, model cache, per-sample errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from backend.scorer_specs import (  # noqa: E402
    ScoreItem,
    ScoreResult,
    get_spec,
    metrics_for,
    model_identity,
    validate_params,
)
from workers.scorers.loader import Failed, Loader, preprocess_error, sample_id_of  # noqa: E402

IMAGE_TOKEN = "<image>"

T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P")


class SampleError(Exception):
    """A sample that cannot be scored; ``str(e)`` is the short reason stored with it."""


# --- device and dtype ------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The given dtype, else bf16 on CUDA (fp16 without bf16 support), float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[str(dtype)]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# --- model cache: one load per process -------------------------------------------------------------

_MODELS: dict[tuple[Any, ...], Any] = {}
_MODELS_LOCK = threading.Lock()


def model_key(family: str, model: str | None, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
    """The cache key of a loaded model: family ("clip", "mllm", "lm"), identity, device, dtype.

    Benchmarks put a model built in memory under the key of a made-up name with :func:`cached_model`.
    """
    return (family, model_identity(model), str(device), dtype)


def cached_model(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """``load()`` once per process per ``key`` (model identity, device, dtype); later calls share it."""
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load()
        return _MODELS[key]


def clear_model_cache() -> None:
    """Forget every loaded model (tests, or to free memory)."""
    with _MODELS_LOCK:
        _MODELS.clear()


# --- conversations ---------------------------------------------------------------------------------


def strip_image_token(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


def turns(conversations: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """(role, text without <image>) for each human/gpt turn."""
    return [
        (c["from"], strip_image_token(c.get("value") or ""))
        for c in conversations
        if c.get("from") in ("human", "gpt")
    ]


def questions(conversations: Sequence[dict[str, str]]) -> list[str]:
    return [t for r, t in turns(conversations) if r == "human" and t]


def answers(conversations: Sequence[dict[str, str]]) -> list[str]:
    return [t for r, t in turns(conversations) if r == "gpt" and t]


def select_text(conversations: Sequence[dict[str, str]], which: str) -> str:
    """The text a scorer reads: ``answers`` | ``questions`` | ``first_turn`` | ``conversation``."""
    ts = turns(conversations)
    if which == "answers":
        parts = answers(conversations)
    elif which == "questions":
        parts = questions(conversations)
    elif which == "first_turn":
        q = next((t for r, t in ts if r == "human" and t), "")
        a = next((t for r, t in ts if r == "gpt" and t), "")
        parts = [q, a]
    elif which == "conversation":
        parts = [t for _, t in ts]
    else:
        raise ValueError(f"text: unknown choice {which!r}")
    return " ".join(p for p in parts if p)


# --- images ----------------------------------------------------------------------------------------


def load_image(path: str) -> Image.Image:
    """Decode ``path`` fully into RGB; SampleError with a short reason if it is missing or not an image."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later in a batch
            return im.convert("RGB")
    except FileNotFoundError:
        raise SampleError(f"image missing: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise SampleError(f"image unreadable: {path} ({type(e).__name__})") from None


# --- preparation per record ------------------------------------------------------------------------


def each(prepare: Callable[[R], P]) -> Callable[[list[R]], list[P | Failed]]:
    """A piece preparer from a per-record one: a record that fails becomes a :class:`Failed` row."""

    def prepare_piece(records: list[R]) -> list[P | Failed]:
        out: list[P | Failed] = []
        for rec in records:
            try:
                out.append(prepare(rec))
            except SampleError as e:
                out.append(Failed(sample_id_of(rec), str(e)))
            except Exception as e:  # a per-sample bug must not fail the batch
                out.append(Failed(sample_id_of(rec), preprocess_error(e)))
        return out

    return prepare_piece


# --- the scorer ------------------------------------------------------------------------------------


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )


class Scorer:
    """Scores :class:`ScoreItem` s into :class:`ScoreResult` s, batch by batch.

    Subclasses set ``kind``, implement ``_load`` (fill attributes from :func:`cached_model`) and
    ``_score_window`` (score one window of items, yielding a result for every item). Results of a
    window may come in any order (length bucketing); each carries its ``sample_id``.
    """

    kind: ClassVar[str]
    window_factor: ClassVar[int] = 32  # a window holds this many batches: the span of length bucketing

    def __init__(
        self,
        params: dict[str, Any] | BaseModel | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        spec = get_spec(self.kind)
        raw = params.model_dump() if isinstance(params, BaseModel) else params
        self.params = spec.params_model.model_validate(validate_params(self.kind, raw))
        self.metrics = metrics_for(self.kind, raw)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, dtype)
        self.batch_size: int = int(getattr(self.params, "batch_size", 64))
        self.num_workers: int = int(getattr(self.params, "num_workers", 0))
        self.samples = 0
        self.errors = 0
        self.seconds = 0.0
        self._loaded = False
        self._loaders: dict[str, Loader[Any, Any]] = {}

    # -- subclass hooks
    def _load(self) -> None:
        raise NotImplementedError

    def _score_window(self, items: list[ScoreItem]) -> Iterator[ScoreResult]:
        raise NotImplementedError

    # -- public
    def load(self) -> Scorer:
        """Load the model now (otherwise the first ``score`` does)."""
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def stats(self) -> dict[str, float]:
        return {
            "samples": self.samples,
            "errors": self.errors,
            "seconds": self.seconds,
            "samples_per_s": self.samples_per_s,
        }

    def score(self, items: Iterable[ScoreItem]) -> Iterator[ScoreResult]:
        """One result per item. ``seconds`` counts time spent here, not in the caller between results."""
        t0 = time.perf_counter()
        self.load()
        window: list[ScoreItem] = []
        size = self.batch_size * self.window_factor
        it = iter(items)
        while True:
            window.clear()
            for item in it:
                window.append(item)
                if len(window) >= size:
                    break
            if not window:
                break
            for r in self._score_window(list(window)):
                self.samples += 1
                self.errors += r.error is not None
                self.seconds += time.perf_counter() - t0
                yield r
                t0 = time.perf_counter()
        self.seconds += time.perf_counter() - t0

    def score_all(self, items: Iterable[ScoreItem]) -> dict[int, ScoreResult]:
        """All results keyed by sample id."""
        return {r.sample_id: r for r in self.score(items)}

    def close(self) -> None:
        """Stop the loader processes (the model stays cached in this process)."""
        for loader in self._loaders.values():
            loader.close()

    # -- helpers for subclasses
    def loader(self, name: str, prepare_piece: Callable[[list[Any]], list[Any]]) -> Loader[Any, Any]:
        """This scorer's loader ``name`` (kept across windows: its worker processes are forked once)."""
        if name not in self._loaders:
            self._loaders[name] = Loader(prepare_piece, self.num_workers)
        return self._loaders[name]

    @staticmethod
    def failed(sample_id: int, error: str) -> ScoreResult:
        return ScoreResult(sample_id=sample_id, metrics=None, error=error)

    def run_with_backoff(self, batch: list[T], forward: Callable[[list[T]], list[ScoreResult]],
                         sample_id: Callable[[T], int]) -> list[ScoreResult]:
        """``forward(batch)``; on out-of-memory halve the batch (and ``batch_size``) and retry.

        A batch built before an earlier back-off is first cut to the current ``batch_size``.
        """
        if len(batch) > self.batch_size:
            out: list[ScoreResult] = []
            for i in range(0, len(batch), self.batch_size):
                out += self.run_with_backoff(batch[i : i + self.batch_size], forward, sample_id)
            return out
        try:
            return forward(batch)
        except Exception as e:
            if not is_oom(e):
                raise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            return [self.failed(sample_id(batch[0]), "out of memory")]
        half = len(batch) // 2
        self.batch_size = max(1, min(self.batch_size, half))
        return self.run_with_backoff(batch[:half], forward, sample_id) + self.run_with_backoff(
            batch[half:], forward, sample_id
        )
