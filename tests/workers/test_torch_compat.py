"""torchvision importable on CPU-only torch, only when needed, idempotently, without touching site-packages."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]

CHECK = """
import sys
from workers.torch_compat import ensure_torchvision as ensure
import workers.torch_compat as compat
first = ensure()
assert ensure() == first  # idempotent
import torch, torchvision, open_clip, transformers
from transformers import LlavaForConditionalGeneration, CLIPImageProcessor
assert hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms")
compat._checked = False
assert ensure() is False  # torchvision already imported: nothing more to define
print(first)
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_shim_makes_torchvision_open_clip_and_transformers_importable_only_when_needed() -> None:
    spec = importlib.util.find_spec("torchvision")
    assert spec is not None and spec.origin is not None
    site = Path(spec.origin).parent
    before = {p: p.stat().st_mtime_ns for p in site.glob("*.py")}

    plain = _run("import torchvision")
    shim = _run(CHECK)
    assert shim.returncode == 0, shim.stderr
    # On CPU torch with the CUDA torchvision wheel the plain import fails and the shim is needed;
    # where torchvision imports on its own, the shim defines nothing.
    assert shim.stdout.strip() == ("True" if plain.returncode != 0 else "False")
    if plain.returncode != 0:
        assert "torchvision::nms" in plain.stderr
    assert {p: p.stat().st_mtime_ns for p in site.glob("*.py")} == before  # site-packages untouched
