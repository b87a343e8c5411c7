"""Make ``import torchvision`` work on CPU-only torch.

The only torchvision wheel on the registry is a CUDA build. On CPU torch its compiled extension fails
to load, and ``torchvision/_meta_registrations.py`` then dies registering fake kernels for
``torchvision::nms`` / ``torchvision::qnms`` because those operators were never defined. open_clip and
transformers import torchvision, so they die with it. Defining the two operator *schemas* before the
first import lets torchvision import; only its compiled ops (nms, roi_align, ...) stay missing, and
nothing in qspace uses them. Site-packages is never touched.

Call :func:`ensure_torchvision` before the first import of open_clip, transformers or torchvision.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
from pathlib import Path

import torch

# Schemas as torchvision's C++ extension declares them (torchvision/csrc/ops/nms.cpp, qnms_kernel.cpp).
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_lock = threading.Lock()
_checked = False
_shimmed = False
# Must stay referenced: a torch.library.Library removes its definitions when garbage collected.
_library: torch.library.Library | None = None


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _try_load_extension() -> None:
    """Load torchvision's compiled ops the way torchvision itself does, without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        for lib in sorted(Path(folder).glob("_C*")):
            if lib.suffix in (".so", ".pyd", ".dylib"):
                # the CUDA build on CPU torch fails here (missing libcudart etc.)
                with contextlib.suppress(OSError, ImportError, RuntimeError):
                    torch.ops.load_library(str(lib))
                return


def ensure_torchvision() -> bool:
    """Define the ``torchvision::nms``/``qnms`` schemas if torchvision's own ops cannot load.

    Idempotent and thread-safe. Returns True when the schemas were defined by this module (now or in
    an earlier call), False when torchvision needs no help or is not installed.
    """
    global _checked, _shimmed, _library
    with _lock:
        if _checked:
            return _shimmed
        _checked = True
        if importlib.util.find_spec("torchvision") is None:
            return False
        if "torchvision" in sys.modules or all(_has_op(n) for n in _SCHEMAS):
            return False  # already imported, or its ops are registered: it imports fine
        _try_load_extension()
        missing = [n for n in _SCHEMAS if not _has_op(n)]
        if not missing:
            return False
        # "FRAGMENT" adds definitions to a namespace other libraries may also extend.
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _library.define(_SCHEMAS[name])
        _shimmed = True
        return True
