"""The device-resident swap pipeline that `facestream bench gpu` times.

One frame: upload once -> detect (MTCNN, every Nth frame; the last faces are reused
in between) -> align on the host from landmarks (5 points) -> batched affine warp
to SxS crops on the device -> faceswap-GAN SwapNet -> Lab colour transfer ->
feathered paste back -> download once. The models are the project's own
(engines.detection.FaceDetector, engines.faceswap_gan SwapNet); the SwapNet has
random weights (speed does not depend on their values; no trained pair ships).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import gpu_color, gpu_ops
from engines.alignment import DEFAULT_PADDING, estimate_alignment
from engines.backends import compile_module, select_backend
from engines.batching import BatchScheduler
from engines.detection import FaceDetector
from engines.detection.compiled import compile_detector
from engines.effects.gan_swap import GanSwapEffect
from engines.faceswap_gan.inference import SwapResult
from engines.faceswap_gan.model import FaceswapConfig, FaceswapGenerator, SwapNet
from engines.types import Detections
from tracking import FaceTracker

logger = logging.getLogger(__name__)

SwapFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Models:
    """Detector and swap network on one device, eager or compiled with `backend`."""

    detector: FaceDetector
    swap: SwapFn
    size: int
    device: torch.device
    backend: str
    build_seconds: float = 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(
    device: torch.device,
    backend: str,
    frame_size: tuple[int, int],
    *,
    swap_size: int,
    min_face: float,
    cache_dir: Path | None,
    frames_per_call: int = 16,
) -> Models:
    """backend "eager", or a compile backend name / "auto" (compiles P-, R-, O-Net and SwapNet).
    frame_size: (height, width) of the frames the P-Net engine is built for."""
    started = time.perf_counter()
    torch.manual_seed(0)
    generator = FaceswapGenerator(FaceswapConfig(size=swap_size)).to(device).eval()
    swapnet = SwapNet(generator.encoder, generator.decoders["b"]).eval()
    detector = build_detector(
        device,
        backend,
        frame_size,
        min_face=min_face,
        cache_dir=cache_dir,
        frames_per_call=frames_per_call,
    )
    if backend == "eager":
        return Models(detector, swapnet, swap_size, device, "eager")
    chosen = select_backend(backend, device, cache_dir=cache_dir)
    faces = torch.rand(8, 3, swap_size, swap_size, device=device) * 2 - 1
    swap = compile_module(
        swapnet, [faces], chosen, name=f"faceswap.swapnet{swap_size}", dynamic_batch=(1, 8, 64)
    )
    return Models(detector, swap, swap_size, device, chosen.name, time.perf_counter() - started)


def build_detector(
    device: torch.device,
    backend: str,
    frame_size: tuple[int, int],
    *,
    min_face: float,
    cache_dir: Path | None,
    frames_per_call: int = 16,
) -> FaceDetector:
    """The project's MTCNN detector; with a compile backend its three nets are engines."""
    detector = FaceDetector(device, min_face_size=min_face)
    if backend == "eager":
        return detector
    chosen = select_backend(backend, device, cache_dir=cache_dir)
    return compile_detector(detector, chosen, frame_size, frames_per_call)


@dataclass(frozen=True)
class NetSwapper:
    """A Models swap network (eager or compiled) as the `gan_swap` effect's swapper:
    swap_tensor on device tensors (the device path), __call__ on host crops (the host path)."""

    run: SwapFn
    size: int
    device: torch.device
    padding: float = DEFAULT_PADDING

    @torch.inference_mode()
    def swap_tensor(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, S, S) float32 RGB in [-1, 1] -> rgb, mask float32, on the device."""
        rgb, mask = self.run(faces)
        return rgb.float(), mask.float()

    def __call__(self, crops: np.ndarray) -> SwapResult:
        """(N, S, S, 3) uint8 RGB host crops -> host SwapResult, as FaceSwapper does."""
        batch = gpu_ops.to_device(np.ascontiguousarray(crops), self.device).permute(0, 3, 1, 2)
        rgb, mask = self.swap_tensor(batch.float() / 127.5 - 1.0)
        rgb8 = ((rgb.clamp(-1, 1) + 1.0) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
        return SwapResult(rgb=rgb8.cpu().numpy(), mask=mask[:, 0].cpu().numpy())


def gan_swap_effect(models: Models, device_path: bool) -> GanSwapEffect:
    """The real `gan_swap` effect (default colour match and feather) on `models`' swap
    network, on the device path (one upload, one download) or the host path."""
    swapper = NetSwapper(models.swap, models.size, models.device)
    return GanSwapEffect(swapper, colour=True, feather=0.1, device_path=device_path)


# --- one frame ---------------------------------------------------------------------------


Detect = Callable[[torch.Tensor], Detections]
Follow = Callable[[torch.Tensor, np.ndarray], Detections]


@dataclass
class StreamState:
    """Per-stream face state, with the face stage's policy (stream/face_stage.py): full
    detection every `detect_every` frames or when no track is live; in between, R-/O-Net
    only around each track's predicted box; every result feeds one Kalman FaceTracker."""

    detect_every: int
    tracker: FaceTracker = field(default_factory=FaceTracker)
    since_full: int | None = None

    def landmarks(self, frame: torch.Tensor, detect: Detect, follow: Follow) -> np.ndarray:
        """(N, 5, 2) smoothed landmarks of the tracked faces in `frame` ((H, W, 3) uint8)."""
        live = self.tracker.predict()
        due = self.since_full is None or self.since_full + 1 >= self.detect_every or not live
        if due:
            found, self.since_full = detect(frame), 0
        else:
            found = follow(frame, np.stack([t.box for t in live]))
            self.since_full = (self.since_full or 0) + 1
        tracks = self.tracker.update(found.boxes, found.scores, found.landmarks)
        return (
            np.stack([t.landmarks for t in tracks]) if tracks else np.zeros((0, 5, 2), np.float32)
        )


def align(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(N, 2, 3) float32 frame -> crop matrices from (N, 5, 2) landmarks (host)."""
    if len(landmarks) == 0:
        return np.zeros((0, 2, 3), np.float32)
    return np.stack([estimate_alignment(marks, size).matrix for marks in landmarks]).astype(
        np.float32
    )


def swap_faces(
    models: Models,
    image: torch.Tensor,
    matrices: np.ndarray,
    swap: SwapFn,
    timings: dict[str, float] | None = None,
) -> None:
    """Warp, swap, recolour and paste back every face of `image` ((3, H, W) float), in place."""
    count, size = len(matrices), models.size
    if count == 0:
        return
    clock = _Clock(models.device, timings)
    device_matrices = gpu_ops.to_device(matrices, models.device)
    crops = gpu_ops.warp_affine(
        image.expand(count, -1, -1, -1), device_matrices, (size, size), padding="border"
    )
    clock.lap("align")
    rgb, mask = swap(crops * 2.0 - 1.0)
    clock.lap("swap")
    recoloured = gpu_color.color_transfer((rgb + 1.0) * 0.5, crops, mask)
    clock.lap("colour")
    alpha = gpu_ops.feather_mask(mask, erode_px=max(1, size // 32), blur_sigma=size / 24)
    rois = gpu_ops.paste_rois(matrices, (size, size), (int(image.shape[1]), int(image.shape[2])))
    gpu_ops.paste_back(image, recoloured, device_matrices, alpha, rois)
    clock.lap("blend")


def process_frame(
    models: Models,
    frame: np.ndarray,
    state: StreamState,
    *,
    engines: tuple[Detect, Follow, SwapFn] | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """One HxWx3 uint8 RGB frame through the whole pipeline; returns the output frame.

    engines: how to run full detection, region follow and swap (default: directly; the
    session simulation passes its batching schedulers). timings: filled with seconds
    per stage when given (the device is synchronised after each stage to attribute time).
    """
    detect, follow, swap = engines or (
        lambda f: models.detector.detect(f)[0],
        models.detector.detect_in_regions,
        models.swap,
    )
    clock = _Clock(models.device, timings)
    frame_hwc = gpu_ops.to_device(np.ascontiguousarray(frame), models.device)
    image = gpu_ops.to_float(frame_hwc.permute(2, 0, 1))
    clock.lap("upload")
    landmarks = state.landmarks(frame_hwc, detect, follow)
    clock.lap("detect+track")
    swap_faces(models, image, align(landmarks, models.size), swap, timings)
    clock.restart()
    out = gpu_ops.download_frame(image)
    clock.lap("download")
    return out


class _Clock:
    """Stage timer: a no-op unless a timings dict is given."""

    def __init__(self, device: torch.device, timings: dict[str, float] | None) -> None:
        self.device, self.timings = device, timings
        self.started = time.perf_counter()

    def restart(self) -> None:
        self.started = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is None:
            return
        sync(self.device)
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.started
        self.started = now


# --- many sessions -----------------------------------------------------------------------


@dataclass(frozen=True)
class SessionResult:
    sessions: int
    latencies: list[float]
    frames_shown: int
    frames_dropped: int
    seconds: float
    mean_swap_batch: float
    mean_detect_batch: float


def simulate_sessions(
    models: Models,
    clip: Sequence[np.ndarray],
    *,
    sessions: int,
    seconds: float,
    fps: float,
    detect_every: int,
    max_wait_ms: float,
) -> SessionResult:
    """`sessions` cameras at `fps`, each served latest-frame-wins by its own thread;
    detection and swap calls of all sessions go through shared batching schedulers.
    Added latency = frame ready to be shown - frame arrived."""

    def run_detect(requests: Sequence[tuple[torch.Tensor, np.ndarray | None]]) -> list[Detections]:
        if requests[0][1] is None:  # full detections: one batched call for every session's frame
            return models.detector.detect(torch.stack([frame for frame, _ in requests]))
        empty = np.zeros((0, 4), np.float32)
        return [
            models.detector.detect_in_regions(f, empty if b is None else b) for f, b in requests
        ]

    def run_swap(batches: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rgb, mask = models.swap(torch.cat(list(batches)))
        counts = [int(b.shape[0]) for b in batches]
        return list(zip(rgb.split(counts), mask.split(counts), strict=True))

    detector = BatchScheduler(
        run_detect,
        max_batch=max(1, sessions),
        max_wait_ms=max_wait_ms,
        group_key=lambda request: (request[1] is None, tuple(request[0].shape)),
        name="detect",
    )
    swapper = BatchScheduler(
        run_swap, max_batch=max(1, sessions), max_wait_ms=max_wait_ms, name="swap"
    )
    schedulers = (detector, swapper)
    # A short untimed run first: compiled engines record their CUDA graphs per thread, and
    # the schedulers' threads must do that before the measured run, as a server does at start.
    _run_sessions(models, clip, sessions, min(2.0, seconds), fps, detect_every, schedulers)
    before = swapper.stats, detector.stats
    records = _run_sessions(models, clip, sessions, seconds, fps, detect_every, schedulers)
    detector.close()
    swapper.close()
    swap_batches = swapper.stats.batches - before[0].batches
    detect_batches = detector.stats.batches - before[1].batches
    return SessionResult(
        sessions=sessions,
        latencies=[value for lat, _, _ in records for value in lat],
        frames_shown=sum(r[1] for r in records),
        frames_dropped=sum(r[2] for r in records),
        seconds=seconds,
        mean_swap_batch=(swapper.stats.items - before[0].items) / max(1, swap_batches),
        mean_detect_batch=(detector.stats.items - before[1].items) / max(1, detect_batches),
    )


def _run_sessions(
    models: Models,
    clip: Sequence[np.ndarray],
    sessions: int,
    seconds: float,
    fps: float,
    detect_every: int,
    schedulers: tuple[BatchScheduler[Any, Any], BatchScheduler[Any, Any]],
) -> list[tuple[list[float], int, int]]:
    """Run `sessions` camera threads for `seconds`; (latencies, shown, dropped) per session."""
    records: list[tuple[list[float], int, int]] = []
    start = time.perf_counter() + 0.05
    threads = [
        threading.Thread(
            target=_run_session,
            args=(
                models,
                clip,
                s,
                start + s / (fps * sessions),
                seconds,
                fps,
                detect_every,
                schedulers,
                records,
            ),
            name=f"session-{s}",
        )
        for s in range(sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def _run_session(
    models: Models,
    clip: Sequence[np.ndarray],
    sid: int,
    start: float,
    seconds: float,
    fps: float,
    detect_every: int,
    schedulers: tuple[BatchScheduler[Any, Any], BatchScheduler[Any, Any]],
    records: list[tuple[list[float], int, int]],
) -> None:
    """One simulated camera: frame k arrives at start + k / fps; the worker always takes
    the newest arrived frame (older unprocessed ones are dropped, as the live track does)."""
    detector, swapper = schedulers
    state = StreamState(detect_every)
    latencies: list[float] = []
    shown = dropped = 0
    last = -1

    def detect(frame: torch.Tensor) -> Detections:
        return detector.submit((frame, None), session=sid).result()

    def follow(frame: torch.Tensor, boxes: np.ndarray) -> Detections:
        return detector.submit((frame, boxes), session=sid).result()

    def swap(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return swapper.submit(faces, session=sid).result()

    while (now := time.perf_counter()) < start + seconds:
        newest = int((now - start) * fps) if now >= start else -1
        if newest <= last:
            time.sleep(max(0.0, start + (last + 1) / fps - now))
            continue
        dropped += newest - last - 1
        process_frame(models, clip[newest % len(clip)], state, engines=(detect, follow, swap))
        latencies.append(time.perf_counter() - (start + newest / fps))
        shown += 1
        last = newest
    records.append((latencies, shown, dropped))
