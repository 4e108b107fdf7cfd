"""Five-point face alignment to a canonical template, and pasting a face back.

A face is aligned by the similarity transform (rotation, uniform scale,
translation) that best maps its five MTCNN landmarks (left eye, right eye, nose,
left mouth corner, right mouth corner; left/right as seen in the image) onto a
fixed template, in the least-squares sense (Umeyama's closed form). The same
template and padding must be used when a face is cut out for training and when it
is cut out for inference, so both live here.

Images are HxWx3 uint8 RGB numpy arrays; points are float32 (x, y) pixels.
Matrices are (2, 3) float64 affine matrices acting on column vectors [x, y, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The five landmarks in a tightly framed face, as fractions of the crop side.
# Symmetric about x = 0.5; MTCNN order.
TEMPLATE_5PT = np.array(
    [
        [0.34, 0.46],  # left eye
        [0.66, 0.46],  # right eye
        [0.50, 0.64],  # nose tip
        [0.37, 0.82],  # left mouth corner
        [0.63, 0.82],  # right mouth corner
    ],
    dtype=np.float64,
)
# Extra margin around the tight face on each side, as a fraction of the tight face's
# side: 0.2 keeps forehead, chin and a little background (for the attention mask).
DEFAULT_PADDING = 0.2


@dataclass(frozen=True)
class Alignment:
    """How one face maps between a frame and its aligned square crop.

    matrix: (2, 3) float64, frame pixels -> crop pixels.
    inverse: (2, 3) float64, crop pixels -> frame pixels.
    size: side of the square crop, pixels.
    """

    matrix: np.ndarray
    inverse: np.ndarray
    size: int

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def template_points(size: int, padding: float = DEFAULT_PADDING) -> np.ndarray:
    """(5, 2) float64 template landmarks in pixels of a `size` x `size` crop."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if not 0.0 <= padding < 2.0:
        raise ValueError(f"padding must be in [0, 2), got {padding}")
    normalised = (TEMPLATE_5PT - 0.5) / (1.0 + 2.0 * padding) + 0.5
    return normalised * size


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity matrix M minimising sum |M [src_i, 1] - dst_i|^2.

    src, dst: (N, 2) float point sets, N >= 2, not all src points equal.
    Reflections are excluded (the determinant of the linear part is positive).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float((src_c**2).sum() / len(src))
    if src_var < 1e-12:
        raise ValueError("source points are all the same; no similarity transform exists")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((singular * sign).sum()) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix, as (2, 3) float64."""
    full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points; returns (N, 2) float32."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return (points @ np.asarray(matrix, np.float64)[:, :2].T + matrix[:, 2]).astype(np.float32)


def estimate_alignment(
    landmarks5: np.ndarray, size: int, padding: float = DEFAULT_PADDING
) -> Alignment:
    """The alignment of a face with (5, 2) MTCNN-order `landmarks5` (frame pixels) to a
    `size` x `size` crop of the template with `padding`."""
    landmarks5 = np.asarray(landmarks5, np.float64)
    if landmarks5.shape != (5, 2) or not np.isfinite(landmarks5).all():
        raise ValueError(
            f"landmarks5 must be five finite (x, y) points, got shape {landmarks5.shape}"
        )
    matrix = umeyama_similarity(landmarks5, template_points(size, padding))
    return Alignment(matrix=matrix, inverse=invert_affine(matrix), size=int(size))


def warp_to_crop(image: np.ndarray, alignment: Alignment) -> np.ndarray:
    """Cut the aligned face out of `image` (HxWxC uint8): (size, size, C) uint8.

    Pixels outside the frame are filled by reflecting the frame's border, so the
    network never sees hard black edges.
    """
    return cv2.warpAffine(
        image,
        alignment.matrix,
        (alignment.size, alignment.size),
        flags=cv2.INTER_AREA if alignment.scale < 1.0 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT101,
    )


def border_feather(size: int, fraction: float) -> np.ndarray:
    """(size, size) float32 weights: 1 inside, falling smoothly to 0 at the crop's edge
    over `fraction` of the side. fraction 0 gives all ones."""
    if fraction <= 0:
        return np.ones((size, size), np.float32)
    ramp_width = max(fraction * size, 1.0)
    distance = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32) + 0.5
    ramp = np.clip(distance / ramp_width, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)


def crop_bounds_in_frame(
    alignment: Alignment, frame_shape: tuple[int, ...]
) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) of the crop's footprint in the frame, clipped to it;
    None when the crop lies entirely outside."""
    size = alignment.size
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    footprint = transform_points(corners, alignment.inverse)
    height, width = frame_shape[:2]
    x0 = max(int(np.floor(footprint[:, 0].min())), 0)
    y0 = max(int(np.floor(footprint[:, 1].min())), 0)
    x1 = min(int(np.ceil(footprint[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(footprint[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste_back(
    frame: np.ndarray, crop: np.ndarray, alpha: np.ndarray, alignment: Alignment
) -> np.ndarray:
    """Blend an aligned `crop` back into `frame` in place and return the frame.

    frame: HxWx3 uint8 RGB. crop: (size, size, 3) uint8 RGB in crop coordinates.
    alpha: (size, size) float32 in [0, 1], crop coordinates (1 = use the crop);
    include any border feathering in it. Only the crop's footprint is touched.
    """
    bounds = crop_bounds_in_frame(alignment, frame.shape)
    if bounds is None:
        return frame
    x0, y0, x1, y1 = bounds
    to_roi = alignment.inverse.copy()
    to_roi[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(
        crop, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    weight = cv2.warpAffine(
        np.ascontiguousarray(alpha, np.float32),
        to_roi,
        roi_size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    blended = region + weight * (warped.astype(np.float32) - region)
    frame[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return frame
