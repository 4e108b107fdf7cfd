"""Pixels between PyAV frames and the pipeline's upright RGB arrays, for file conversion.

Decoding: :func:`upright_rgb` turns a decoded frame into HxWx3 uint8 RGB (host memory)
with its display matrix applied, so a phone video recorded sideways with a 90-degree
rotation flag reaches the face detector upright, and a mirrored one (a front camera's
recording flagged to be shown mirrored) is shown as meant. Both the conversion's reader
and the face process decode through it, so they see the same pictures.

Colour: 4:2:0 frames (the usual case) are converted with OpenCV's BT.601 limited-range
I420 conversion in both directions. swscale's fast YUV->RGB path (PyAV's
``to_ndarray(format="rgb24")``) rounds down: a round trip through it darkened the
picture by about one luma level per conversion; OpenCV's pair round-trips to within
0.02 levels and costs about the same (measured on 720p: 0.41 against 0.32 ms a frame
to decode, 0.30 ms to encode, against 2.5 ms for swscale's RGB->YUV).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import av
import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Formats OpenCV's I420 conversion reads exactly: planar 8-bit 4:2:0, limited range.
_I420_FORMATS = ("yuv420p",)
# cv2.rotate codes for 1, 2, 3 counter-clockwise quarter turns.
_ROTATE_CODES = (cv2.ROTATE_90_COUNTERCLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_CLOCKWISE)


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0..3) that make a frame upright.

    rotation: PyAV's ``VideoFrame.rotation``, the display matrix's counter-clockwise
    angle in degrees (90 for a phone held upright whose sensor recorded sideways;
    -90 or 270 for the other way). Angles that are no multiple of 90 are rounded.
    """
    return round(rotation / 90) % 4


def upright_size(width: int, height: int, rotation: float) -> tuple[int, int]:
    """(width, height) of a coded width x height picture once `rotation` is applied."""
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def rotate_rgb(rgb: np.ndarray, turns: int) -> np.ndarray:
    """`rgb` (HxWxC uint8) turned counter-clockwise `turns` quarter turns; a new
    contiguous array, or `rgb` itself for 0."""
    turns %= 4
    if turns == 0:
        return rgb
    rotated: np.ndarray = cv2.rotate(rgb, _ROTATE_CODES[turns - 1])
    return rotated


def frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as coded (no rotation), HxWx3 uint8 RGB."""
    if frame.format.name in _I420_FORMATS and frame.width % 2 == 0 and frame.height % 2 == 0:
        rgb: np.ndarray = cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
        return rgb
    return frame.to_ndarray(format="rgb24")


def orientation(matrix: Sequence[int]) -> tuple[int, bool]:
    """(counter-clockwise quarter turns, mirrored) of a display matrix: the picture is
    shown as the coded one turned, then mirrored left to right where `mirrored`.

    matrix: the 9 int32 of FFmpeg's (and ISO 14496-12's) display matrix, row-major;
    a coded pixel (x, y) is shown at (a*x + c*y, b*x + d*y) plus a shift, with
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]. A negative determinant
    means a mirror; an up-down flip is a left-right one after a half turn. Angles that
    are no multiple of 90 degrees are rounded to the nearest quarter turn.
    """
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    mirrored = a * d - b * c < 0
    if mirrored:
        a = -a  # undo the left-right mirror (it negates the shown x) to leave the turn
    return round(math.degrees(math.atan2(-b, a)) / 90) % 4, mirrored


def frame_orientation(frame: av.VideoFrame) -> tuple[int, bool]:
    """(counter-clockwise quarter turns, mirrored) of the frame's display matrix;
    (0, False) when it has none."""
    side_data: Any = frame.side_data.get("DISPLAYMATRIX")
    if side_data is None:
        return 0, False
    matrix = np.frombuffer(bytes(side_data), np.int32)
    if matrix.size != 9:
        logger.debug("display matrix of %d bytes ignored", matrix.nbytes)
        return 0, False
    return orientation(matrix.tolist())


def upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as it is meant to be shown: HxWx3 uint8 RGB with the frame's display
    matrix applied (width and height swapped for 90 and 270 degrees, mirrored where
    the matrix mirrors)."""
    turns, mirrored = frame_orientation(frame)
    rgb = rotate_rgb(frame_rgb(frame), turns)
    if mirrored:
        flipped: np.ndarray = cv2.flip(rgb, 1)
        return flipped
    return rgb


def rgb_frame(rgb: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    """A VideoFrame of `rgb` (HxWx3 uint8) for an encoder taking `pix_fmt`.

    yuv420p with even sides is converted here (OpenCV, rounds to nearest); any other
    format goes in as rgb24 and PyAV converts it for the encoder.
    """
    if pix_fmt in _I420_FORMATS and rgb.shape[0] % 2 == 0 and rgb.shape[1] % 2 == 0:
        yuv: np.ndarray = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def encodable_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """The largest size <= width x height that `pix_fmt` can hold: chroma-subsampled
    formats (4:2:0, 4:2:2) need sides that are multiples of their subsampling."""
    fmt = av.VideoFormat(pix_fmt)
    x_step = 64 // max(fmt.chroma_width(64), 1)
    y_step = 64 // max(fmt.chroma_height(64), 1)
    return width - width % x_step, height - height % y_step
