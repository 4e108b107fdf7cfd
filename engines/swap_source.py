"""Swap sources: a face prepared once for the classic swap (engines.effects.swap).

From one RGB photo: the 68 landmarks (dlib's HOG framing, MTCNN as fallback), ten
forehead points, an RGBA crop whose alpha marks skin (hair over the face and
background inside the jaw line are not pasted), the Delaunay triangles, the face's
proportions (its symmetric shape), and how far to pull in each outline point.
Also the per-frame `identity_geometry` that gives a target those proportions.
Points are float32 (x, y) pixels in dlib's 68-point order.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from engines.errors import NoFaceFound
from engines.face_geometry import (
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    NOSE,
    RIGHT_BROW,
    RIGHT_EYE,
    delaunay,
    face_scale,
    feather,
    fill_polygons,
    roi_around,
    similarity_fit,
    to_lab,
)

logger = logging.getLogger(__name__)

# Forehead points: each brow point moved up (away from the chin) by this many eye distances.
_FOREHEAD_LIFT = 0.25
# The blended area's outline is pulled this share of the way towards the nose.
OUTLINE_PULL, _MAX_EXTRA_PULL = 0.03, 0.12
# Smallest colour spread (Lab L, a, b) the source's skin model allows.
_SKIN_SPREAD_FLOOR = np.array([10.0, 4.0, 5.0], np.float32)


@dataclass(frozen=True)
class SourceFace:
    """A prepared swap source.

    image: HxWx4 uint8 RGBA crop around the face (alpha: see skin_alpha); points:
    (78, 2) float32 landmarks in the crop (68 dlib points, then 10 forehead points);
    triangles: (T, 3) int32; shape: (68, 2) symmetric_shape of the landmarks (the
    face's proportions); pull: (27,) float32 outline_pull of the landmarks;
    pyramid: the crop at 1, 1/2, 1/4, ... of its size (pyramid[0] is `image`), so a
    small target face is sampled from a matching level instead of aliasing.
    """

    image: np.ndarray
    points: np.ndarray
    triangles: np.ndarray
    shape: np.ndarray
    pull: np.ndarray
    pyramid: tuple[np.ndarray, ...] = ()

    def level_for(self, target_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """The pyramid level and its (78, 2) points for a target face whose eye
        distance is `target_scale` pixels: the smallest level at least as large."""
        levels = self.pyramid or (self.image,)
        ratio = face_scale(self.points[:68]) / max(target_scale, 1.0)
        level = int(np.clip(np.floor(np.log2(max(ratio, 1.0))), 0, len(levels) - 1))
        return levels[level], self.points / float(2**level)


def with_forehead(points68: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks -> (78, 2): the brow points (17-26) lifted onto the forehead
    appended, so the swapped area covers the brows with room to feather."""
    brows = points68[np.concatenate([LEFT_BROW, RIGHT_BROW])]
    up = brows.mean(axis=0) - points68[8]
    up /= max(float(np.linalg.norm(up)), 1e-6)
    lifted = brows + up * _FOREHEAD_LIFT * face_scale(points68)
    return np.concatenate([points68, lifted]).astype(np.float32)


# Feature groups whose position and size carry identity; each is moved as a whole,
# so its own shape (an open mouth, a blink) stays the target's.
_FEATURES = (LEFT_BROW, RIGHT_BROW, LEFT_EYE, RIGHT_EYE, NOSE, np.arange(48, 68))
# Largest move of a feature (eye distances) and size change it may get.
_MAX_SHIFT, _MAX_RESIZE = 0.2, 1.25
# dlib point i of a face is point _MIRROR[i] of its mirror image.
_MIRROR = np.array(
    [
        *range(16, -1, -1),
        *range(26, 16, -1),
        27,
        28,
        29,
        30,
        35,
        34,
        33,
        32,
        31,
        45,
        44,
        43,
        42,
        47,
        46,
        39,
        38,
        37,
        36,
        41,
        40,
        54,
        53,
        52,
        51,
        50,
        49,
        48,
        59,
        58,
        57,
        56,
        55,
        64,
        63,
        62,
        61,
        60,
        67,
        66,
        65,
    ]
)


def symmetric_shape(points68: np.ndarray) -> np.ndarray:
    """(68, 2) float64: the face averaged with its own mirror image (fitted back onto
    it), which keeps its proportions and drops the asymmetry a turned head adds."""
    points = np.asarray(points68, np.float64)
    mirrored = (points * (-1.0, 1.0))[_MIRROR]
    fit = similarity_fit(mirrored, points)
    return (points + mirrored @ fit[:, :2].T + fit[:, 2]) / 2


def identity_geometry(
    target68: np.ndarray, source_shape: np.ndarray, strength: float
) -> np.ndarray:
    """(68, 2) target landmarks with each inner feature (brows, eyes, nose, mouth) moved
    and scaled `strength` of the way to the source's proportions, in the target's pose.

    source_shape: symmetric_shape of the source's landmarks. Proportions are compared
    on both faces' symmetric shapes, so the source's head turn is not copied; moves
    are capped so no triangle folds over. The jaw line stays where the target has it.
    """
    if strength <= 0:
        return target68
    target_shape = symmetric_shape(target68)
    fit = similarity_fit(source_shape, target_shape)
    aligned = source_shape @ fit[:, :2].T + fit[:, 2]
    limit = _MAX_SHIFT * face_scale(target68)
    result = target68.astype(np.float64).copy()
    for group in _FEATURES:
        own, wanted = target_shape[group], aligned[group]
        shift = wanted.mean(axis=0) - own.mean(axis=0)
        shift *= min(1.0, limit / max(float(np.linalg.norm(shift)), 1e-6))
        own_size = np.sqrt(((own - own.mean(axis=0)) ** 2).sum(axis=1).mean())
        wanted_size = np.sqrt(((wanted - wanted.mean(axis=0)) ** 2).sum(axis=1).mean())
        resize = float(np.clip(wanted_size / max(own_size, 1e-6), 1 / _MAX_RESIZE, _MAX_RESIZE))
        centre = result[group].mean(axis=0)
        result[group] = centre + strength * shift + (result[group] - centre) * resize**strength
    return result.astype(np.float32)


def _source_points(image: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks of the largest face in `image`; NoFaceFound when there is none.

    dlib's HOG detector frames faces the way the 68-point model expects; MTCNN is
    the fallback for turned faces HOG misses."""
    from engines.landmarks import HogFaceDetector

    boxes, _, points = HogFaceDetector(upsample=1).detect_68(image)
    if len(boxes):
        sizes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return points[int(np.argmax(sizes))]
    fallback = _mtcnn_points(image)
    if fallback is None:
        raise NoFaceFound("no face found in the swap source image: use a clear, front-facing photo")
    return fallback


def _mtcnn_points(image: np.ndarray) -> np.ndarray | None:
    try:
        from engines.detection import FaceDetector
    except ImportError:
        return None
    from engines.landmarks import LandmarkPredictor

    found = FaceDetector(device="cpu", min_face_size=20).detect([image])[0]
    if not len(found):
        return None
    sizes = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
    best = int(np.argmax(sizes))
    return LandmarkPredictor().predict(image, found.landmarks[best : best + 1])[0]


def skin_alpha(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """HxW uint8 (255 = use this source pixel): low where the source face is hidden by
    hair or shows background, judged by colour against the face's own skin (cheeks
    and nose), and always high over brows, eyes, nose and mouth (dilated)."""
    scale = face_scale(points)
    lab = to_lab(image)
    sample = (
        fill_polygons(
            image.shape[:2],
            [points[[1, 3, 48, 31]], points[[15, 13, 54, 35]], points[[28, 31, 33, 35]]],
        )
        > 0.5
    )
    pixels = lab[sample]
    median = np.median(pixels, axis=0)
    spread = np.maximum(
        2.0 * 1.4826 * np.median(np.abs(pixels - median), axis=0), _SKIN_SPREAD_FLOOR
    )
    offset = (lab - median) / spread
    offset[..., 0] = np.where(
        offset[..., 0] > 0, offset[..., 0] / 3.0, offset[..., 0]
    )  # highlights are skin
    distance = np.sqrt((offset**2).sum(axis=2))
    skin = np.clip(1.0 - (distance - 2.5) / 1.5, 0.0, 1.0)
    features = fill_polygons(
        image.shape[:2],
        [
            points[LEFT_BROW],
            points[RIGHT_BROW],
            points[LEFT_EYE],
            points[RIGHT_EYE],
            points[[27, 31, 33, 35]],
            points[48:60],
        ],
    )
    size = int(0.3 * scale) | 1
    features = cv2.dilate(features, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    alpha = feather(np.maximum(skin, features), 0.03 * scale)
    return np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)


def prepare_source(image: np.ndarray) -> SourceFace:
    """Landmarks, crop (RGBA: alpha from skin_alpha) and triangles of the face in an
    RGB uint8 source image."""
    image = np.ascontiguousarray(image)
    points = with_forehead(_source_points(image))
    roi = roi_around(points, 0.3 * face_scale(points[:68]), image.shape)
    local = points - roi.origin
    rgb = np.ascontiguousarray(image[roi.slices])
    crop = np.ascontiguousarray(np.dstack([rgb, skin_alpha(rgb, local[:68])]))
    pyramid = [crop]
    while min(pyramid[-1].shape[:2]) >= 64:
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    return SourceFace(
        image=crop,
        points=local,
        triangles=delaunay(local),
        shape=symmetric_shape(local[:68]),
        pull=outline_pull(local[:68]),
        pyramid=tuple(pyramid),
    )


_SOURCE_CACHE: OrderedDict[str, SourceFace] = OrderedDict()
_SOURCE_LOCK = threading.Lock()


def cached_source(image: np.ndarray) -> SourceFace:
    """prepare_source, remembered by image content (a few recent sources)."""
    key = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest() + str(
        image.shape
    )
    with _SOURCE_LOCK:
        if key in _SOURCE_CACHE:
            _SOURCE_CACHE.move_to_end(key)
            return _SOURCE_CACHE[key]
    source = prepare_source(image)
    with _SOURCE_LOCK:
        _SOURCE_CACHE[key] = source
        while len(_SOURCE_CACHE) > 8:
            _SOURCE_CACHE.popitem(last=False)
    return source


OUTLINE = np.concatenate([JAW, np.arange(68, 78)[::-1]])


def outline_pull(points68: np.ndarray) -> np.ndarray:
    """(27,) share by which each outline point (jaw, then forehead right to left) is
    pulled towards the nose: a little everywhere, more on the far side of a turned
    source face, where hair or background lies just inside its jaw landmarks."""
    eye_line = points68[45] - points68[36]
    eye_line /= max(float(np.linalg.norm(eye_line)), 1e-6)
    left = float((points68[30] - points68[0]) @ eye_line)
    right = float((points68[16] - points68[30]) @ eye_line)
    ratio = min(left, right) / max(left, right, 1e-6)
    extra = float(np.clip(0.3 * (1.0 - ratio), 0.0, _MAX_EXTRA_PULL))
    outline = points68[np.concatenate([JAW, np.arange(17, 27)[::-1]])]
    far_left = left < right
    side = (outline[:, 0] - points68[30, 0]) * eye_line[0] + (
        outline[:, 1] - points68[30, 1]
    ) * eye_line[1]
    on_far_side = np.clip((-side if far_left else side) / max(left, right, 1e-6) * 2.0, 0.0, 1.0)
    return (OUTLINE_PULL + extra * on_far_side).astype(np.float32)
