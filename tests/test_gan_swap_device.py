"""`gan_swap`'s device path (issue 6): one upload, the whole swap on the model's device,
one download. On the CPU it must give the host path's frame, and read nothing back from
the device between upload and download; the new device ops match their OpenCV forms."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from torch.utils._python_dispatch import TorchDispatchMode

from engines import gpu_color, gpu_ops
from engines.alignment import Alignment, crop_bounds_in_frame, estimate_alignment, paste_back
from engines.batching import SchedulerPool
from engines.effects.base import EffectResources
from engines.effects.gan_swap import GanSwapEffect, batched, colour_match, swap_on_device
from engines.faceswap_gan.batched import BatchedSwapper
from engines.faceswap_gan.inference import FaceSwapper
from engines.faceswap_gan.model import Decoder, FaceswapConfig, FaceswapGenerator
from engines.faceswap_gan.modelfile import export_model, load_model
from engines.types import Face

HAS_CUDA = torch.cuda.is_available()
SIZE = 64


# ----- a tiny untrained model and a real crowd frame ----------------------------------------


def tiny_model(folder: Path) -> Path:
    """An untrained tiny model (arbitrary but deterministic output) whose mask leans to 1
    (decoder b's mask bias 2: sigmoid ~0.88), so the swap visibly changes the faces."""
    torch.manual_seed(0)
    config = FaceswapConfig(
        size=SIZE, width=8, max_width=32, latent_dim=32, attention_resolutions=(16,)
    )
    generator = FaceswapGenerator(config)
    decoder = generator.decoders["b"]
    assert isinstance(decoder, Decoder) and decoder.to_mask.bias is not None
    with torch.no_grad():
        decoder.to_mask.bias.fill_(2.0)
    return export_model(generator, folder / "model.pt", {})


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("gan_swap_device"))


@pytest.fixture(scope="module")
def swapper(model_path: Path) -> FaceSwapper:
    return FaceSwapper(load_model(model_path), "a_to_b")


@pytest.fixture(scope="module")
def crowd() -> tuple[np.ndarray, list[Face]]:
    """Frame 30 of the 1080p crowd video at 960x540 and its detected faces (5 or more)."""
    import av

    from engines.detection import FaceDetector

    with av.open(str(SHARED_DATA / "video.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == 30:
                full: np.ndarray = frame.to_ndarray(format="rgb24")
                break
    rgb = cv2.resize(full, (960, 540), interpolation=cv2.INTER_AREA)
    faces = Face.from_detections(FaceDetector(min_face_size=20).detect([rgb])[0])
    assert len(faces) >= 5, f"expected several faces, found {len(faces)}"
    return rgb, [replace(face, track_id=i) for i, face in enumerate(faces)]


def both_paths(
    swapper: FaceSwapper, frame: np.ndarray, faces: list[Face], colour: bool, feather: float
) -> tuple[np.ndarray, np.ndarray]:
    host = GanSwapEffect(swapper, colour, feather, device_path=False)
    device = GanSwapEffect(swapper, colour, feather, device_path=True)
    return host.apply(frame.copy(), faces), device.apply(frame.copy(), faces)


def footprint(frame: np.ndarray, faces: list[Face]) -> np.ndarray:
    """(H, W) bool: inside some face's aligned crop (where a swap may change pixels)."""
    inside = np.zeros(frame.shape[:2], bool)
    for face in faces:
        bounds = crop_bounds_in_frame(estimate_alignment(face.landmarks5, SIZE), frame.shape)
        if bounds is not None:
            inside[bounds[1] : bounds[3], bounds[0] : bounds[2]] = True
    return inside


def assert_paths_agree(
    frame: np.ndarray, host: np.ndarray, device: np.ndarray, faces: list[Face]
) -> None:
    """Same frame within rounding: outside the crops untouched by both, inside within a
    few grey levels; and the swap really changed the faces (else agreeing proves little)."""
    assert device.shape == host.shape == frame.shape and device.dtype == np.uint8
    inside = footprint(frame, faces)
    for out in (host, device):
        assert np.array_equal(out[~inside], frame[~inside]), "pixels outside the crops changed"
    changed = np.abs(host.astype(int) - frame).sum(axis=-1) > 0
    difference = np.abs(host.astype(int) - device)
    assert changed.sum() > 500 and np.abs(host.astype(int) - frame)[changed].mean() > 3
    # Measured here: mean 0.22-0.38 over the changed pixels, max 1-2 (rounding: the host
    # path rounds crops, network output, colour match and warped face to uint8).
    assert difference[changed].mean() < 0.6, f"mean {difference[changed].mean():.2f}"
    assert difference.max() <= 3, f"max {difference.max()}"


# ----- the device path equals the host path ----------------------------------------------------


@pytest.mark.parametrize(("colour", "feather"), [(True, 0.1), (False, 0.0), (True, 0.3)])
def test_device_path_gives_the_host_paths_frame(
    swapper: FaceSwapper, crowd: tuple[np.ndarray, list[Face]], colour: bool, feather: float
) -> None:
    frame, faces = crowd
    host, device = both_paths(swapper, frame, faces, colour, feather)
    assert_paths_agree(frame, host, device, faces)


def shifted(face: Face, dx: float, dy: float) -> Face:
    move = np.array([dx, dy], np.float32)
    return replace(face, box=face.box + np.tile(move, 2), landmarks5=face.landmarks5 + move)


@pytest.mark.parametrize(
    "where",
    ["left edge", "bottom edge", "top-right corner"],
)
def test_faces_at_the_image_border(
    swapper: FaceSwapper, crowd: tuple[np.ndarray, list[Face]], where: str
) -> None:
    """The frame is cut through the largest face; faces left wholly outside are skipped."""
    frame, faces = crowd
    largest = max(faces, key=lambda f: f.width * f.height)
    cx, cy = (largest.box[:2] + largest.box[2:]) / 2
    x0, y0, x1, y1 = {
        "left edge": (int(cx), 0, frame.shape[1], frame.shape[0]),
        "bottom edge": (0, 0, frame.shape[1], int(cy)),
        "top-right corner": (0, int(cy) - 8, int(cx) + 8, frame.shape[0]),
    }[where]
    cut = np.ascontiguousarray(frame[y0:y1, x0:x1])
    moved = [shifted(face, -x0, -y0) for face in faces]
    host, device = both_paths(swapper, cut, moved, True, 0.1)
    assert_paths_agree(cut, host, device, moved)


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("faces", ["none", "unusable landmarks"])
def test_no_usable_face_leaves_the_frame_unchanged(
    swapper: FaceSwapper, crowd: tuple[np.ndarray, list[Face]], device_path: bool, faces: str
) -> None:
    frame, found = crowd
    given = [] if faces == "none" else [replace(found[0], landmarks5=np.full((5, 2), np.nan))]
    effect = GanSwapEffect(swapper, True, 0.1, device_path=device_path)
    out = effect.apply(frame.copy(), given)
    assert np.array_equal(out, frame)


# ----- no host sync between upload and download ---------------------------------------------

# Dispatcher ops that read a device value on the host, or whose output size depends on
# values (so the host must wait for them): item/bool/int/float, boolean indexing, unique...
SYNCING_OPS = {
    "aten::_local_scalar_dense",
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::unique_dim",
    "aten::equal",
}
MASK_INDEXING = {"aten::index", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"}
HOST_READS = ("cpu", "numpy", "item", "tolist", "__bool__", "__int__", "__float__", "__array__")


class SyncingOps(TorchDispatchMode):
    """Records every syncing aten op run while active (in any thread of this process)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name
        if name in SYNCING_OPS or (name in MASK_INDEXING and _has_bool_index(args)):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _has_bool_index(args: Any) -> bool:
    """Whether an aten::index(_put) call indexes with a boolean mask (a hidden nonzero)."""
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every Tensor method call that brings data to the host, as "method in caller"."""
    calls: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: Any, _n: str = name, _o: Any = original) -> Any:
            calls.append(f"{_n} in {sys._getframe(1).f_code.co_name}")
            return _o(self, *args)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    yield calls


class Misbehaving:
    """The real swapper with one mid-frame host read added to its device call: the
    counting below must see it (otherwise the clean case proves nothing)."""

    def __init__(self, inner: FaceSwapper, misuse: str) -> None:
        self.inner, self.misuse = inner, misuse
        self.size, self.padding, self.device = inner.size, inner.padding, inner.device

    def __call__(self, crops: np.ndarray) -> Any:
        return self.inner(crops)

    def swap_tensor(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask = self.inner.swap_tensor(faces)
        if self.misuse == "branch" and mask.mean() > 2.0:  # a Python branch on a value
            mask = mask * 0.5
        elif self.misuse == "round trip":
            mask = torch.from_numpy(mask.cpu().numpy())
        elif self.misuse == "boolean index":
            mask = mask * (mask[mask > 0.5].numel() > 0)
        return rgb, mask


FINAL_DOWNLOAD = ["cpu in download_frame", "numpy in download_frame"]


@pytest.mark.parametrize(
    ("path", "misuse", "clean"),
    [
        ("device", "", True),
        ("device", "branch", False),
        ("device", "round trip", False),
        ("device", "boolean index", False),
        ("host", "", False),  # the host path reads the network's output back: caught
    ],
)
def test_the_device_path_reads_back_only_the_final_frame(
    swapper: FaceSwapper,
    crowd: tuple[np.ndarray, list[Face]],
    host_reads: list[str],
    path: str,
    misuse: str,
    clean: bool,
) -> None:
    frame, faces = crowd
    model = Misbehaving(swapper, misuse) if misuse else swapper
    effect = GanSwapEffect(model, True, 0.1, device_path=path == "device")
    ops = SyncingOps()
    with ops:
        out = effect.apply(frame.copy(), faces)
    reads = list(host_reads)
    found_clean = reads == FINAL_DOWNLOAD and not ops.seen
    assert found_clean == clean, f"host reads {reads}, syncing ops {ops.seen}"
    assert out.shape == frame.shape


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")
def test_no_cuda_sync_inside_swap_on_device(
    model_path: Path, swapper: FaceSwapper, crowd: tuple[np.ndarray, list[Face]]
) -> None:
    frame, faces = crowd
    cuda_swapper = FaceSwapper(load_model(model_path, "cuda"), "a_to_b")
    effect = GanSwapEffect(cuda_swapper, True, 0.1)
    assert effect.device_path  # chosen by the model's device
    alignments = [estimate_alignment(f.landmarks5, SIZE) for f in faces]
    edge = gpu_ops.to_device(effect._edge[None, None], "cuda")
    with torch.inference_mode():
        image = gpu_ops.upload_frame(frame.copy(), "cuda")
        swap_on_device(image, alignments[:1], cuda_swapper, edge, 0.67, True)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            swap_on_device(image, alignments, cuda_swapper, edge, 0.67, True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    reference = GanSwapEffect(swapper, True, 0.1, device_path=False).apply(frame.copy(), faces)
    assert np.abs(effect.apply(frame.copy(), faces).astype(int) - reference).mean() < 2.0


# ----- choosing the path, and batching device calls across sessions -----------------------


class OnCuda:
    """Says its network is on a CUDA device (never called)."""

    size, padding, device = SIZE, 0.2, torch.device("cuda", 0)

    def __call__(self, crops: np.ndarray) -> Any:
        raise AssertionError("not called")

    def swap_tensor(self, faces: torch.Tensor) -> Any:
        raise AssertionError("not called")


class HostOnly:
    size, padding = SIZE, 0.2

    def __call__(self, crops: np.ndarray) -> Any:
        raise AssertionError("not called")


@pytest.mark.parametrize(
    ("model", "forced", "chosen"),
    [("cpu", None, False), ("cuda", None, True), ("cuda", False, False), ("cpu", True, True)],
)
def test_the_path_follows_the_models_device_unless_forced(
    swapper: FaceSwapper, model: str, forced: bool | None, chosen: bool
) -> None:
    effect = GanSwapEffect(swapper if model == "cpu" else OnCuda(), True, 0.1, forced)  # type: ignore[arg-type]
    assert effect.device_path is chosen


def test_forcing_the_device_path_needs_a_device_model() -> None:
    with pytest.raises(ValueError, match="no device path"):
        GanSwapEffect(HostOnly(), True, 0.1, device_path=True)  # type: ignore[arg-type]


def test_device_calls_of_several_sessions_share_one_network_call(
    model_path: Path, swapper: FaceSwapper, crowd: tuple[np.ndarray, list[Face]]
) -> None:
    frame, faces = crowd
    pool = SchedulerPool(max_batch=3, max_wait_ms=1000)  # waits for all three sessions
    resources = EffectResources(model_path=model_path, batching=pool)
    effects = [
        GanSwapEffect(batched(swapper, resources), True, 0.1, device_path=True) for _ in range(3)
    ]
    assert all(isinstance(e.swapper, BatchedSwapper) for e in effects)
    subsets = [faces[:1], faces[1:3], faces[2:5]]
    outputs: dict[int, np.ndarray] = {}

    def session(sid: int) -> None:
        outputs[sid] = effects[sid].apply(frame.copy(), subsets[sid])

    threads = [threading.Thread(target=session, args=(sid,)) for sid in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stats = pool.stats()
    finally:
        pool.close()
    for sid, subset in enumerate(subsets):
        alone = GanSwapEffect(swapper, True, 0.1, device_path=True).apply(frame.copy(), subset)
        assert np.abs(outputs[sid].astype(int) - alone).max() <= 1
    device = stats["gan_swap.a_to_b.device"]
    assert device.items == 3 and device.largest_batch > 1 and device.failed_batches == 0
    assert stats["gan_swap.a_to_b"].items == 0  # no host round trip


# ----- the device ops the path added, against OpenCV and the host code ------------------------


@pytest.fixture(scope="module")
def small_frame(crowd: tuple[np.ndarray, list[Face]]) -> np.ndarray:
    frame, faces = crowd
    x1, y1, x2, y2 = faces[0].box.astype(int)
    return np.ascontiguousarray(frame[max(y1 - 40, 0) : y2 + 40, max(x1 - 40, 0) : x2 + 40])


def test_reflect101_warp_matches_opencv(small_frame: np.ndarray) -> None:
    matrix = cv2.getRotationMatrix2D((30.0, 40.0), 25.0, 1.7)
    matrix[:, 2] += np.array([-15.0, 20.0])  # the crop reaches past two edges of the image
    image = small_frame.astype(np.float32) / 255.0
    want = cv2.warpAffine(image, matrix, (96, 80), borderMode=cv2.BORDER_REFLECT_101)
    got = gpu_ops.warp_affine(
        torch.from_numpy(image).permute(2, 0, 1)[None],
        torch.from_numpy(matrix)[None],
        (80, 96),
        padding="reflect101",
    )
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, atol=1e-4)


def as_float(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.mark.parametrize("weight", ["soft", "too little"])
def test_rgb_colour_transfer_is_the_host_colour_match(small_frame: np.ndarray, weight: str) -> None:
    generated = cv2.resize(small_frame[:, ::-1, ::-1], (SIZE, SIZE))  # other colours
    original = cv2.resize(small_frame, (SIZE, SIZE))
    alpha: np.ndarray = np.zeros((SIZE, SIZE), np.float32)
    if weight == "soft":
        cv2.circle(alpha, (32, 32), 20, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 4.0)
    else:
        alpha[30, 30] = 0.5  # under one pixel of weight: left as it is
    want = colour_match(generated, original, alpha)
    got = gpu_color.color_transfer(
        as_float(generated),
        as_float(original),
        torch.from_numpy(alpha)[None, None],
        1e-3 / 255,
        space="rgb",
        ratio_range=(0.5, 2.0),
        min_weight=1.0,
    )
    got8 = gpu_ops.download_frame(got[0]).astype(int)
    assert np.abs(got8 - want).max() <= 1
    assert (weight == "soft") == (np.abs(want.astype(int) - generated).mean() > 2)


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_uint8_paste_back_matches_the_host_paste(small_frame: np.ndarray, angle: float) -> None:
    height, width = small_frame.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, SIZE / max(height, width))
    matrix[:, 2] += (SIZE / 2 - width / 2, SIZE / 2 - height / 2)
    alignment = Alignment(matrix=matrix, inverse=cv2.invertAffineTransform(matrix), size=SIZE)
    face = np.ascontiguousarray(255 - cv2.warpAffine(small_frame, matrix, (SIZE, SIZE)))
    alpha: np.ndarray = np.zeros((SIZE, SIZE), np.float32)
    cv2.circle(alpha, (32, 32), 24, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 3.0)
    want = paste_back(small_frame.copy(), face, alpha, alignment)
    roi = crop_bounds_in_frame(alignment, small_frame.shape)
    assert roi is not None
    image = gpu_ops.upload_frame(small_frame.copy(), "cpu")
    gpu_ops.paste_back(
        image, as_float(face), matrix[None], torch.from_numpy(alpha)[None, None], [roi]
    )
    got = gpu_ops.download_frame(image).astype(int)
    assert np.abs(got - want).max() <= 2 and np.abs(got - want).mean() < 0.1
    assert np.abs(want.astype(int) - small_frame).mean() > 5  # the paste changed the frame
