"""`swap` (classic): every tracked face is replaced by an uploaded source face.

The source is prepared once (engines.swap_source): 68 landmarks plus ten forehead
points, an RGBA crop whose alpha keeps hair and background out, the Delaunay
triangles. Each frame, per face, the target's eyes, brows, nose and mouth are moved
to the source's proportions (each as a whole, so the target's expression stays),
and the source is warped onto those points by one piecewise-affine `cv2.remap` over
the face's region only (all triangles' affine maps in one vectorised solve). Colours
are matched to the target in Lab: mean and contrast (smoothed per track, so they
do not flicker), then the target's low-frequency shading, so the light falls the
same way; eyes and teeth keep their hue. A feathered mask blends the result in
with no visible seam; the target's own mouth opening (teeth, tongue) stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from engines.effects.base import REMOTE_MODEL_ADVICE, Effect, EffectResources, EffectSpec, ParamSpec
from engines.errors import EngineError, InvalidParams, ModelLoadError, SourceWithdrawn
from engines.face_geometry import (
    INNER_LIPS,
    JAW,
    LEFT_EYE,
    NOSE,
    RIGHT_EYE,
    face_scale,
    feather,
    fill_polygons,
    from_lab,
    inner_feather,
    masked_blur,
    masked_stats,
    piecewise_affine_maps,
    roi_around,
    to_lab,
    triangle_affines,
    triangle_labels,
)
from engines.swap_source import OUTLINE, SourceFace, cached_source, identity_geometry, with_forehead
from engines.types import Face

logger = logging.getLogger(__name__)

_COLOUR_FOLLOW = 0.3
# Limits of the contrast gain per Lab channel: lightness may follow the target's
# contrast, hue hardly (skin hue spread is small and noisy).
_GAIN_RANGE = np.array([[0.6, 1.6], [0.8, 1.25], [0.8, 1.25]], np.float32)


def swap_mask(labels: np.ndarray, dst: np.ndarray, scale: float, pull: np.ndarray) -> np.ndarray:
    """Feathered blend mask: the face outline pulled in towards the nose by `pull`
    (27,) (see outline_pull), softened, without the target's mouth opening.
    labels: triangle map; dst: (78, 2) ROI points."""
    centre = dst[NOSE].mean(axis=0)
    outline = dst[OUTLINE]
    outline = centre + (outline - centre) * (1.0 - pull[:, None])
    area = fill_polygons(labels.shape, [outline]) * (labels > 0)
    mask = inner_feather(area, 0.16 * scale)
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

    def __init__(
        self,
        source: SourceFace,
        shading: float = 1.0,
        identity: float = 1.0,
        still_allowed: Callable[[], bool] | None = None,
    ) -> None:
        """still_allowed: whether the source may still be used (False once its upload is
        deleted); asked every frame."""
        self.source = source
        self.shading = shading
        self.identity = identity
        self._still_allowed = still_allowed
        self._withdrawn = False
        self._colour: dict[int, _ColourState] = {}
        self._frame = 0

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        if self._withdrawn or (self._still_allowed is not None and not self._still_allowed()):
            return self._withdraw(frame)
        self._frame += 1
        for face in faces:
            if face.landmarks68 is not None:
                self._swap_one(frame, np.asarray(face.landmarks68, np.float32), face.track_id)
        stale = [tid for tid, state in self._colour.items() if self._frame - state.last_seen > 30]
        for track_id in stale:
            del self._colour[track_id]
        return frame

    def _withdraw(self, frame: np.ndarray) -> np.ndarray:
        """The source was deleted: say so once (a conversion stops there), then leave
        every frame as it is."""
        if self._withdrawn:
            return frame
        self._withdrawn = True
        raise SourceWithdrawn("the source face was deleted (consent withdrawn); the swap stopped")

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
        image, points = self.source.level_for(scale)
        affines = triangle_affines(points, local, self.source.triangles)
        source_size = (image.shape[1], image.shape[0])
        map_x, map_y = piecewise_affine_maps(labels, affines, np.zeros(2, np.float32), source_size)
        rgba = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        warped = np.ascontiguousarray(rgba[..., :3])
        mask = swap_mask(labels, local, scale, self.source.pull)
        mask *= rgba[..., 3].astype(np.float32) * (1.0 / 255.0)  # hair and background stay
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
            matched += self.shading * masked_blur(target_lab - matched, skin, 0.35 * scale)
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
    return (inner > 0.98).astype(np.float32)


def _build(params: Mapping[str, Any], resources: EffectResources) -> Effect:
    face_id = str(params["source_face"])
    if not face_id:
        raise InvalidParams(
            "swap needs a source face: upload the face photo with POST /faces first "
            "and pass its face_id in params.source_face"
        )
    try:
        image = resources.source_faces[face_id]
    except KeyError:
        raise InvalidParams(
            f"unknown source face {face_id!r} (never uploaded, or removed since): upload the "
            "face photo with POST /faces first and pass its face_id in params.source_face"
        ) from None
    try:
        source = cached_source(np.asarray(image))
    except EngineError:
        raise
    except ValueError as error:
        raise InvalidParams(f"the source face {face_id!r} cannot be used: {error}") from error
    # A store that knows withdrawn faces (stream.face_store.FaceStore) is asked every
    # frame; eviction to make room does not stop a running swap.
    withdrawn = getattr(resources.source_faces, "is_withdrawn", None)
    return FaceSwap(
        source,
        shading=float(params["shading"]),
        identity=float(params["identity"]),
        still_allowed=None if withdrawn is None else (lambda: not withdrawn(face_id)),
    )


def _unavailable(resources: EffectResources) -> str | None:
    from engines.landmarks import dlib_model_path

    try:
        dlib_model_path("landmarks68")
    except ModelLoadError as error:
        if resources.remote_users:
            return (
                f"dlib's face landmark model is not installed on this server; {REMOTE_MODEL_ADVICE}"
            )
        return str(error)
    return None


SPECS = (
    EffectSpec(
        name="swap",
        description="every face replaced by an uploaded face (landmark warp, colour-matched)",
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
