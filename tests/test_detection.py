"""FaceDetector: equivalence with facenet-pytorch's MTCNN, its parts, its contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PORTRAITS, load_rgb, portrait_path
from detection_helpers import reference_detect, reference_mtcnn, video_frames

from engines.detection import FaceDetector
from engines.detection.boxes import nms_min_per_group
from engines.detection.layout import plan_pyramid, pyramid_scales
from engines.detection.nets import load_nets
from engines.detection.pyramid import area_resize, pool_crops, row_prefix_sums
from engines.errors import InvalidImage
from engines.types import Detections
from tracking.association import assign, iou_matrix

VIDEO_FRAMES = (0, 52, 104)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_face_size=20, resample="exact")


@pytest.fixture(scope="module")
def reference() -> object:
    return reference_mtcnn(min_face_size=20)


@pytest.fixture(scope="module")
def multiface(shared_data: Path, detector: FaceDetector) -> tuple[np.ndarray, Detections]:
    image = load_rgb(shared_data / "multiface.jpg")
    return image, detector.detect([image])[0]


@pytest.fixture(scope="module")
def frames_720p() -> dict[int, np.ndarray]:
    return dict(zip(VIDEO_FRAMES, video_frames(list(VIDEO_FRAMES), (1280, 720)), strict=True))


def _case_image(case: str, shared_data: Path, frames: dict[int, np.ndarray]) -> np.ndarray:
    if case == "multiface":
        return load_rgb(shared_data / "multiface.jpg")
    if case.startswith("video"):
        return frames[int(case.removeprefix("video"))]
    return load_rgb(shared_data / "faces" / f"{case}.jpg", max_side=800)


@pytest.mark.parametrize("case", ["multiface", *PORTRAITS, *(f"video{i}" for i in VIDEO_FRAMES)])
def test_finds_what_the_reference_finds(
    case: str,
    shared_data: Path,
    frames_720p: dict[int, np.ndarray],
    detector: FaceDetector,
    reference: object,
) -> None:
    image = _case_image(case, shared_data, frames_720p)
    ref_boxes, _ = reference_detect(reference, image)
    ours = detector.detect([image])[0]
    assert len(ref_boxes) > 0, "every test image holds faces the reference finds"
    overlap = iou_matrix(ref_boxes, ours.boxes)
    pairs = assign(-overlap, overlap > 0).pairs
    matched = np.zeros(len(ref_boxes))
    matched[pairs[:, 0]] = overlap[pairs[:, 0], pairs[:, 1]]
    assert matched.min() >= 0.9, f"reference faces matched at IoU {np.round(matched, 3)}"
    assert matched.mean() >= 0.95
    extra = np.setdiff1d(np.arange(len(ours)), pairs[matched[pairs[:, 0]] >= 0.9, 1])
    assert not (ours.scores[extra] > 0.95).any(), f"extra faces scored {ours.scores[extra]}"


def test_fast_resampling_finds_the_references_faces(
    shared_data: Path, frames_720p: dict[int, np.ndarray], detector: FaceDetector
) -> None:
    """Host (OpenCV) resampling finds every confident face the exact pyramid finds;
    only borderline ones (score < 0.9 there) may come and go."""
    fast = FaceDetector(min_face_size=20, resample="fast")
    assert FaceDetector(min_face_size=20).resample == "fast", "the default on a CPU"
    matched, scores = [], []
    for case in ["multiface", *PORTRAITS, *(f"video{i}" for i in VIDEO_FRAMES)]:
        image = _case_image(case, shared_data, frames_720p)
        want, got = detector.detect([image])[0], fast.detect([image])[0]
        overlap = iou_matrix(want.boxes, got.boxes) if len(got) else np.zeros((len(want), 1))
        matched += list(overlap.max(axis=1))
        scores += list(want.scores)
    found, confident = np.array(matched) >= 0.5, np.array(scores) >= 0.9
    assert found[confident].all(), f"confident faces matched at {np.round(matched, 2)}"
    assert found.mean() >= 0.9
    assert np.array(matched)[found].mean() >= 0.85, "boxes agree"


def test_fast_resampling_is_for_cpus_only() -> None:
    with pytest.raises(ValueError, match="CPU"):
        FaceDetector(device="cuda", resample="fast")
    with pytest.raises(ValueError, match="resample"):
        FaceDetector(resample="bilinear")


def test_results_follow_the_contract(shared_data: Path, detector: FaceDetector) -> None:
    image = load_rgb(shared_data / "multiface.jpg")
    blank = np.full((240, 320, 3), 128, np.uint8)
    tiny = np.zeros((15, 15, 3), np.uint8)
    with_faces, without, too_small = detector.detect([image, blank, tiny])
    assert isinstance(with_faces, Detections) and len(with_faces) == 6
    assert with_faces.boxes.dtype == np.float32 and with_faces.landmarks.shape == (6, 5, 2)
    assert (np.diff(with_faces.scores) <= 0).all(), "sorted by decreasing score"
    inside = (with_faces.landmarks >= with_faces.boxes[:, None, :2] - 5) & (
        with_faces.landmarks <= with_faces.boxes[:, None, 2:] + 5
    )
    assert inside.all(), "landmarks lie in their box"
    for empty in (without, too_small):
        assert (
            len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.landmarks.shape == (0, 5, 2)
        )


def test_batches_of_mixed_sizes_and_tensors_give_the_same_faces(
    shared_data: Path, detector: FaceDetector
) -> None:
    a = load_rgb(shared_data / "faces" / "paul_rudd.jpg", max_side=400)
    b = load_rgb(shared_data / "multiface.jpg", max_side=600)
    alone = [detector.detect([a])[0], detector.detect([b])[0]]
    mixed = detector.detect([a, b, a])
    stacked = detector.detect(torch.from_numpy(np.stack([a, a])))
    for got, want in [
        (mixed[0], alone[0]),
        (mixed[1], alone[1]),
        (mixed[2], alone[0]),
        (stacked[1], alone[0]),
    ]:
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.landmarks, want.landmarks, atol=1e-3)


def test_static_shapes_change_nothing(shared_data: Path, detector: FaceDetector) -> None:
    image = load_rgb(shared_data / "multiface.jpg", max_side=600)
    padded = FaceDetector(min_face_size=20, static_shapes=True, resample="exact")
    np.testing.assert_allclose(
        padded.detect([image])[0].boxes, detector.detect([image])[0].boxes, atol=1e-3
    )


class _ShapeRecorder(torch.nn.Module):
    """Stands for a compiled P-Net: records the input shapes it is given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.shapes: set[tuple[int, ...]] = set()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.shapes.add(tuple(x.shape))
        return self.net(x)


def test_a_replaced_pnet_sees_one_strip_shape(multiface: tuple[np.ndarray, Detections]) -> None:
    image, want = multiface
    compiled_like = FaceDetector(min_face_size=20, resample="exact")
    compiled_like.pnet_strip_rows = 64
    recorder = _ShapeRecorder(compiled_like.pnet)
    compiled_like.pnet = recorder  # type: ignore[assignment]
    got = compiled_like.detect([image])[0]
    assert len(recorder.shapes) == 1
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10), np.uint8), "HxWx3"),
        (np.zeros((10, 10, 4), np.uint8), "HxWx3"),
        ("frame.png", "numpy array"),
    ],
)
def test_bad_images_are_refused(image: object, message: str, detector: FaceDetector) -> None:
    with pytest.raises(InvalidImage, match=message):
        detector.detect([image])  # type: ignore[list-item]


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.15, 1.0), (-0.1, 1.2), (0.1, 0.85)])
def test_region_refinement_finds_a_nearby_face(
    shift: float, scale: float, multiface: tuple[np.ndarray, Detections], detector: FaceDetector
) -> None:
    image, faces = multiface
    size = faces.boxes[:, 2:] - faces.boxes[:, :2]
    centre = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2 + shift * size
    guess = np.concatenate([centre - scale * size / 2, centre + scale * size / 2], axis=1)
    found = detector.detect_in_regions(image, guess)
    overlap = iou_matrix(faces.boxes, found.boxes)
    assert len(found) == len(faces)
    assert overlap.max(axis=1).min() >= 0.7


def test_region_refinement_finds_nothing_where_there_is_no_face(
    multiface: tuple[np.ndarray, Detections], detector: FaceDetector
) -> None:
    image, _ = multiface
    assert len(detector.detect_in_regions(image, np.array([[5.0, 5.0, 60.0, 60.0]]))) == 0
    assert len(detector.detect_in_regions(image, np.zeros((0, 4)))) == 0


# -- the parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "min_face"),
    [(1080, 1920, 20), (480, 640, 40), (630, 1200, 20), (100, 60, 20)],
)
def test_pyramid_levels_are_the_references_and_do_not_overlap(
    height: int, width: int, min_face: int
) -> None:
    layout = plan_pyramid(height, width, min_face, 0.709)
    assert [lv.scale for lv in layout.levels] == pyramid_scales(height, width, min_face, 0.709)
    occupied = np.zeros((layout.canvas_height, layout.canvas_width), int)
    for level in layout.levels:
        slot = level.slot
        assert slot.top % 2 == 0 and slot.left % 2 == 0
        assert (level.height, level.width) == (
            int(height * level.scale + 1),
            int(width * level.scale + 1),
        )
        occupied[slot.top : slot.top + slot.height, slot.left : slot.left + slot.width] += 1
    assert occupied.max() == 1


@pytest.mark.parametrize(
    ("roi", "size"),
    [
        ((10, 12, 40, 42), 24),
        ((0, 0, 17, 17), 24),
        ((5, 3, 200, 180), 24),
        ((33, 21, 81, 97), 48),
        ((0, 100, 300, 299), 48),
    ],
)
def test_crops_equal_the_references_area_resize(roi: tuple[int, int, int, int], size: int) -> None:
    generator = torch.Generator().manual_seed(sum(roi))
    image = torch.randint(0, 256, (1, 300, 320, 3), dtype=torch.uint8, generator=generator)
    planes = image.permute(0, 3, 1, 2).float()
    x1, y1, x2, y2 = roi
    want = F.interpolate(planes[:, :, y1:y2, x1:x2], size=(size, size), mode="area")
    got = pool_crops(
        row_prefix_sums(image),
        torch.tensor([roi], dtype=torch.float32),
        torch.zeros(1, dtype=torch.int64),
        size,
    )
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize(("height", "width"), [(100, 160), (37, 53), (10, 12)])
def test_area_resize_equals_the_references(height: int, width: int) -> None:
    image = torch.randint(
        0, 256, (1, 211, 317, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    want = F.interpolate(image.permute(0, 3, 1, 2).float(), size=(height, width), mode="area")
    got = area_resize(row_prefix_sums(image), height, width).transpose(0, 1)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-5)


def test_nets_equal_the_references() -> None:
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    ours = load_nets(torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    for mine, theirs, shape in zip(
        ours,
        (PNet(), RNet(), ONet()),
        [(2, 3, 64, 90), (5, 3, 24, 24), (5, 3, 48, 48)],
        strict=True,
    ):
        pixels = torch.rand(shape, generator=generator) * 255
        with torch.inference_mode():
            got = mine(pixels.contiguous(memory_format=torch.channels_last))
            want = theirs.eval()((pixels - 127.5) * 0.0078125)
        torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[-1], want[-1][:, 1], atol=1e-4, rtol=1e-4)


def test_min_nms_equals_the_references() -> None:
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy

    generator = torch.Generator().manual_seed(1)
    corner = torch.rand(60, 2, generator=generator) * 200
    boxes = torch.cat([corner, corner + 20 + torch.rand(60, 2, generator=generator) * 60], dim=1)
    scores = torch.rand(60, generator=generator)
    groups = torch.randint(0, 2, (60,), generator=generator)
    want = batched_nms_numpy(boxes, scores, groups, 0.7, "Min")
    got = nms_min_per_group(boxes, scores, groups, 0.7)
    assert sorted(got.tolist()) == sorted(want.tolist())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_finds_the_same_faces(multiface: tuple[np.ndarray, Detections]) -> None:
    image, cpu = multiface
    on_gpu = FaceDetector(device="cuda", min_face_size=20)
    gpu = on_gpu.detect(torch.from_numpy(image).cuda())[0]
    overlap = iou_matrix(cpu.boxes, gpu.boxes)
    assert len(gpu) == len(cpu) and overlap.max(axis=1).min() >= 0.95


def test_cell_maps_of_many_photo_sizes_stay_bounded() -> None:
    """One cell map per image size: uploads of ever new sizes must not grow the
    detector's memory without end (the least recently used go); a size still in use
    keeps its map, and a dropped one is rebuilt to the same faces."""
    from engines.detection import detector as detector_module

    detector = FaceDetector(device="cpu")
    kept = detector_module._CELL_MAPS_KEPT
    portrait = load_rgb(portrait_path(PORTRAITS[0]), 200)
    first = detector.detect([portrait])[0]
    assert len(first.boxes) == 1
    for extra in range(kept + 8):
        detector.detect([np.zeros((120 + extra, 160, 3), np.uint8)])
        if extra % 8 == 0:
            detector.detect([np.zeros((96, 96, 3), np.uint8)])  # in use all along
    assert len(detector._cells) == kept
    assert plan_pyramid(96, 96, detector.min_face_size, detector.factor) in detector._cells
    again = detector.detect([portrait])[0]  # its map was dropped: built again
    np.testing.assert_allclose(again.boxes, first.boxes, atol=1e-3)


@pytest.mark.parametrize("count", [300, 1500])  # one shifted call; each group on its own
def test_nms_equals_torchvisions(count: int) -> None:
    from torchvision.ops import batched_nms as reference_nms

    from engines.detection.nms import batched_nms

    generator = torch.Generator().manual_seed(count)
    corners = torch.rand(count, 2, generator=generator) * 600
    sizes = 8 + torch.rand(count, 2, generator=generator) * 60
    boxes = torch.cat([corners, corners + sizes], dim=1)
    scores = torch.rand(count, generator=generator)
    groups = torch.randint(0, 6, (count,), generator=generator)
    kept = batched_nms(boxes, scores, groups, 0.5)
    assert 0 < len(kept) < count
    assert torch.equal(kept, reference_nms(boxes, scores, groups, 0.5))


def test_a_face_stage_starts_without_torchs_compiler() -> None:
    """Importing torchvision's package pulls in dynamo, inductor and sympy (~1.1-1.5 s
    of every process start on 2 cores); a CPU face stage needs only its NMS kernel."""
    import subprocess
    import sys

    script = (
        "import sys, tempfile\n"
        "from stream.models import SharedModels\n"
        "from stream.settings import Settings\n"
        "settings = Settings(data_dir=tempfile.mkdtemp(), warm_up=False)\n"
        "models = SharedModels(settings, 'cpu')\n"
        "models.stage_factories().face()\n"
        "models.detector.detect([__import__('numpy').zeros((120, 160, 3), 'uint8')])\n"
        "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
