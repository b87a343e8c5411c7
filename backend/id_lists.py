"""Saved id lists (selections, curriculum stages) as bytes: plain int32 little-endian, or packed when long."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

IdArray = npt.NDArray[np.int32]

# A saved id list is int32 little-endian; one of PACK_FROM ids or more is stored packed instead: the gaps between
# consecutive ids (small for a sorted list) zstd-compressed, behind a header. A 4.5M-sample lasso's 18 MB of ids
# took ~0.15 s to write into its row (WAL included) at 10M samples; packed it is ~1-2 MB. A packed blob's length is
# 2 mod 4, which a plain int32 list's never is, so the two never mix up.
PACK_FROM = 4096
_PACKED = b"QSZ1"
_HEADER = np.dtype([("magic", "S4"), ("count", "<u4"), ("size", "<u4")])


def ids_to_bytes(ids: IdArray) -> bytes:
    plain = np.ascontiguousarray(ids, dtype="<i4")
    if plain.size < PACK_FROM:
        return plain.tobytes()
    gaps = np.diff(plain, prepend=np.int32(0)).astype("<i4")  # wraps like int32 arithmetic: undone exactly by cumsum
    payload = pa.Codec("zstd").compress(gaps.tobytes(), asbytes=True)
    header = np.array([(_PACKED, plain.size, len(payload))], dtype=_HEADER).tobytes()
    pad = (2 - (len(header) + len(payload))) % 4
    return header + payload + b"\0" * pad


def ids_from_bytes(blob: bytes) -> IdArray:
    if len(blob) % 4 == 2 and blob[:4] == _PACKED:
        head = np.frombuffer(blob, dtype=_HEADER, count=1)[0]
        count, size = int(head["count"]), int(head["size"])
        start = _HEADER.itemsize
        raw = pa.Codec("zstd").decompress(blob[start : start + size], decompressed_size=4 * count, asbytes=True)
        return np.cumsum(np.frombuffer(raw, dtype="<i4"), dtype=np.int32)
    return np.frombuffer(blob, dtype="<i4").astype(np.int32)
