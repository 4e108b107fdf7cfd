"""The plain landmark face swap, as in most tutorials: the reference `swap` is measured against.

Every frame: dlib's HOG detector on the whole (grey) frame, upsampled once as in
dlib's examples, face_recognition's default and most tutorials; dlib's 68 landmarks on every
face, one cv2.warpAffine per Delaunay triangle (each on its bounding rectangle,
composited through a triangle mask) and cv2.seamlessClone (Poisson blending) over
the convex hull. Same models, same source face, no tracking, no region of interest.
Images are HxWx3 uint8 RGB.
"""

from __future__ import annotations

import cv2
import dlib
import numpy as np

from engines.face_geometry import delaunay
from engines.landmarks import dlib_model_path


def _points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


class ReferenceSwap:
    """source: RGB image with one face. upsample: dlib HOG upsampling (1, the usual
    default, finds faces from about 40 px; 0 only from about 80 px, 3-4x cheaper)."""

    def __init__(self, source: np.ndarray, upsample: int = 1) -> None:
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_path("landmarks68")))
        self.upsample = upsample
        self.source = np.ascontiguousarray(source)
        rects = self.detector(self.source, 1)
        if not rects:
            raise ValueError("no face in the reference swap's source image")
        largest = max(rects, key=lambda r: r.width() * r.height())
        self.source_points = _points(self.predictor(self.source, largest))
        self.triangles = delaunay(self.source_points)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """The frame with every face swapped (a new array)."""
        frame = np.ascontiguousarray(frame)
        output = frame
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        for rect in self.detector(grey, self.upsample):
            points = _points(self.predictor(frame, rect))
            output = self._swap_one(output, points)
        return output

    def _swap_one(self, frame: np.ndarray, points: np.ndarray) -> np.ndarray:
        warped = frame.copy()
        height, width = frame.shape[:2]
        for triangle in self.triangles:
            _warp_triangle(self.source, warped, self.source_points[triangle], points[triangle])
        hull = cv2.convexHull(points.astype(np.int32))
        mask = np.zeros((height, width), np.uint8)
        cv2.fillConvexPoly(mask, hull, 255)
        x, y, w, h = cv2.boundingRect(hull)
        if x <= 0 or y <= 0 or x + w >= width or y + h >= height:
            return frame  # seamlessClone needs the region inside the frame
        return cv2.seamlessClone(warped, frame, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)


def _warp_triangle(
    source: np.ndarray, target: np.ndarray, src: np.ndarray, dst: np.ndarray
) -> None:
    """Affine-warp triangle `src` of `source` onto triangle `dst` of `target`, in place.
    Flat triangles (a closed mouth) are skipped: their affine map is singular."""
    if min(_area(src), _area(dst)) < 0.5:
        return
    sx, sy, sw, sh = cv2.boundingRect(src.astype(np.float32))
    dx, dy, dw, dh = cv2.boundingRect(dst.astype(np.float32))
    th, tw = target.shape[:2]
    if dw <= 0 or dh <= 0 or dx < 0 or dy < 0 or dx + dw > tw or dy + dh > th:
        return
    matrix = cv2.getAffineTransform(
        (src - (sx, sy)).astype(np.float32), (dst - (dx, dy)).astype(np.float32)
    )
    patch = cv2.warpAffine(
        source[sy : sy + sh, sx : sx + sw],
        matrix,
        (dw, dh),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    mask = np.zeros((dh, dw, 3), np.float32)
    cv2.fillConvexPoly(
        mask, np.round(dst - (dx, dy)).astype(np.int32), (1.0, 1.0, 1.0), cv2.LINE_AA
    )
    region = target[dy : dy + dh, dx : dx + dw]
    region[...] = (region * (1 - mask) + patch * mask).astype(np.uint8)


def _area(triangle: np.ndarray) -> float:
    (x0, y0), (x1, y1), (x2, y2) = triangle
    return abs(float((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))) / 2
