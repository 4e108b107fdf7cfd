"""Device-resident frame ops against their OpenCV/numpy equivalents, on a real portrait."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch

from engines import gpu_color, gpu_ops
from engines.errors import InvalidImage

HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")]
    ),
]


@pytest.fixture(scope="module")
def face(portrait: Callable[..., np.ndarray]) -> np.ndarray:
    """A real portrait, 160 px high, float32 RGB in [0, 1] (H, W, 3)."""
    return portrait("paul_rudd", 160).astype(np.float32) / 255.0


def as_batch(image: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)


def as_image(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().permute(1, 2, 0).numpy()


def rotation(
    angle: float, scale: float, centre: tuple[float, float] = (64, 80), shift=(0.0, 0.0)
) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += shift
    return matrix


@pytest.mark.parametrize("device", DEVICES)
def test_upload_and_download_round_trip(device: str, portrait: Callable[..., np.ndarray]) -> None:
    frame = portrait("kate_siegel", 200)
    on_device = gpu_ops.upload_frame(frame, device)
    assert on_device.shape == (3, *frame.shape[:2]) and on_device.dtype == torch.uint8
    assert on_device.device.type == device
    np.testing.assert_array_equal(gpu_ops.download_frame(on_device), frame)
    np.testing.assert_array_equal(gpu_ops.download_frame(gpu_ops.to_float(on_device)), frame)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        [[1, 2, 3]],
    ],
)
def test_upload_rejects_what_is_not_a_frame(bad: object) -> None:
    with pytest.raises(InvalidImage, match="HxWx3 uint8"):
        gpu_ops.upload_frame(bad, "cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("matrix", "size", "inverse_map", "padding", "border"),
    [
        (rotation(17, 1.3), (90, 100), False, "zeros", cv2.BORDER_CONSTANT),
        (rotation(-40, 2.1, shift=(5.5, -3.25)), (64, 64), False, "zeros", cv2.BORDER_CONSTANT),
        (np.array([[1.0, 0, 3.25], [0, 1, -2.5]]), (160, 128), False, "zeros", cv2.BORDER_CONSTANT),
        (np.array([[0.5, 0, 0], [0, 0.5, 0]]), (80, 64), False, "border", cv2.BORDER_REPLICATE),
        (rotation(25, 0.7), (120, 90), True, "zeros", cv2.BORDER_CONSTANT),
    ],
)
def test_warp_affine_matches_opencv(
    face: np.ndarray,
    device: str,
    matrix: np.ndarray,
    size: tuple[int, int],
    inverse_map: bool,
    padding,
    border: int,
) -> None:
    flags = cv2.INTER_LINEAR | (cv2.WARP_INVERSE_MAP if inverse_map else 0)
    want = cv2.warpAffine(face, matrix, (size[1], size[0]), flags=flags, borderMode=border)
    got = gpu_ops.warp_affine(
        as_batch(face, device),
        torch.from_numpy(matrix)[None],
        size,
        inverse_map=inverse_map,
        padding=padding,
    )
    np.testing.assert_allclose(as_image(got[0]), want, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_warps_a_batch_with_one_matrix_each(face: np.ndarray, device: str) -> None:
    matrices = np.stack([rotation(a, 1.0 + a / 100) for a in (-20, 0, 35)])
    images = as_batch(face, device).expand(3, -1, -1, -1)
    got = gpu_ops.warp_affine(images, torch.from_numpy(matrices), (64, 64))
    for index, matrix in enumerate(matrices):
        want = cv2.warpAffine(face, matrix, (64, 64), flags=cv2.INTER_LINEAR)
        np.testing.assert_allclose(as_image(got[index]), want, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("box", "size"),
    [((10, 5, 50, 45), (32, 32)), ((0, 0, 128, 160), (64, 48)), ((30, 40, 94, 136), (112, 96))],
)
def test_crop_boxes_match_opencv_resize(
    face: np.ndarray, device: str, box: tuple[int, ...], size: tuple[int, int]
) -> None:
    x1, y1, x2, y2 = box
    want = cv2.resize(face[y1:y2, x1:x2], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    got = gpu_ops.crop_boxes(
        as_batch(face, device)[0], torch.tensor([box, box], dtype=torch.float32), size
    )
    assert got.shape == (2, 3, *size)
    # At the crop's edge an upscaled crop samples the real neighbouring pixels, where
    # cv2.resize of the cut-out replicates its edge; everywhere else they agree.
    np.testing.assert_allclose(as_image(got[1])[2:-2, 2:-2], want[2:-2, 2:-2], atol=1e-4)


def test_crop_boxes_with_no_boxes(face: np.ndarray) -> None:
    assert gpu_ops.crop_boxes(as_batch(face, "cpu")[0], torch.zeros((0, 4)), (8, 8)).shape == (
        0,
        3,
        8,
        8,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_lab_matches_opencv_and_round_trips(face: np.ndarray, device: str) -> None:
    lab = gpu_color.rgb_to_lab(as_batch(face, device))
    want = cv2.cvtColor(face, cv2.COLOR_RGB2Lab)
    difference = np.abs(as_image(lab[0]) - want)
    assert (
        difference.max() < 0.5 and difference.mean() < 0.15
    )  # OpenCV interpolates its gamma curve
    np.testing.assert_allclose(as_image(gpu_color.lab_to_rgb(lab)[0]), face, atol=1e-4)


def reinhard_reference(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Colour transfer with OpenCV's Lab and numpy statistics (H, W, 3 float32 in [0, 1])."""
    source_lab, target_lab = (
        cv2.cvtColor(source, cv2.COLOR_RGB2Lab),
        cv2.cvtColor(target, cv2.COLOR_RGB2Lab),
    )
    weights = mask[..., None].astype(np.float64)

    def stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (lab * weights).sum(axis=(0, 1)) / weights.sum()
        return mean, np.sqrt((((lab - mean) ** 2) * weights).sum(axis=(0, 1)) / weights.sum())

    (source_mean, source_std), (target_mean, target_std) = stats(source_lab), stats(target_lab)
    recoloured = ((source_lab - source_mean) * (target_std / source_std) + target_mean).astype(
        np.float32
    )
    return np.clip(cv2.cvtColor(recoloured, cv2.COLOR_Lab2RGB), 0.0, 1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("masked", [False, True])
def test_color_transfer_matches_the_reference(
    portrait: Callable[..., np.ndarray], device: str, masked: bool
) -> None:
    source = cv2.resize(portrait("paul_rudd", 200), (96, 96)).astype(np.float32) / 255.0
    target = cv2.resize(portrait("angelina_jolie", 200), (96, 96)).astype(np.float32) / 255.0
    mask = np.zeros((96, 96), np.float32)
    mask[20:80, 25:70] = 1.0 if masked else 0.0
    mask = mask if masked else np.ones_like(mask)
    want = reinhard_reference(source, target, mask)
    got = gpu_color.color_transfer(
        as_batch(source, device),
        as_batch(target, device),
        torch.from_numpy(mask)[None, None].to(device),
    )
    difference = np.abs(as_image(got[0]) - want)
    assert difference.mean() < 1.5 / 255 and np.percentile(difference, 99) < 4 / 255
    # Inside the mask the result now has (up to clipping to the RGB gamut) the target's Lab mean.
    got_lab = cv2.cvtColor(as_image(got[0]), cv2.COLOR_RGB2Lab)[mask > 0].mean(axis=0)
    target_lab = cv2.cvtColor(target, cv2.COLOR_RGB2Lab)[mask > 0].mean(axis=0)
    source_lab = cv2.cvtColor(source, cv2.COLOR_RGB2Lab)[mask > 0].mean(axis=0)
    assert np.abs(got_lab - target_lab).max() < 0.25 * np.abs(source_lab - target_lab).max()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sigma", "ksize"), [(1.0, None), (2.5, None), (3.0, 9)])
def test_gaussian_blur_matches_opencv(
    face: np.ndarray, device: str, sigma: float, ksize: int | None
) -> None:
    k = ksize or 2 * int(np.ceil(3 * sigma)) + 1
    want = cv2.GaussianBlur(face, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
    got = gpu_ops.gaussian_blur(as_batch(face, device), sigma, ksize)
    np.testing.assert_allclose(as_image(got[0]), want, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("erode_px", "sigma"), [(0, 2.0), (3, 0.0), (4, 3.0)])
def test_feather_mask_is_erode_then_blur(device: str, erode_px: int, sigma: float) -> None:
    mask = np.zeros((64, 80), np.float32)
    cv2.ellipse(mask, (40, 32), (25, 20), 0, 0, 360, 1.0, -1)
    mask[0:4, :] = 1.0  # touches the border: erosion must not eat in from outside
    want = cv2.erode(mask, np.ones((2 * erode_px + 1,) * 2, np.uint8)) if erode_px else mask
    if sigma:
        k = 2 * int(np.ceil(3 * sigma)) + 1
        want = cv2.GaussianBlur(want, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
    got = gpu_ops.feather_mask(torch.from_numpy(mask)[None, None].to(device), erode_px, sigma)
    np.testing.assert_allclose(got[0, 0].cpu().numpy(), want, atol=1e-5)


def paste_reference(
    frame: np.ndarray, face: np.ndarray, matrix: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    size = (frame.shape[1], frame.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(face, matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    weight = cv2.warpAffine(alpha, matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)[
        ..., None
    ]
    return frame * (1 - weight) + warped * weight


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "matrix",
    [
        rotation(12, 0.9, centre=(64, 80), shift=(-20, -30)),  # fully inside
        rotation(-30, 1.6, centre=(10, 10), shift=(30, 40)),  # hangs over the top-left edge
    ],
)
def test_crop_then_paste_back_matches_opencv(
    face: np.ndarray, device: str, matrix: np.ndarray
) -> None:
    frame = as_batch(face, device)[0]
    crop = gpu_ops.warp_affine(frame[None], torch.from_numpy(matrix)[None], (64, 64))
    edited = 1.0 - crop  # any effect: here, a negative
    hard = np.zeros((1, 1, 64, 64), np.float32)
    hard[..., 8:56, 10:54] = 1.0
    alpha = gpu_ops.feather_mask(torch.from_numpy(hard).to(device), 2, 2.0)
    rois = gpu_ops.paste_rois(matrix[None], (64, 64), face.shape[:2])
    got = gpu_ops.paste_back(frame.clone(), edited, torch.from_numpy(matrix)[None], alpha, rois)
    want = paste_reference(face, as_image(edited[0]), matrix, alpha[0, 0].cpu().numpy())
    np.testing.assert_allclose(as_image(got), want, atol=2e-4)


def test_alpha_blend_is_a_per_pixel_mix() -> None:
    rng = np.random.default_rng(3)
    background, foreground = rng.random((2, 1, 3, 8, 8), dtype=np.float32)
    alpha = rng.random((1, 1, 8, 8), dtype=np.float32)
    got = gpu_ops.alpha_blend(
        torch.from_numpy(background), torch.from_numpy(foreground), torch.from_numpy(alpha)
    )
    np.testing.assert_allclose(
        got.numpy(), background * (1 - alpha) + foreground * alpha, atol=1e-6
    )


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")
def test_a_frame_makes_no_host_sync_between_upload_and_download(
    portrait: Callable[..., np.ndarray],
) -> None:
    frame = portrait("shea_whigham", 320)
    matrices = np.stack([rotation(10, 0.8, shift=(-10, -20)), rotation(-5, 1.1, shift=(20, 10))])
    rois = gpu_ops.paste_rois(matrices, (128, 128), frame.shape[:2])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        image = gpu_ops.to_float(gpu_ops.upload_frame(frame, "cuda"))
        device_matrices = gpu_ops.to_device(matrices.astype(np.float32), "cuda")
        crops = gpu_ops.warp_affine(image.expand(2, -1, -1, -1), device_matrices, (128, 128))
        recoloured = gpu_color.color_transfer(crops.flip(-1), crops)
        alpha = gpu_ops.feather_mask(torch.ones_like(crops[:, :1]), 6, 4.0)
        gpu_ops.paste_back(image, recoloured, device_matrices, alpha, rois)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert gpu_ops.download_frame(image).shape == frame.shape
