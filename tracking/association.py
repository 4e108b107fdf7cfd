"""Matching detections to tracks: IoU and centre-distance costs, Hungarian assignment.

Boxes are (N, 4) float arrays x1, y1, x2, y2 in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def _boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def _scales(boxes: np.ndarray) -> np.ndarray:
    """(N,) sqrt(w * h) of (N, 4) boxes."""
    return np.sqrt(np.clip(boxes[:, 2:] - boxes[:, :2], 1e-3, None).prod(axis=1))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of every box of `a` with every box of `b`."""
    a, b = _boxes(a), _boxes(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def centre_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) distance between centres, in units of the scale sqrt(w * h) of each `a` box."""
    a, b = _boxes(a), _boxes(b)
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    return np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2) / _scales(a)[:, None]


def scale_ratio_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) max(sa/sb, sb/sa) of the scales sqrt(w * h): 1 for equal sizes."""
    ratio = _scales(_boxes(a))[:, None] / _scales(_boxes(b))[None, :]
    return np.maximum(ratio, 1 / ratio)


@dataclass(frozen=True)
class Assignment:
    """Result of matching N tracks to M detections.

    pairs: (K, 2) int (track index, detection index). unmatched_tracks: (N - K,) int.
    unmatched_detections: (M - K,) int.
    """

    pairs: np.ndarray
    unmatched_tracks: np.ndarray
    unmatched_detections: np.ndarray


def assign(cost: np.ndarray, allowed: np.ndarray) -> Assignment:
    """Minimum-cost one-to-one matching (Hungarian) among the `allowed` pairs.

    cost, allowed: (N, M) float and bool arrays.
    """
    rows_n, cols_n = cost.shape
    pairs = np.zeros((0, 2), np.int64)
    if rows_n and cols_n and allowed.any():
        big = float(np.abs(cost[allowed]).max()) * 2 + 1.0
        rows, cols = linear_sum_assignment(np.where(allowed, cost, big))
        keep = allowed[rows, cols]
        pairs = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_tracks = np.setdiff1d(np.arange(rows_n), pairs[:, 0])
    unmatched_detections = np.setdiff1d(np.arange(cols_n), pairs[:, 1])
    return Assignment(pairs, unmatched_tracks, unmatched_detections)


def associate(
    predicted: np.ndarray,
    detections: np.ndarray,
    lost: np.ndarray,
    iou_threshold: float,
    max_distance: float,
    max_scale_ratio: float,
) -> Assignment:
    """Match tracks (their predicted boxes) to detections in two passes.

    First by IoU (>= iou_threshold) for all tracks; then the tracks still unmatched
    that are coasting (`lost`, (N,) bool) by centre distance (<= max_distance face
    scales) among detections of similar size: after an occlusion the prediction has
    drifted and IoU alone would start a new track (a new id) for the same face.
    """
    overlap = iou_matrix(predicted, detections)
    first = assign(-overlap, overlap >= iou_threshold)
    tracks_left = first.unmatched_tracks[lost[first.unmatched_tracks]]
    dets_left = first.unmatched_detections
    if len(tracks_left) == 0 or len(dets_left) == 0:
        return first
    a, b = predicted[tracks_left], detections[dets_left]
    distance = centre_distance_matrix(a, b)
    allowed = (distance <= max_distance) & (scale_ratio_matrix(a, b) <= max_scale_ratio)
    second = assign(distance, allowed)
    extra = np.stack([tracks_left[second.pairs[:, 0]], dets_left[second.pairs[:, 1]]], axis=1)
    pairs = np.concatenate([first.pairs, extra.reshape(-1, 2)]).astype(np.int64)
    return Assignment(
        pairs,
        np.setdiff1d(np.arange(len(predicted)), pairs[:, 0]),
        np.setdiff1d(np.arange(len(detections)), pairs[:, 1]),
    )
