"""Thumbnails for the gallery, cached on disk by content identity."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError


def thumbnail(path: Path, max_side: int, cache_dir: Path) -> bytes:
    """JPEG bytes of `path` scaled to fit `max_side`; raises ValueError if it is not a readable image."""
    st = path.stat()
    key = hashlib.sha1(f"{path}|{st.st_mtime_ns}|{st.st_size}|{max_side}".encode()).hexdigest()
    cached = cache_dir / key[:2] / f"{key}.jpg"
    if cached.is_file():
        return cached.read_bytes()
    try:
        with Image.open(path) as src:
            src.draft("RGB", (max_side, max_side))  # JPEG decodes at reduced scale: much faster
            im = src.convert("RGB")
        im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image ({exc.__class__.__name__})") from None
    data = buf.getvalue()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # concurrent requests
    tmp.write_bytes(data)
    tmp.replace(cached)
    return data
