"""Geometry and colour helpers for landmark effects: regions of the 68 points, soft
masks, Delaunay triangles, piecewise-affine warps and colour transfer.

Points are float32 (x, y) pixels in dlib's 68-point order (see engines.landmarks).
Images are HxWx3 uint8 RGB; masks are HxW float32 in [0, 1]. Everything works on a
region of interest (ROI) around one face, never on the whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

JAW = np.arange(0, 17)
LEFT_BROW = np.arange(17, 22)  # as seen in the image
RIGHT_BROW = np.arange(22, 27)
NOSE = np.arange(27, 36)
LEFT_EYE = np.arange(36, 42)  # 36 outer corner, 39 inner corner, 37-38 upper lid
RIGHT_EYE = np.arange(42, 48)  # 42 inner corner, 45 outer corner, 43-44 upper lid
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)

_SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Roi:
    """An axis-aligned region of a frame: rows y0:y1, columns x0:x1 (ints, clipped)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.width <= 1 or self.height <= 1

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.x0, self.y0], np.float32)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def roi_around(points: np.ndarray, pad: float, frame_shape: tuple[int, ...]) -> Roi:
    """The bounding box of `points` (K, 2) grown by `pad` pixels, clipped to the frame."""
    height, width = frame_shape[:2]
    low = np.floor(points.min(axis=0) - pad)
    high = np.ceil(points.max(axis=0) + pad) + 1
    return Roi(
        x0=int(np.clip(low[0], 0, width)),
        y0=int(np.clip(low[1], 0, height)),
        x1=int(np.clip(high[0], 0, width)),
        y1=int(np.clip(high[1], 0, height)),
    )


def face_scale(points: np.ndarray) -> float:
    """Distance between the eye centres of 68 points, pixels: the unit every effect
    scales its sizes by."""
    return float(np.linalg.norm(points[LEFT_EYE].mean(axis=0) - points[RIGHT_EYE].mean(axis=0)))


def fill_polygons(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    """HxW float32 mask with `polygons` ((K, 2) float pixel arrays) filled, anti-aliased."""
    mask = np.zeros(shape, np.uint8)
    fixed = [np.round(p * _ONE).astype(np.int32).reshape(-1, 1, 2) for p in polygons]
    cv2.fillPoly(mask, fixed, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return mask.astype(np.float32) * (1.0 / 255.0)


def stroke(
    shape: tuple[int, int], points: np.ndarray, thickness: float, closed: bool = False
) -> np.ndarray:
    """HxW float32 mask of an anti-aliased polyline `thickness` pixels wide through (K, 2) points."""
    mask = np.zeros(shape, np.uint8)
    fixed = np.round(points * _ONE).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [fixed], closed, 255, max(round(thickness), 1), cv2.LINE_AA, _SHIFT)
    return mask.astype(np.float32) * (1.0 / 255.0)


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A float32 mask blurred by a Gaussian of `sigma` pixels (0: unchanged)."""
    if sigma <= 0.3:
        return mask
    return cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)


def inner_feather(mask: np.ndarray, width: float) -> np.ndarray:
    """A float32 mask softened inwards only: 0 on and outside its edge, rising to 1
    about `width` pixels inside (cheaper than erode + feather; blurred at reduced size)."""
    if width < 1.0:
        return mask
    height, full_width = mask.shape
    step = max(int(width / 6), 1)
    small = cv2.resize(
        mask, (max(full_width // step, 1), max(height // step, 1)), interpolation=cv2.INTER_AREA
    )
    blurred = cv2.GaussianBlur(small, (0, 0), width / 2.5 / step, borderType=cv2.BORDER_CONSTANT)
    if step > 1:
        blurred = cv2.resize(blurred, (full_width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(2.0 * blurred - 1.0, 0.0, 1.0) * (mask > 0)


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Shrink a float32 mask by about `radius` pixels."""
    size = round(radius) * 2 + 1
    if size < 3:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.erode(mask, kernel)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) float64 rotation + uniform scale + translation that best maps (K, 2)
    `src` onto `dst` in the least-squares sense (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - src_mean, dst - dst_mean
    u, singular, vt = np.linalg.svd(b.T @ a / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float((singular * np.diag(sign)).sum() / max(float((a**2).sum() / len(src)), 1e-12))
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def delaunay(points: np.ndarray) -> np.ndarray:
    """(T, 3) int32 indices of the Delaunay triangles over (K, 2) points."""
    from scipy.spatial import Delaunay

    return np.asarray(Delaunay(np.asarray(points, np.float64)).simplices, np.int32)


def triangle_affines(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 2, 3) float32 affine maps taking each destination triangle onto its source
    triangle (backward maps for cv2.remap). src, dst: (K, 2) points; triangles: (T, 3)."""
    dst_tri = dst[triangles].astype(np.float64)  # (T, 3, 2)
    src_tri = src[triangles].astype(np.float64)
    homogeneous = np.concatenate([dst_tri, np.ones((len(triangles), 3, 1))], axis=2)  # (T, 3, 3)
    # Flat triangles (e.g. a closed mouth's inner lips) cover no pixel: map them to
    # their source centroid instead of solving a singular system.
    flat = np.abs(np.linalg.det(homogeneous)) < 1e-6
    solved = np.zeros((len(triangles), 3, 2))
    solved[:, 2] = src_tri.mean(axis=1)
    if (~flat).any():  # [x, y, 1] @ solved = src
        solved[~flat] = np.linalg.solve(homogeneous[~flat], src_tri[~flat])
    return np.transpose(solved, (0, 2, 1)).astype(np.float32)


def triangle_labels(shape: tuple[int, int], dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """HxW int32 map: 1 + index of the triangle covering each pixel, 0 outside all.
    dst: (K, 2) points in the map's pixel coordinates."""
    labels = np.zeros(shape, np.int32)
    fixed = np.round(dst * _ONE).astype(np.int32)
    for index, triangle in enumerate(triangles):
        cv2.fillConvexPoly(labels, fixed[triangle], index + 1, cv2.LINE_8, _SHIFT)
    return labels


def piecewise_affine_maps(
    labels: np.ndarray, affines: np.ndarray, origin: np.ndarray, source_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (two HxW float32) for a piecewise-affine warp.

    labels: HxW from triangle_labels (0 = outside, mapped off-image to -1);
    affines: (T, 2, 3) from triangle_affines in frame coordinates;
    origin: (2,) frame position of the map's pixel (0, 0);
    source_size: (width, height) of the image the maps read: coordinates are clipped
    to it (a nearly flat triangle's map extrapolates wildly at its edge pixels).
    """
    height, width = labels.shape
    table = np.concatenate([np.zeros((1, 2, 3), np.float32), affines], axis=0)
    table[0, :, 2] = -1.0
    flat = table.reshape(len(table), 6)[labels]  # (H, W, 6)
    xs = np.arange(width, dtype=np.float32) + origin[0]
    ys = (np.arange(height, dtype=np.float32) + origin[1])[:, None]
    map_x = flat[..., 0] * xs + flat[..., 1] * ys + flat[..., 2]
    map_y = flat[..., 3] * xs + flat[..., 4] * ys + flat[..., 5]
    np.clip(map_x, -1.0, float(source_size[0]), out=map_x)
    np.clip(map_y, -1.0, float(source_size[1]), out=map_y)
    return map_x, map_y


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 CIE Lab (L 0-100, a and b about -128..127)."""
    return cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """float32 Lab -> HxWx3 uint8 RGB (clipped)."""
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def colour_lab(rgb: tuple[int, int, int]) -> np.ndarray:
    """(3,) float32 Lab of one RGB colour."""
    return to_lab(np.array([[rgb]], np.uint8))[0, 0]


def masked_stats(
    lab: np.ndarray, weight: np.ndarray, step: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted per-channel mean and standard deviation, each (3,) float32, of an
    HxWx3 image under an HxW weight (on every `step`-th row and column)."""
    lab, weight = lab[::step, ::step], weight[::step, ::step]
    total = float(weight.sum())
    if total < 1e-3:
        return np.zeros(3, np.float32), np.ones(3, np.float32)
    w = weight[..., None]
    mean = (lab * w).sum(axis=(0, 1)) / total
    var = (((lab - mean) ** 2) * w).sum(axis=(0, 1)) / total
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 1e-6)).astype(np.float32)


def masked_blur(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian blur of an HxWxC float32 image using only pixels under the
    HxW weight (so nothing outside the mask bleeds in). Computed at reduced size."""
    height, width = weight.shape
    step = max(int(sigma / 3), 1)
    small_size = (max(width // step, 1), max(height // step, 1))
    w_small = cv2.resize(weight, small_size, interpolation=cv2.INTER_AREA)
    i_small = cv2.resize(image * weight[..., None], small_size, interpolation=cv2.INTER_AREA)
    s = sigma / step
    blurred_w = cv2.GaussianBlur(w_small, (0, 0), s)
    blurred_i = cv2.GaussianBlur(i_small, (0, 0), s)
    ratio = blurred_i / np.maximum(blurred_w, 1e-4)[..., None]
    return cv2.resize(ratio, (width, height), interpolation=cv2.INTER_LINEAR)
