"""IoU non-maximum suppression per group, with torchvision's compiled kernel.

The kernel is loaded from torchvision's extension library without importing the
torchvision package: that import pulls in torch's compiler stack (dynamo, inductor,
sympy) and cost ~1.1-1.5 s of every process start on a 2-core CPU, against ~2 ms for
the library alone. Results are torchvision's `batched_nms`: the same kernel, and the
same choice between suppressing each group on its own (many boxes on a CPU) and
shifting the groups apart into one call.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import torch

from engines.errors import ModelLoadError

# Above this many box coordinates torchvision suppresses each group separately (the
# shifted coordinates lose float32 precision); below it, one call on shifted boxes.
_SEPARATE_ABOVE = {"cpu": 4000}
_SEPARATE_ABOVE_DEFAULT = 20000

_load_lock = threading.Lock()
_loaded = False


def _load_kernels() -> None:
    """Register torchvision's operators (torch.ops.torchvision.*), once per process."""
    global _loaded
    with _load_lock:
        if _loaded or hasattr(torch.ops.torchvision, "nms"):
            _loaded = True
            return
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                "torchvision is not installed; run: pip install torchvision==0.29.1"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
        libraries = sorted(folder.glob("_C_stable.*")) + sorted(folder.glob("_C.*"))
        libraries = [p for p in libraries if p.suffix in (".so", ".pyd", ".dylib")]
        if not libraries:
            raise ModelLoadError(f"torchvision's operator library is missing from {folder}")
        torch.ops.load_library(str(libraries[0]))
        _loaded = True


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices of `boxes` ((N, 4) x1, y1, x2, y2) kept by greedy IoU suppression, by
    decreasing score."""
    _load_kernels()
    kept: torch.Tensor = torch.ops.torchvision.nms(boxes, scores, float(iou))
    return kept


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float
) -> torch.Tensor:
    """Indices kept by IoU suppression within each group (boxes of different groups
    never suppress each other), by decreasing score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    limit = _SEPARATE_ABOVE.get(boxes.device.type, _SEPARATE_ABOVE_DEFAULT)
    if boxes.numel() > limit:
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for group in torch.unique(groups):
            members = torch.where(groups == group)[0]
            keep[members[nms(boxes[members], scores[members], iou)]] = True
        kept = torch.where(keep)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    # Shift each group's boxes past every other group's, then one call.
    shift = groups.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + shift[:, None], scores, iou)
