"""Face tracking: Kalman-smoothed tracks with stable ids (numpy, scipy, filterpy only).

Use :class:`FaceTracker`; feed it each frame's detections, get :class:`Track` s back.
"""

from tracking.tracker import FaceTracker, Track, TrackState

__all__ = ["FaceTracker", "Track", "TrackState"]
