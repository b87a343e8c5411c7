"""A run's kept CLIP embeddings: Arrow IPC files in the data directory, written by the workers, read by both.

A ``clip`` run posted with ``keep_embeddings: true`` stores, per sample, its image embedding (the mean of the
normalised embeddings of its images: for one image, that unit vector, and for several, the vector whose dot
product with the text embedding is the run's cosine ``similarity``) and its text embedding (normalised), both
float16, under ``DATA_DIR/runs/<run id>-<scorer key[:12]>/embeddings/``.

Exactly once, without a coordinator: each scored chunk writes one file named by its sample-id range and a hash
of its ids, to a temporary name then ``os.replace``; the file is written *before* the chunk's scores are
committed, so a score row implies its embeddings are on disk. A redelivered chunk scores the same ids again
and replaces its file with the same content; a chunk that finds some of its samples done writes a smaller file
with other ids. Readers concatenate every file and keep one row per sample id, so overlaps never count twice.

Size: 4 + 2 x 2 x D bytes per sample (id, two float16 vectors of D dimensions): ViT-L-14 (D = 768) takes
3.07 GB per 1M samples, ViT-B-32 (D = 512) 2.05 GB. Arrow IPC (not Parquet) so a reader memory-maps the files
instead of decoding them; float16 vectors do not compress.

Torch-free: the API reads these files (neighbours) and ``backend`` never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Source = Literal["image", "text", "both"]
SOURCES: tuple[str, ...] = ("image", "text", "both")
F16 = npt.NDArray[np.float16]
F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

_SUFFIX = ".arrow"


def run_dir(data_dir: Path, run_id: int, scorer_key: str) -> Path:
    """The run's folder of derived files (the key in the name: a reused SQLite id never finds old files)."""
    return Path(data_dir) / "runs" / f"{int(run_id)}-{scorer_key[:12]}"


def embeddings_dir(data_dir: Path, run_id: int, scorer_key: str) -> Path:
    return run_dir(data_dir, run_id, scorer_key) / "embeddings"


def delete_run_files(data_dir: Path, run_id: int, scorer_key: str) -> bool:
    """Remove the run's folder (embeddings, cluster labels); True when there was one."""
    d = run_dir(data_dir, run_id, scorer_key)
    if not d.exists():
        return False
    shutil.rmtree(d, ignore_errors=True)
    _CACHE.drop(str(d))
    return True


def chunk_name(ids: npt.ArrayLike) -> str:
    """``chunk-<first>-<last>-<hash of the sorted ids>.arrow``: the same ids always give the same name."""
    a = np.unique(np.asarray(ids, dtype=np.int64))
    digest = hashlib.sha1(a.astype("<i8").tobytes()).hexdigest()[:16]
    return f"chunk-{int(a[0]):010d}-{int(a[-1]):010d}-{digest}{_SUFFIX}"


def _vectors(m: npt.NDArray[np.floating]) -> pa.FixedSizeListArray:
    m16 = np.ascontiguousarray(m, dtype=np.float16)
    return pa.FixedSizeListArray.from_arrays(pa.array(m16.reshape(-1), type=pa.float16()), m16.shape[1])


def write_chunk(folder: Path, ids: npt.ArrayLike, image: npt.ArrayLike, text: npt.ArrayLike) -> Path | None:
    """Write one chunk's embeddings atomically (float16); None when there is nothing to write."""
    id_arr = np.asarray(ids, dtype=np.int64)
    img, txt = np.asarray(image), np.asarray(text)
    if id_arr.size == 0:
        return None
    if img.shape[0] != id_arr.size or txt.shape[0] != id_arr.size or img.ndim != 2 or txt.ndim != 2:
        raise ValueError(f"embeddings: {id_arr.size} ids but image {img.shape}, text {txt.shape}")
    order = np.argsort(id_arr, kind="stable")
    table = pa.table(
        {
            "sample_id": pa.array(id_arr[order].astype(np.int32)),
            "image": _vectors(img[order]),
            "text": _vectors(txt[order]),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / chunk_name(id_arr)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, final)  # atomic: a reader sees the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def chunk_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("chunk-") and p.suffix == _SUFFIX)


def has_embeddings(folder: Path) -> bool:
    return bool(chunk_files(folder))


@dataclass(frozen=True)
class Embeddings:
    """One row per sample id (sorted), float16 image and text vectors."""

    ids: I32
    image: F16
    text: F16

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.image.nbytes + self.text.nbytes)

    def matrix(self, source: str, rows: npt.ArrayLike | None = None) -> F32:
        """Unit float32 rows of ``source`` (``both``: image and text halves each normalised, then / sqrt 2,
        so a dot product is the mean of the image-image and text-text cosines)."""
        sel = slice(None) if rows is None else np.asarray(rows)
        if source == "image":
            return normalise(self.image[sel])
        if source == "text":
            return normalise(self.text[sel])
        if source == "both":
            both = np.concatenate([normalise(self.image[sel]), normalise(self.text[sel])], axis=1)
            both *= np.float32(1 / np.sqrt(2))
            return both
        raise ValueError(f"source: {source!r} is not one of {', '.join(SOURCES)}")

    def row_of(self, sample_id: int) -> int | None:
        i = int(np.searchsorted(self.ids, sample_id))
        return i if i < self.ids.size and int(self.ids[i]) == sample_id else None


def normalise(m: npt.ArrayLike, block: int = 65_536) -> F32:
    """Rows scaled to unit length, float32 (zero rows stay zero); converted block by block."""
    a = np.asarray(m)
    out = np.empty(a.shape, dtype=np.float32)
    for i in range(0, a.shape[0], block):
        b = a[i : i + block].astype(np.float32)
        n = np.linalg.norm(b, axis=1, keepdims=True)
        np.divide(b, n, out=b, where=n > 0)
        out[i : i + block] = b
    return out


def _f16_matrix(arr: pa.FixedSizeListArray) -> F16:
    """A fixed-size-list<halffloat> column as an [n, width] float16 array: straight from its buffer (pyarrow's
    to_numpy of half floats goes element by element, ~50 MB/s). A view of the memory map: copy before closing."""
    width = arr.type.list_size
    child = arr.flatten()
    data = np.frombuffer(child.buffers()[1], dtype=np.float16, count=child.offset + len(child))[child.offset :]
    return data.reshape(-1, width)


def read_embeddings(folder: Path, columns: tuple[str, ...] = ("image", "text")) -> Embeddings:
    """Every chunk file of the folder, one row per sample id (the last file's row wins; they are equal).

    ``columns`` limits what is loaded (a column left out is an empty ``(0, 0)`` array): the API's neighbours
    of image embeddings need half the memory."""
    files = chunk_files(folder)
    empty = np.empty((0, 0), np.float16)
    if not files:
        return Embeddings(np.empty(0, np.int32), empty, empty)
    ids_l: list[I32] = []
    vecs: dict[str, list[F16]] = {c: [] for c in columns}
    maps = []
    try:
        for p in files:
            source = pa.memory_map(str(p))
            maps.append(source)
            table = pa.ipc.open_file(source).read_all()
            ids_l.append(table.column("sample_id").to_numpy().astype(np.int32))
            for col, out in vecs.items():
                out.append(_f16_matrix(table.column(col).combine_chunks()))
        # One copy, out of the memory maps, into one array per column.
        joined = {c: np.concatenate(v) if len(v) > 1 else v[0].copy() for c, v in vecs.items()}
    finally:
        vecs.clear()
        for source in maps:
            source.close()
    ids = np.concatenate(ids_l)
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):  # the usual case: chunks in order, no overlap
        return Embeddings(ids, joined.get("image", empty), joined.get("text", empty))
    # Last occurrence of each id: reverse, take the first of each unique value.
    uniq, first_rev = np.unique(ids[::-1], return_index=True)
    take = ids.size - 1 - first_rev
    return Embeddings(
        uniq.astype(np.int32),
        joined["image"][take] if "image" in joined else empty,
        joined["text"][take] if "text" in joined else empty,
    )


def folder_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in chunk_files(folder):
        st = p.stat()
        out.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


class _EmbeddingsCache:
    """The last few runs' embeddings in memory (the API's neighbours), reloaded when a file changes."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[tuple[tuple[str, int, int], ...], Embeddings]] = OrderedDict()

    def get(self, folder: Path, columns: tuple[str, ...]) -> Embeddings:
        key = f"{folder}|{','.join(columns)}"
        stamp = folder_stamp(folder)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                return hit[1]
        emb = read_embeddings(folder, columns)
        with self._lock:
            self._items[key] = (stamp, emb)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return emb

    def drop(self, prefix: str) -> None:
        with self._lock:
            for k in [k for k in self._items if k.startswith(prefix)]:
                del self._items[k]


_CACHE = _EmbeddingsCache()


def columns_for(source: str) -> tuple[str, ...]:
    return ("image", "text") if source == "both" else (source,)


def cached_embeddings(folder: Path, source: str = "both") -> Embeddings:
    """:func:`read_embeddings` of what ``source`` needs, kept in memory for the last two runs asked for."""
    if source not in SOURCES:
        raise ValueError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
    return _CACHE.get(folder, columns_for(source))
