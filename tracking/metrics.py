"""Measures of tracking quality: jitter, centre error, id switches (numpy only).

Trajectories are (T, 2) float arrays of box centres in pixels, one row per frame,
NaN where there is no box in that frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tracking.association import assign, iou_matrix


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(T, 4) x1, y1, x2, y2 -> (T, 2) centres (NaN rows stay NaN)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def jitter(centres: np.ndarray) -> float:
    """RMS of the frame-to-frame change of velocity (the second difference), pixels/frame².

    Only triples of consecutive frames that all have a box count. NaN if none.
    """
    c = np.asarray(centres, np.float64)
    second = c[2:] - 2 * c[1:-1] + c[:-2]
    valid = np.isfinite(second).all(axis=1)
    if not valid.any():
        return float("nan")
    return float(np.sqrt((second[valid] ** 2).sum(axis=1).mean()))


def centre_error(centres: np.ndarray, truth: np.ndarray, frames: np.ndarray | None = None) -> float:
    """Mean distance between `centres` and `truth` over `frames` (a bool mask, default all)
    where both are known, pixels."""
    c, t = np.asarray(centres, np.float64), np.asarray(truth, np.float64)
    mask = np.isfinite(c).all(axis=1) & np.isfinite(t).all(axis=1)
    if frames is not None:
        mask &= np.asarray(frames, bool)
    if not mask.any():
        return float("nan")
    return float(np.linalg.norm(c[mask] - t[mask], axis=1).mean())


def count_id_switches(
    truth: Sequence[Mapping[int, np.ndarray]],
    hypotheses: Sequence[Mapping[int, np.ndarray]],
    iou_threshold: float = 0.5,
) -> tuple[int, int]:
    """MOT-style identity switches and matched pairs over a sequence.

    truth, hypotheses: per frame, {id: (4,) box}. In every frame the boxes are matched
    one to one by IoU (Hungarian, at least `iou_threshold`); a switch is counted when
    a true id is matched to a different hypothesis id than the last time it was matched.
    Returns (switches, matches).
    """
    last: dict[int, int] = {}
    switches = matches = 0
    for true_boxes, hyp_boxes in zip(truth, hypotheses, strict=True):
        true_ids, hyp_ids = list(true_boxes), list(hyp_boxes)
        if not true_ids or not hyp_ids:
            continue
        overlap = iou_matrix(
            np.array([true_boxes[i] for i in true_ids]), np.array([hyp_boxes[i] for i in hyp_ids])
        )
        for row, col in assign(-overlap, overlap >= iou_threshold).pairs:
            true_id, hyp_id = true_ids[row], hyp_ids[col]
            matches += 1
            if true_id in last and last[true_id] != hyp_id:
                switches += 1
            last[true_id] = hyp_id
    return switches, matches


def link_boxes(
    per_frame: Sequence[np.ndarray], iou_threshold: float = 0.5
) -> list[dict[int, np.ndarray]]:
    """Identities for per-frame boxes by strict frame-to-frame IoU matching (Hungarian,
    no prediction, no coasting): a pessimistic stand-in for ground truth, since a face
    missed for one frame starts a new identity. per_frame: (N_t, 4) arrays.
    Returns per frame {id: (4,) box}."""
    linked: list[dict[int, np.ndarray]] = []
    previous: dict[int, np.ndarray] = {}
    next_id = 1
    for boxes in per_frame:
        ids = list(previous)
        overlap = iou_matrix(np.array([previous[i] for i in ids]).reshape(-1, 4), boxes)
        matched = assign(-overlap, overlap >= iou_threshold)
        current = {ids[row]: boxes[col] for row, col in matched.pairs}
        for col in matched.unmatched_detections:
            current[next_id] = boxes[col]
            next_id += 1
        linked.append(current)
        previous = current
    return linked
