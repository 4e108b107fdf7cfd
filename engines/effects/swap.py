"""`swap` (classic): every tracked face is replaced by an uploaded source face.

The source face is prepared once: its 68 landmarks plus ten forehead points, a crop
around it and the Delaunay triangles over those points. Each frame, per face, the
source is warped onto the target's points by one piecewise-affine `cv2.remap` over
the face's region only (each triangle's affine map computed in one vectorised solve),
so the source's eyes and mouth take the target's expression. Colours are matched
to the target in Lab: mean and contrast (smoothed per track, so they do not
flicker), then the target's low-frequency shading, so the light falls the same way.
A feathered mask blends the result in with no visible seam; the target's own mouth
opening (teeth, tongue) stays.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from engines.effects.base import Effect, EffectResources, EffectSpec, ParamSpec
from engines.errors import EngineError, InvalidParams, ModelLoadError, NoFaceFound
from engines.face_geometry import (
    INNER_LIPS,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    NOSE,
    RIGHT_BROW,
    RIGHT_EYE,
    delaunay,
    erode,
    face_scale,
    feather,
    fill_polygons,
    from_lab,
    masked_blur,
    masked_stats,
    piecewise_affine_maps,
    roi_around,
    similarity_fit,
    to_lab,
    triangle_affines,
    triangle_labels,
)
from engines.types import Face

logger = logging.getLogger(__name__)

# Forehead points: each brow point moved up (away from the chin) by this many eye distances.
_FOREHEAD_LIFT = 0.25
# The blended area's outline is pulled this share of the way towards the nose.
_OUTLINE_PULL, _MAX_EXTRA_PULL = 0.03, 0.12
# Smallest colour spread (Lab L, a, b) the source's skin model allows.
_SKIN_SPREAD_FLOOR = np.array([10.0, 4.0, 5.0], np.float32)
# Colour statistics follow a track with this much of the new frame per frame.
_COLOUR_FOLLOW = 0.3
# Limits of the contrast gain per Lab channel: lightness may follow the target's
# contrast, hue hardly (skin hue spread is small and noisy).
_GAIN_RANGE = np.array([[0.6, 1.6], [0.8, 1.25], [0.8, 1.25]], np.float32)


@dataclass(frozen=True)
class SourceFace:
    """A prepared swap source.

    image: HxWx4 uint8 RGBA crop around the face (alpha: see skin_alpha); points: (78, 2) float32 landmarks
    in the crop (68 dlib points, then 10 forehead points); triangles: (T, 3) int32;
    shape: (68, 2) symmetric_shape of the landmarks (the face's proportions);
    pull: (27,) float32 outline_pull of the landmarks.
    """

    image: np.ndarray
    points: np.ndarray
    triangles: np.ndarray
    shape: np.ndarray
    pull: np.ndarray


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
    return SourceFace(
        image=crop,
        points=local,
        triangles=delaunay(local),
        shape=symmetric_shape(local[:68]),
        pull=outline_pull(local[:68]),
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


_OUTLINE = np.concatenate([JAW, np.arange(68, 78)[::-1]])


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
    return (_OUTLINE_PULL + extra * on_far_side).astype(np.float32)


def swap_mask(labels: np.ndarray, dst: np.ndarray, scale: float, pull: np.ndarray) -> np.ndarray:
    """Feathered blend mask: the face outline pulled in towards the nose by `pull`
    (27,) (see outline_pull), softened, without the target's mouth opening.
    labels: triangle map; dst: (78, 2) ROI points."""
    centre = dst[NOSE].mean(axis=0)
    outline = dst[_OUTLINE]
    outline = centre + (outline - centre) * (1.0 - pull[:, None])
    area = fill_polygons(labels.shape, [outline]) * (labels > 0)
    radius = 0.1 * scale
    mask = feather(erode(area, radius), radius * 0.6)
    opening = feather(fill_polygons(labels.shape, [dst[INNER_LIPS]]), 0.02 * scale)
    return mask * (1.0 - np.minimum(opening * 1.5, 1.0))


@dataclass
class _ColourState:
    src_mean: np.ndarray
    src_std: np.ndarray
    dst_mean: np.ndarray
    dst_std: np.ndarray
    last_seen: int


class FaceSwap(Effect):
    """Replaces every face that has landmarks68 with `source`."""

    name = "swap"

    def __init__(self, source: SourceFace, shading: float = 1.0, identity: float = 1.0) -> None:
        self.source = source
        self.shading = shading
        self.identity = identity
        self._colour: dict[int, _ColourState] = {}
        self._frame = 0

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        self._frame += 1
        for face in faces:
            if face.landmarks68 is not None:
                self._swap_one(frame, np.asarray(face.landmarks68, np.float32), face.track_id)
        stale = [tid for tid, state in self._colour.items() if self._frame - state.last_seen > 30]
        for track_id in stale:
            del self._colour[track_id]
        return frame

    def _swap_one(self, frame: np.ndarray, landmarks: np.ndarray, track_id: int) -> None:
        scale = face_scale(landmarks)
        if scale < 4.0:
            return
        dst = with_forehead(identity_geometry(landmarks, self.source.shape, self.identity))
        roi = roi_around(dst, 2.0, frame.shape)
        if roi.empty:
            return
        local = dst - roi.origin
        labels = triangle_labels((roi.height, roi.width), local, self.source.triangles)
        affines = triangle_affines(self.source.points, local, self.source.triangles)
        map_x, map_y = piecewise_affine_maps(labels, affines, np.zeros(2, np.float32))
        warped = cv2.remap(
            self.source.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        mask = swap_mask(labels, local, scale, self.source.pull)
        target = frame[roi.slices]
        matched = self._match_colour(warped, target, mask, local, scale, track_id)
        alpha = mask[..., None]
        blended = matched.astype(np.float32) * alpha + target.astype(np.float32) * (1.0 - alpha)
        touched = mask > 1e-3
        target[touched] = np.clip(blended[touched] + 0.5, 0, 255).astype(np.uint8)

    def _match_colour(
        self,
        warped: np.ndarray,
        target: np.ndarray,
        mask: np.ndarray,
        dst: np.ndarray,
        scale: float,
        track_id: int,
    ) -> np.ndarray:
        """The warped source in the target's colours: contrast and mean from the target's
        skin, then the target's low-frequency shading. Eye whites and teeth keep their
        own hue (only their lightness follows the light)."""
        skin = _skin_weight(mask, dst, scale)
        warped_lab, target_lab = to_lab(warped), to_lab(target)
        state = self._colour_state(track_id, warped_lab, target_lab, skin)
        gain = np.clip(state.dst_std / state.src_std, _GAIN_RANGE[:, 0], _GAIN_RANGE[:, 1])
        offset = state.dst_mean - state.src_mean * gain
        matched = warped_lab * gain + offset
        if self.shading > 0:
            sigma = 0.35 * scale
            shade = masked_blur(target_lab, skin, sigma) - masked_blur(matched, skin, sigma)
            matched += self.shading * shade
        features = _feature_weight(mask.shape, dst, scale)
        matched[..., 1:] += features[..., None] * (warped_lab[..., 1:] - matched[..., 1:])
        return from_lab(matched.astype(np.float32))

    def _colour_state(
        self, track_id: int, warped_lab: np.ndarray, target_lab: np.ndarray, skin: np.ndarray
    ) -> _ColourState:
        src_mean, src_std = masked_stats(warped_lab, skin)
        dst_mean, dst_std = masked_stats(target_lab, skin)
        state = self._colour.get(track_id) if track_id >= 0 else None
        if state is None:
            state = _ColourState(src_mean, src_std, dst_mean, dst_std, self._frame)
            if track_id >= 0:
                self._colour[track_id] = state
            return state
        k = _COLOUR_FOLLOW
        state.src_mean += k * (src_mean - state.src_mean)
        state.src_std += k * (src_std - state.src_std)
        state.dst_mean += k * (dst_mean - state.dst_mean)
        state.dst_std += k * (dst_std - state.dst_std)
        state.last_seen = self._frame
        return state


def _feature_weight(shape: tuple[int, int], dst: np.ndarray, scale: float) -> np.ndarray:
    """Soft mask of the eyes and the mouth opening, whose hue must not be shifted to skin."""
    polygons = [dst[LEFT_EYE], dst[RIGHT_EYE], dst[INNER_LIPS]]
    return feather(fill_polygons(shape, polygons), 0.05 * scale)


def _skin_weight(mask: np.ndarray, dst: np.ndarray, scale: float) -> np.ndarray:
    """Where colour statistics are taken: the inner face (well inside the mask), below
    the brows and inside the jaw, so hair and background do not count."""
    inner = np.minimum(mask, fill_polygons(mask.shape, [dst[JAW]]))
    return erode(inner, 0.1 * scale)


def _build(params: Mapping[str, Any], resources: EffectResources) -> Effect:
    face_id = str(params["source_face"])
    if not face_id:
        raise InvalidParams(
            "swap needs a source face: upload a photo with POST /faces (or give --source-face) "
            "and pass its face_id as source_face"
        )
    try:
        image = resources.source_faces[face_id]
    except KeyError:
        raise InvalidParams(
            f"unknown source face {face_id!r}: upload the photo again with POST /faces"
        ) from None
    try:
        source = cached_source(np.asarray(image))
    except EngineError:
        raise
    except ValueError as error:
        raise InvalidParams(f"the source face {face_id!r} cannot be used: {error}") from error
    return FaceSwap(source, shading=float(params["shading"]), identity=float(params["identity"]))


def _unavailable(_resources: EffectResources) -> str | None:
    from engines.landmarks import dlib_model_path

    try:
        dlib_model_path("landmarks68")
    except ModelLoadError as error:
        return str(error)
    return None


SPECS = (
    EffectSpec(
        name="swap",
        description="Replace every face with an uploaded face (landmark warp, colour-matched)",
        params={
            "source_face": ParamSpec("face", "", help="face_id from POST /faces"),
            "identity": ParamSpec(
                "float",
                1.0,
                min=0.0,
                max=1.0,
                help="how far eyes, nose and mouth move to the source's proportions",
            ),
            "shading": ParamSpec(
                "float",
                1.0,
                min=0.0,
                max=1.0,
                help="how much of the target's lighting the face takes",
            ),
        },
        factory=_build,
        needs_faces=True,
        needs_landmarks68=True,
        changes_identity=True,
        unavailable_reason=_unavailable,
    ),
)
