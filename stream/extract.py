"""`facestream extract`: aligned training faces from videos or images.

Frames are decoded with PyAV (videos) or OpenCV (images), faces found by MTCNN and
followed by the Kalman face tracker, and each face is aligned by its five landmarks
to the canonical template (engines.alignment) and written as a PNG of the training
size. `manifest.json` lists every kept face with its source, frame, track and
landmarks in crop pixels (engines.faceswap_gan.dataset reads it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from engines.alignment import DEFAULT_PADDING, estimate_alignment, transform_points, warp_to_crop
from engines.errors import InvalidDataset
from engines.faceswap_gan.dataset import MANIFEST_NAME, ExtractManifest, FaceRecord, read_manifest
from engines.types import Detections, Face
from stream.media_damage import DamagedVideo
from stream.media_info import require_video
from stream.media_probe import check_complete, open_input
from tracking import FaceTracker
from tracking.association import iou_matrix

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".y4m"}
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
FACES_SUBDIR = "faces"

Progress = Callable[[int], None]


class ExtractError(Exception):
    """Extracting failed (a face file could not be written, no face was kept); the
    message says why. Exit status 1 on the command line."""


class ExtractInputError(ExtractError):
    """The input or the output folder cannot be used as given: a missing or unreadable
    image, a folder without images or videos, an output folder holding other faces.
    Exit status 2 on the command line, as a bad input to `convert`. (An unreadable
    video raises stream.media_limits.MediaRejected, with convert's messages.)"""


@dataclass(frozen=True)
class ExtractOptions:
    """size: side of the saved faces (pixels). padding: alignment padding.
    every: use every Nth video frame. max_frames: stop after this many used frames
    per video. detect_max_side: frames are downscaled to this longer side for detection
    (faces are cut from the full frame). min_face: smallest face width kept, in source
    pixels. min_score: lowest detection score kept. keep: "all" faces or the "largest"
    track (largest total face area; in images, the largest face of each image).
    track_id: keep only this track (videos). append: add to an existing extract folder.
    """

    size: int = 256
    padding: float = DEFAULT_PADDING
    every: int = 1
    max_frames: int | None = None
    detect_max_side: int = 1280
    min_face: int = 40
    min_score: float = 0.95
    keep: Literal["all", "largest"] = "all"
    track_id: int | None = None
    append: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class ExtractSummary:
    """frames: frames and images looked at; found: faces written before selection;
    kept: faces in the manifest after this run; tracks: track id -> faces found."""

    frames: int
    found: int
    kept: int
    tracks: dict[int, int] = field(default_factory=dict)
    manifest: Path | None = None


def list_inputs(source: Path) -> list[Path]:
    """The video and image files of `source` (a file, or a folder; not recursive), sorted."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
            raise ExtractInputError(
                f"input {source} is neither a video nor an image this command reads"
            )
        return [source]
    if source.is_dir():
        files = sorted(
            p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
        )
        if not files:
            raise ExtractInputError(f"input {source} holds no videos or images")
        return files
    raise ExtractInputError(f"input {source} does not exist")


def count_frames(paths: list[Path], options: ExtractOptions) -> int | None:
    """Frames the extract will look at (for a progress bar), or None if unknown.

    Opens every video as iter_video_frames does, so one it cannot read raises
    MediaRejected here, before any model loads."""
    total = 0
    for path in paths:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            total += 1
            continue
        with _open_video(path) as container:
            frames = require_video(container, str(path)).frames
        if not frames:
            return None
        used = -(-frames // options.every)
        total += min(used, options.max_frames) if options.max_frames else used
    return total


def _open_video(path: Path) -> Any:
    """The open container of video `path`, opened as `convert` opens its input
    (stream.media_probe: allowed containers only, local file, index complete);
    MediaRejected with convert's one-line reason when it cannot be used."""
    container = open_input(path)
    try:
        check_complete(container, path)
    except BaseException:
        container.close()
        raise
    return container


def iter_video_frames(
    path: Path, every: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, HxWx3 uint8 RGB) for every `every`-th frame of a video, via PyAV,
    as the video is meant to be shown (a phone's rotation flag applied: upright_rgb).

    Raises MediaRejected for a file that is no readable video (as `convert` does), and
    DamagedMedia when it breaks while decoded beyond the few lost frames that are
    skipped (with a warning; frame numbers count the frames decoded)."""
    from stream.convert_frames import upright_rgb

    with _open_video(path) as container:
        stream = require_video(container, str(path))
        stream.thread_type = "AUTO"
        video = DamagedVideo(stream, str(path))
        used, number = 0, 0
        for packet in video.packets(container.demux(stream)):
            for frame in video.decode(packet):
                number += 1
                if (number - 1) % every:
                    continue
                yield number - 1, upright_rgb(frame)
                used += 1
                if max_frames is not None and used >= max_frames:
                    return
        video.finish()


def read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ExtractInputError(f"input {path} is not a readable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


class FaceFinder(Protocol):
    """Faces of one frame; with track=True, ids follow faces across consecutive calls."""

    def find(self, frame: np.ndarray, track: bool) -> list[Face]: ...

    def reset(self) -> None: ...


def _downscaled(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    scale = min(1.0, max_side / max(frame.shape[:2]))
    if scale >= 1.0:
        return frame, 1.0
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, scale


class MtcnnFaceFinder:
    """The project's MTCNN (engines.detection) on a downscaled frame, with the Kalman
    FaceTracker for ids. Boxes and landmarks are the raw detections (sharper than the
    smoothed track for alignment), in full-frame pixels; a face gets the id of the
    confirmed track that overlaps it most (faces of still-tentative tracks are skipped)."""

    def __init__(self, device: str, max_side: int, min_score: float) -> None:
        from engines.detection import FaceDetector

        self.max_side, self.min_score = max_side, min_score
        self._detector = FaceDetector(device=device, min_face_size=20)
        self._tracker = FaceTracker()

    def _detect(self, frame: np.ndarray) -> Detections:
        small, scale = _downscaled(frame, self.max_side)
        found = self._detector.detect([small])[0]
        found = found[found.scores >= self.min_score]
        return Detections(found.boxes / scale, found.scores, found.landmarks / scale)

    def _track_ids(self, found: Detections) -> list[int]:
        tracks = [
            t
            for t in self._tracker.update(found.boxes, found.scores, found.landmarks)
            if t.misses == 0
        ]
        ids = [-1] * len(found)
        if not tracks or not len(found):
            return ids
        overlaps = iou_matrix(np.stack([t.box for t in tracks]), found.boxes)
        for row, track in enumerate(tracks):
            best = int(overlaps[row].argmax())
            if overlaps[row, best] > 0.3:
                ids[best] = int(track.id)
        return ids

    def find(self, frame: np.ndarray, track: bool) -> list[Face]:
        found = self._detect(frame)
        if not track:
            return Face.from_detections(found)
        ids = self._track_ids(found)
        return [
            Face(
                track_id=ids[i],
                box=found.boxes[i],
                landmarks5=found.landmarks[i],
                score=float(found.scores[i]),
            )
            for i in range(len(found))
            if ids[i] >= 0
        ]

    def reset(self) -> None:
        self._tracker.reset()


class _FaceWriter:
    """Cuts aligned faces out of frames and writes them under out_dir/faces."""

    def __init__(self, out_dir: Path, options: ExtractOptions) -> None:
        self.out_dir = out_dir
        self.options = options
        (out_dir / FACES_SUBDIR).mkdir(parents=True, exist_ok=True)

    def write(
        self, frame: np.ndarray, face: Face, source: Path, number: int, slot: int
    ) -> FaceRecord:
        alignment = estimate_alignment(face.landmarks5, self.options.size, self.options.padding)
        crop = warp_to_crop(frame, alignment)
        track = f"t{face.track_id}" if face.track_id >= 0 else f"f{slot}"
        name = f"{FACES_SUBDIR}/{source.stem}_{number:06d}_{track}.png"
        if not cv2.imwrite(str(self.out_dir / name), np.ascontiguousarray(crop[:, :, ::-1])):
            raise ExtractError(f"cannot write {self.out_dir / name}")
        landmarks = transform_points(face.landmarks5, alignment.matrix)
        return FaceRecord(
            file=name,
            source=source.name,
            frame=number,
            track_id=int(face.track_id),
            score=float(face.score),
            box=[round(float(v), 2) for v in face.box],
            landmarks=[[round(float(v), 3) for v in p] for p in landmarks],
        )


def _keep_face(face: Face, options: ExtractOptions) -> bool:
    return face.width >= options.min_face and face.score >= options.min_score


def _select(records: list[FaceRecord], options: ExtractOptions) -> list[FaceRecord]:
    """The records the options keep (see ExtractOptions.keep and track_id)."""
    videos = [r for r in records if r.track_id >= 0]
    images = [r for r in records if r.track_id < 0]
    if options.track_id is not None:
        return [r for r in videos if r.track_id == options.track_id]
    if options.keep == "all":
        return records

    def area(record: FaceRecord) -> float:
        return (record.box[2] - record.box[0]) * (record.box[3] - record.box[1])

    kept: list[FaceRecord] = []
    for source in sorted({r.source for r in videos}):
        totals: dict[int, float] = {}
        for record in (r for r in videos if r.source == source):
            totals[record.track_id] = totals.get(record.track_id, 0.0) + area(record)
        best = max(totals, key=lambda track: totals[track])
        kept += [r for r in videos if r.source == source and r.track_id == best]
    for source in sorted({r.source for r in images}):
        kept.append(max((r for r in images if r.source == source), key=area))
    return kept


def _previous(out_dir: Path, options: ExtractOptions) -> list[FaceRecord]:
    if not (out_dir / MANIFEST_NAME).is_file():
        return []
    if not options.append:
        raise ExtractInputError(
            f"{out_dir} already holds extracted faces; pass --append to add to them or pick another folder"
        )
    try:
        manifest = read_manifest(out_dir)
    except InvalidDataset as error:
        raise ExtractInputError(str(error)) from error
    if manifest.size != options.size or abs(manifest.padding - options.padding) > 1e-9:
        raise ExtractInputError(
            f"{out_dir} holds faces of size {manifest.size}, padding {manifest.padding}; "
            f"append with the same --size and --padding"
        )
    return list(manifest.faces)


def _frames_of(path: Path, options: ExtractOptions) -> Iterator[tuple[int, np.ndarray]]:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        yield 0, read_image(path)
    else:
        yield from iter_video_frames(path, options.every, options.max_frames)


def extract_faces(
    source: Path,
    out_dir: Path,
    options: ExtractOptions | None = None,
    progress: Progress | None = None,
    finder: FaceFinder | None = None,
) -> ExtractSummary:
    """Find, align and save the faces of a video, an image or a folder of them.

    Writes out_dir/faces/*.png (options.size square, RGB) and out_dir/manifest.json.
    Raises ExtractInputError (unreadable image, unusable output folder), MediaRejected
    (unreadable video), DamagedMedia (a video too damaged to decode), ExtractError (a
    face not written, no face kept).
    """
    options = options or ExtractOptions()
    out_dir = Path(out_dir)
    paths = list_inputs(Path(source))
    previous = _previous(out_dir, options)
    writer = _FaceWriter(out_dir, options)
    finder = finder or MtcnnFaceFinder(options.device, options.detect_max_side, options.min_score)
    found: list[FaceRecord] = []
    frames = 0
    for path in paths:
        finder.reset()
        is_image = path.suffix.lower() in IMAGE_SUFFIXES
        for number, frame in _frames_of(path, options):
            faces = finder.find(frame, track=not is_image)
            for slot, face in enumerate(f for f in faces if _keep_face(f, options)):
                found.append(writer.write(frame, face, path, number, slot))
            frames += 1
            if progress is not None:
                progress(1)
    kept = _select(found, options)
    kept_files = {r.file for r in kept}
    for record in found:
        if record.file not in kept_files:
            (out_dir / record.file).unlink(missing_ok=True)
    if not kept:
        raise ExtractError(
            f"no face kept from {source} (found {len(found)}); check --track-id, --min-face and --min-score"
        )
    merged = {r.file: r for r in [*previous, *kept]}
    manifest = ExtractManifest(
        size=options.size, padding=options.padding, faces=tuple(merged.values())
    )
    path = manifest.write(out_dir)
    tracks: dict[int, int] = {}
    for record in found:
        tracks[record.track_id] = tracks.get(record.track_id, 0) + 1
    logger.info(
        "extracted %d of %d faces from %d frames into %s", len(kept), len(found), frames, out_dir
    )
    return ExtractSummary(
        frames=frames, found=len(found), kept=len(merged), tracks=tracks, manifest=path
    )
