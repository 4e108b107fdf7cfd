"""The detector's three nets as compiled engines (TensorRT / torch.compile) for a GPU.

R-Net and O-Net see fixed-size crops (24 and 48 px) with a dynamic batch, so they
compile once for any frame size. P-Net sees the packed pyramid canvas, whose shape
depends on the frame size: it is compiled only when `frame_size` is given (a server
that knows its camera size, or a benchmark); otherwise it stays eager.
"""

from __future__ import annotations

import logging

import torch

from engines.backends import CompileBackend, compile_module
from engines.detection.detector import FaceDetector
from engines.detection.layout import plan_pyramid

logger = logging.getLogger(__name__)


def compile_detector(
    detector: FaceDetector,
    backend: CompileBackend,
    frame_size: tuple[int, int] | None = None,
    frames_per_call: int = 16,
) -> FaceDetector:
    """Replace `detector`'s nets by engines of `backend` (in place; returns it).

    frame_size: (height, width) of the frames P-Net is built for; None leaves P-Net eager.
    Call in the thread that will run the detector (CUDA graphs are per thread).
    """
    if backend.name == "eager":
        return detector
    device = detector.device
    nets: list[tuple[str, str, torch.Tensor, tuple[int, int, int]]] = [
        ("rnet", "mtcnn.rnet", _crops_example(device, 24), (16, 16, 256)),
        ("onet", "mtcnn.onet", _crops_example(device, 48), (16, 16, 64)),
    ]
    if frame_size is not None:
        height, width = frame_size
        example = _pnet_example(detector, height, width)
        nets.insert(0, ("pnet", f"mtcnn.pnet.{width}x{height}", example, (1, 1, frames_per_call)))
    for attribute, name, example, profile in nets:
        module = getattr(detector, attribute)
        engine = compile_module(module, [example], backend, name=name, dynamic_batch=profile)
        setattr(detector, attribute, engine)
    logger.info("detector nets compiled with %s: %s", backend.name, ", ".join(n[0] for n in nets))
    return detector


def _crops_example(device: torch.device, side: int) -> torch.Tensor:
    """16 R-/O-Net input crops, 0-255 float, channels-last (as the detector pads them)."""
    crops = torch.rand(16, 3, side, side, device=device).mul(255)
    return crops.contiguous(memory_format=torch.channels_last)


def _pnet_example(detector: FaceDetector, height: int, width: int) -> torch.Tensor:
    """A P-Net input as the detector makes it: the packed canvas (or its first strip on a CPU)."""
    layout = plan_pyramid(height, width, detector.min_face_size, detector.factor)
    rows = layout.canvas_height
    strip = detector.pnet_strip_rows
    if strip is not None and rows // 2 - 5 > strip:
        rows = 2 * strip + 10
    canvas = torch.rand(1, 3, rows, layout.canvas_width, device=detector.device).mul(255)
    return canvas.contiguous(memory_format=torch.channels_last)
