"""Kalman filtering of one face box, and smoothing of its landmarks.

The box is filtered as (cx, cy, s, a): centre, scale s = sqrt(w * h) and aspect
a = w / h, each with a constant-velocity model (filterpy). Noise is relative to
the face's scale, so a far face and a near face are smoothed alike. A large
innovation (the face turned, accelerated or the detector jumped) inflates the
covariance for that update, so the filter catches up instead of lagging.

Landmarks are smoothed relative to the box (centre and scale), so they move
rigidly with the filtered box and only their shape is averaged over time.

Time is counted in steps: one step is one frame of the rate the noise model was
tuned for. A frame that comes 2 steps after the last (a skipped frame, a 15 fps
camera against a 30 fps model) is predicted 2 steps ahead, with the process noise
and landmark blending of 2 steps; half a step (60 fps) likewise.

All arrays are float64 numpy internally; boxes are x1, y1, x2, y2 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from filterpy.kalman import KalmanFilter

_STATE = 8  # cx, cy, s, a and their velocities
_MEASURE = 4


@dataclass(frozen=True)
class SmoothingConfig:
    """Noise model of the box filter, derived from one `smoothing` strength in [0, 1].

    measurement_std: detector noise, as a fraction of the face scale.
    acceleration_std: how much the true motion may change per frame (fraction of scale);
        smaller is smoother and laggier.
    landmark_alpha: weight of a new landmark measurement (1 = no smoothing).
    gate: normalised innovation (chi-square, 4 dof) above which the filter catches up.
    """

    measurement_std: float
    acceleration_std: float
    landmark_alpha: float
    gate: float = 16.0

    @classmethod
    def from_strength(cls, smoothing: float) -> SmoothingConfig:
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
        return cls(
            measurement_std=0.02,
            acceleration_std=0.003 * 10 ** (2.0 * (0.5 - smoothing)),
            landmark_alpha=1.0 - 0.8 * smoothing,
        )


def box_to_measurement(box: np.ndarray) -> np.ndarray:
    """(4,) x1, y1, x2, y2 -> (4,) cx, cy, scale, aspect."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, np.sqrt(w * h), w / h])


def measurement_to_box(z: np.ndarray) -> np.ndarray:
    """(4,) cx, cy, scale, aspect -> (4,) x1, y1, x2, y2."""
    cx, cy, s, a = (float(v) for v in z[:4])
    s, a = max(s, 1e-3), max(a, 1e-3)
    w, h = s * np.sqrt(a), s / np.sqrt(a)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxFilter:
    """Constant-velocity Kalman filter of one face box (filterpy)."""

    def __init__(self, box: np.ndarray, config: SmoothingConfig) -> None:
        self.config = config
        kf = KalmanFilter(dim_x=_STATE, dim_z=_MEASURE)
        kf.F = np.eye(_STATE)
        kf.F[:_MEASURE, _MEASURE:] = np.eye(_MEASURE)
        kf.H = np.eye(_MEASURE, _STATE)
        z = box_to_measurement(box)
        kf.x[:_MEASURE, 0] = z
        scale = z[2]
        kf.P = np.diag(
            [(config.measurement_std * scale) ** 2] * 2
            + [(config.measurement_std * scale) ** 2, 0.05**2]
            + [(0.1 * scale) ** 2] * 2
            + [(0.05 * scale) ** 2, 0.01**2]
        )
        self._kf = kf
        self._set_noise()

    def _set_noise(self, steps: float = 1.0) -> None:
        """F, Q and R for the current scale (noise is relative to the face's size) and a
        prediction `steps` frames ahead."""
        scale = max(float(self._kf.x[2, 0]), 1.0)
        r = self.config.measurement_std * scale
        self._kf.R = np.diag([r**2, r**2, r**2, (self.config.measurement_std) ** 2])
        q = self.config.acceleration_std * scale
        # Random acceleration over dt = `steps` frames, per coordinate: the velocity's
        # variance grows by q^2 per frame (linearly in time, so the same per second at
        # any frame rate); at dt = 1 this is the piecewise-constant model it was tuned with.
        dt = steps
        block = np.array([[dt**3 / 4, dt**2 / 2], [dt**2 / 2, dt]])
        self._kf.F[:_MEASURE, _MEASURE:] = np.eye(_MEASURE) * dt
        sigma = np.array([q, q, q, self.config.acceleration_std / 4])
        Q = np.zeros((_STATE, _STATE))
        for i, s in enumerate(sigma):
            idx = [i, i + _MEASURE]
            Q[np.ix_(idx, idx)] = block * s**2
        self._kf.Q = Q

    def predict(self, steps: float = 1.0) -> None:
        """Advance `steps` frames (> 0; 1 = the next frame at the tuned frame rate)."""
        self._set_noise(steps)
        self._kf.predict()
        self._kf.x[2, 0] = max(self._kf.x[2, 0], 1.0)
        self._kf.x[3, 0] = max(self._kf.x[3, 0], 0.1)

    def update(self, box: np.ndarray) -> None:
        """Correct with a measured box; a surprising one makes the filter catch up."""
        z = box_to_measurement(box)
        kf = self._kf
        innovation = z - kf.H @ kf.x[:, 0]
        system = kf.H @ kf.P @ kf.H.T + kf.R
        nis = float(innovation @ np.linalg.solve(system, innovation))
        if nis > self.config.gate:
            kf.P = kf.P * (nis / self.config.gate)
        kf.update(z)

    @property
    def box(self) -> np.ndarray:
        """(4,) filtered x1, y1, x2, y2."""
        return measurement_to_box(self._kf.x[:_MEASURE, 0])

    @property
    def centre_velocity(self) -> np.ndarray:
        """(2,) pixels per step (per frame at the tuned frame rate)."""
        return self._kf.x[_MEASURE : _MEASURE + 2, 0].copy()

    @property
    def scale(self) -> float:
        return float(self._kf.x[2, 0])


class LandmarkAnchor:
    """A steadier box centre: the landmarks' centroid plus a slowly learned offset.

    MTCNN's landmarks move much less from frame to frame than its box (on a still
    face the centroid of the five points jitters about three times less than the box
    centre), so the box is re-centred on the centroid; the offset between the two,
    in face scales, is a property of the face and pose, and is averaged over time.
    """

    def __init__(self, box: np.ndarray, landmarks: np.ndarray, rate: float = 0.1) -> None:
        self.rate = rate
        self._offset: np.ndarray | None = self._measure(box, landmarks)

    @staticmethod
    def _measure(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
        points = np.asarray(landmarks, np.float64).reshape(-1, 2)
        if len(points) == 0 or not np.isfinite(points).all() or not points.any():
            return None
        z = box_to_measurement(box)
        return (z[:2] - points.mean(axis=0)) / z[2]

    def steady_box(self, box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """`box` moved so that its centre is the landmark centroid plus the learned
        offset; learns from this detection. Unchanged when there are no landmarks."""
        offset = self._measure(box, landmarks)
        if offset is None:
            return np.asarray(box, np.float64)
        if self._offset is None:
            self._offset = offset
        self._offset = (1 - self.rate) * self._offset + self.rate * offset
        z = box_to_measurement(box)
        z[:2] = np.asarray(landmarks, np.float64).reshape(-1, 2).mean(axis=0) + self._offset * z[2]
        return measurement_to_box(z)


class LandmarkSmoother:
    """Exponential smoothing of landmarks in box-relative coordinates."""

    def __init__(self, landmarks: np.ndarray, box: np.ndarray, alpha: float) -> None:
        self.alpha = alpha
        self._relative = self._to_relative(landmarks, box)

    @staticmethod
    def _to_relative(landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
        z = box_to_measurement(box)
        return (np.asarray(landmarks, np.float64) - z[:2]) / z[2]

    def update(self, landmarks: np.ndarray, box: np.ndarray, steps: float = 1.0) -> None:
        """Blend in landmarks measured with `box` (the same detection's raw box), `steps`
        frames after the last update: `alpha` is the weight for one step, so the
        smoothing is the same in time whatever the frame rate."""
        relative = self._to_relative(landmarks, box)
        alpha = 1.0 - (1.0 - self.alpha) ** (steps if steps > 0 else 1.0)
        self._relative = alpha * relative + (1 - alpha) * self._relative

    def landmarks(self, box: np.ndarray) -> np.ndarray:
        """(K, 2) smoothed landmarks placed on `box` (the filtered box)."""
        z = box_to_measurement(box)
        return self._relative * z[2] + z[:2]
