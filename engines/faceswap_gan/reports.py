"""What a training run leaves for people to look at: preview grids, the loss log and curve.

Preview tiles are float tensors (B, 3, S, S) RGB in [-1, 1] or masks (B, 1, S, S) in
[0, 1], on any device; images written to disk are PNG.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

_CURVE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def tiles_to_rgb(tiles: torch.Tensor) -> np.ndarray:
    """(B, C, S, S) images in [-1, 1] (C=3) or masks in [0, 1] (C=1) -> (B, S, S, 3) uint8 RGB."""
    tiles = tiles.detach().float().cpu()
    unit = tiles.expand(-1, 3, -1, -1) if tiles.shape[1] == 1 else (tiles + 1.0) * 0.5
    return (unit.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def preview_grid(columns: Sequence[torch.Tensor], gap: int = 2) -> np.ndarray:
    """Lay out equally long batches side by side: column j holds columns[j], one face
    per row. Returns an HxWx3 uint8 RGB image on a white background."""
    images = [tiles_to_rgb(column) for column in columns]
    rows, size = images[0].shape[0], images[0].shape[1]
    height = rows * size + (rows + 1) * gap
    width = len(images) * size + (len(images) + 1) * gap
    grid = np.full((height, width, 3), 255, np.uint8)
    for j, column in enumerate(images):
        for i in range(rows):
            y, x = gap + i * (size + gap), gap + j * (size + gap)
            grid[y : y + size, x : x + size] = column[i]
    return grid


def save_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"cannot write {path}")
    return path


class LossLog:
    """The loss log CSV: one row per logged iteration, columns fixed by the first row.

    On resume, rows after `resume_from` (written after the last checkpoint of a run
    that stopped) are dropped, so the log matches the weights.
    """

    def __init__(self, path: Path, resume_from: int = 0) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        rows = read_loss_log(self.path) if resume_from > 0 and self.path.is_file() else []
        kept = [row for row in rows if row["iteration"] <= resume_from]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as handle:
            if kept:
                self.columns = list(kept[0])
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(kept)

    def append(self, row: dict[str, float]) -> None:
        new_file = self.columns is None
        if self.columns is None:
            self.columns = list(row)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=self.columns, extrasaction="ignore", restval=""
            )
            if new_file:
                writer.writeheader()
            writer.writerow(row)


def read_loss_log(path: Path) -> list[dict[str, float]]:
    """Rows of a loss log as floats (empty cells become NaN)."""
    with Path(path).open(newline="") as handle:
        return [
            {
                key: float(value) if value not in ("", None) else float("nan")
                for key, value in row.items()
            }
            for row in csv.DictReader(handle)
        ]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def draw_loss_curve(
    rows: Sequence[dict[str, float]], keys: Sequence[str], path: Path
) -> Path | None:
    """Plot `keys` of the loss log against iteration (moving average) into a PNG; None
    when there is nothing to plot."""
    keys = [key for key in keys if rows and key in rows[0]]
    if len(rows) < 2 or not keys:
        return None
    width, height, margin = 720, 400, 50
    canvas = np.full((height, width, 3), 255, np.uint8)
    iterations = np.array([row["iteration"] for row in rows])
    series = {
        key: _smooth(np.array([row[key] for row in rows]), max(len(rows) // 50, 1)) for key in keys
    }
    top = max(float(np.nanmax(values)) for values in series.values()) * 1.05 or 1.0
    x_span = max(float(iterations[-1] - iterations[0]), 1.0)
    cv2.rectangle(
        canvas, (margin, margin // 2), (width - margin // 2, height - margin), (0, 0, 0), 1
    )
    for index, (key, values) in enumerate(series.items()):
        xs = margin + (iterations - iterations[0]) / x_span * (width - 1.5 * margin)
        ys = (height - margin) - np.nan_to_num(values) / top * (height - 1.5 * margin)
        points = np.stack([xs, ys], axis=1).astype(np.int32)
        colour = _CURVE_COLOURS[index % len(_CURVE_COLOURS)]
        cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
        cv2.putText(
            canvas,
            key,
            (width - 170, 40 + 20 * index),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            colour,
            1,
            cv2.LINE_AA,
        )
    label = f"iterations {int(iterations[0])}-{int(iterations[-1])}, y 0-{top:.3g}"
    cv2.putText(
        canvas,
        label,
        (margin, height - 15),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return save_png(Path(path), canvas)
