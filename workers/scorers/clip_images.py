"""Getting images to the CLIP image tower fast: the host-side transform split from the device-side one, JPEG
bytes decoded on the device (nvJPEG) when it can, and a stable key per image file (path, size, mtime) for reuse."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}



class HostTransform:
    """The host half of an open_clip eval transform ending in ToTensor + Normalize: PIL steps, then a
    uint8 CHW tensor. The device finishes with ``x / 255``, ``(x - mean) / std`` (the same float32
    arithmetic), so loader workers ship a quarter of the bytes."""

    def __init__(self, steps: Any) -> None:
        self.steps = steps

    def __call__(self, image: Any) -> torch.Tensor:

        out = self.steps(image)
        if out.mode != "RGB":
            out = out.convert("RGB")
        return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)


def split_transform(preprocess: Any) -> tuple[Callable[[Any], torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """(host transform, mean, std): uint8 + device normalisation when possible, else (preprocess, None, None)."""
    from torchvision.transforms import Compose, Normalize, ToTensor

    steps = list(getattr(preprocess, "transforms", []))
    # open_clip's MaybeToTensor subclasses ToTensor (PIL -> float / 255)
    if len(steps) >= 2 and isinstance(steps[-1], Normalize) and isinstance(steps[-2], ToTensor):
        mean = torch.tensor(steps[-1].mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(steps[-1].std, dtype=torch.float32).view(1, 3, 1, 1)
        return HostTransform(Compose(steps[:-2])), mean, std
    return preprocess, None, None


def device_jpeg_decoder(device: torch.device) -> Callable[[list[torch.Tensor]], list[torch.Tensor]] | None:
    """torchvision's batched nvJPEG decoder onto ``device`` (RGB uint8 CHW), or None where it cannot run:
    a CPU device, a CPU-only torchvision (its compiled ops don't load there), or no nvJPEG."""
    if device.type != "cuda":
        return None
    try:
        from PIL import Image
        from torchvision.io import ImageReadMode, decode_jpeg

        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, format="JPEG")
        probe = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        out = decode_jpeg([probe], mode=ImageReadMode.RGB, device=device)
        if tuple(out[0].shape) != (3, 16, 16):
            return None
    except Exception:  # no CUDA build of torchvision, no nvJPEG, ...
        return None

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))

    return decode


def jpeg_bytes(path: str) -> torch.Tensor | None:
    """The file as a 1-D uint8 tensor when it is a whole RGB or greyscale JPEG (decodable on the device),
    else None: other formats, CMYK, and files without the end-of-image marker take the PIL path, which
    decodes them or names the error."""

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None  # load_image reports it
    if not data.startswith(b"\xff\xd8\xff") or not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # header only
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
    except Exception:
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


ImageKey = tuple[str, int, int]  # (path, size, modification time in ns): the same file, unchanged


def image_key(path: str) -> ImageKey | None:
    """What identifies an image file's content cheaply, or None if it cannot be read (not reused then)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_size, st.st_mtime_ns)
