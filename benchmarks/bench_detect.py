"""`facestream bench detect`: face detection and tracking against facenet-pytorch's MTCNN.

Sections (all by default, or --sections a,b):
- speed: full-frame detection of video.mp4 frames at 1080p and 720p, ours and the
  reference interleaved frame by frame (same settings, and each one's defaults).
- pipeline: detection + tracking over the whole clip at 1080p (the face stage:
  full detection every N frames, region refinement in between) against per-frame
  facenet-pytorch; distinct ids and id switches against tracks linked from the
  reference's per-frame detections.
- tracking: jitter and centre error on a generated clip with a known trajectory,
  raw per-frame detections against the tracker and the face stage.
- debug: a short debug video of video.mp4 (boxes, ids, landmarks) in benchmarks/out/detect/.

Timings are medians per frame; the ratio is reference / ours measured in this run.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = PROJECT_ROOT / "benchmarks" / "out" / "detect"
SECTIONS = ("speed", "pipeline", "tracking", "debug")

logger = logging.getLogger(__name__)


def _helpers() -> Any:
    """tests/detection_helpers (clip, video frames, reference), importable from here."""
    tests = str(PROJECT_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import detection_helpers

    return detection_helpers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS)
    )
    parser.add_argument(
        "--frames", type=int, default=8, help="video frames timed per resolution (speed)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="device of our detector (cpu, cuda)")
    parser.add_argument(
        "--detect-every", type=int, default=5, help="face stage: full detection every N frames"
    )
    parser.add_argument(
        "--smoothing", type=float, default=0.5, help="face stage: tracker smoothing"
    )
    parser.add_argument(
        "--debug-video", type=Path, default=OUT_DIR / "debug_720p.mp4", help="debug section output"
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    rows: list[dict[str, Any]] = []
    runners: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
        "speed": _speed,
        "pipeline": _pipeline,
        "tracking": _tracking,
        "debug": _debug_video,
    }
    for section in sections:
        logger.info("bench detect: %s", section)
        rows.extend(runners[section](args))
    return rows


def _row(
    metric: str, case: str, baseline: Any, ours: Any, unit: str, ratio: float | None = None
) -> dict[str, Any]:
    """One table row; the baseline is facenet-pytorch (speed) or raw detections (quality)."""
    if ratio is None and isinstance(baseline, float) and isinstance(ours, float) and ours > 0:
        ratio = baseline / ours
    return {
        "metric": metric,
        "case": case,
        "baseline": baseline,
        "facestream": ours,
        "ratio": ratio,
        "unit": unit,
    }


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


# -- speed ---------------------------------------------------------------------------------


# (row label, reference contender, our contender)
_SPEED_CASES = (
    ("min_face 20 both (facenet's default)", "reference 20", "ours 20"),
    ("min_face 40 both (facestream's default)", "reference 40", "ours 40"),
    ("each one's default (ours 40, ref 20)", "reference 20", "ours 40"),
    ("min_face 20, ours with resample=auto (fast on a CPU)", "reference 20", "ours auto 20"),
    ("min_face 40, ours with resample=auto (fast on a CPU)", "reference 40", "ours auto 40"),
)


def _speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    from engines.detection import FaceDetector

    helpers = _helpers()
    indices = list(np.linspace(0, 104, args.frames).round().astype(int))
    full_hd = helpers.video_frames(indices)
    detectors: dict[str, Callable[[np.ndarray], Any]] = {}
    for face_size in (20, 40):
        mtcnn = helpers.reference_mtcnn(face_size)
        detector = FaceDetector(device=args.device, min_face_size=face_size, resample="exact")
        detectors[f"reference {face_size}"] = functools.partial(helpers.reference_detect, mtcnn)
        detectors[f"ours {face_size}"] = functools.partial(_detect_one, detector)
        auto = FaceDetector(device=args.device, min_face_size=face_size)  # the default resample
        detectors[f"ours auto {face_size}"] = functools.partial(_detect_one, auto)
    rows = []
    for label, frame_size in (("1080p", None), ("720p", (1280, 720))):
        frames = full_hd if frame_size is None else [_resize(f, frame_size) for f in full_hd]
        times = _interleaved(detectors, frames)
        median_ms = {name: 1000 * statistics.median(seconds) for name, seconds in times.items()}
        for case, baseline, contender in _SPEED_CASES:
            rows.append(
                _row(
                    "detect ms/frame",
                    f"{label}, {case}",
                    median_ms[baseline],
                    median_ms[contender],
                    "ms",
                )
            )
    return rows


def _detect_one(detector: Any, frame: np.ndarray) -> Any:
    return detector.detect([frame])


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))


def _interleaved(
    contenders: dict[str, Callable[[np.ndarray], Any]], frames: list[np.ndarray]
) -> dict[str, list[float]]:
    """Seconds per frame of each contender, taking turns on every frame (rotating who
    goes first) so that load from elsewhere hits all of them alike. One warm-up each."""
    names = list(contenders)
    for name in names:
        contenders[name](frames[0])
    times: dict[str, list[float]] = {name: [] for name in names}
    for index, frame in enumerate(frames):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            times[name].append(_timed(functools.partial(contenders[name], frame))[1])
    return times


# -- pipeline on the crowd video -------------------------------------------------------------


def _pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    from engines.detection import FaceDetector
    from stream.face_stage import FaceStage
    from stream.pipeline import FrameContext

    helpers = _helpers()
    frames = helpers.video_frames(list(range(105)))
    stage = FaceStage(
        FaceDetector(device=args.device), detect_every=args.detect_every, smoothing=args.smoothing
    )
    reference = helpers.reference_mtcnn(20)
    helpers.reference_detect(reference, frames[0])
    ours: list[dict[int, np.ndarray]] = []
    ref_boxes: list[np.ndarray] = []
    ours_times, ref_times = [], []
    for index, frame in enumerate(frames):
        ctx = FrameContext(image=frame.copy(), index=index)
        ours_times.append(_timed(functools.partial(stage.process, ctx))[1])
        ours.append({face.track_id: face.box for face in ctx.faces})
        (boxes, _), seconds = _timed(functools.partial(helpers.reference_detect, reference, frame))
        ref_boxes.append(boxes)
        ref_times.append(seconds)
    return _pipeline_rows(args, stage, ours, ref_boxes, ours_times, ref_times)


def _pipeline_rows(
    args: argparse.Namespace,
    stage: Any,
    ours: list[dict[int, np.ndarray]],
    ref_boxes: list[np.ndarray],
    ours_times: list[float],
    ref_times: list[float],
) -> list[dict[str, Any]]:
    from tracking.metrics import count_id_switches, link_boxes

    truth = link_boxes(ref_boxes)
    switches, matches = count_id_switches(truth, ours)
    ids = sorted({i for frame in ours for i in frame})
    ref_fps, our_fps = 1 / statistics.mean(ref_times), len(ours_times) / sum(ours_times)
    stats = stage.stats
    return [
        _row(
            "detect+track fps",
            f"1080p, {len(ours_times)} frames, every {args.detect_every}",
            ref_fps,
            our_fps,
            "fps",
            our_fps / ref_fps,
        ),
        _row(
            "full / region detections",
            "1080p clip",
            None,
            f"{stats.full_detections} / {stats.region_detections}",
            "frames",
        ),
        _row(
            "distinct ids",
            "1080p clip (6-8 people); baseline: reference boxes linked by IoU",
            len({i for frame in truth for i in frame}),
            len(ids),
            "ids",
        ),
        _row(
            "id switches",
            "vs tracks linked from reference",
            None,
            switches,
            f"of {matches} matches",
        ),
    ]


# -- tracking quality on the generated clip --------------------------------------------------


def _tracking(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tracking.metrics import centre_error, jitter

    helpers = _helpers()
    clip = helpers.tracking_clip(_portrait(helpers))
    raw, tracked, staged, ids = _follow(args, clip)
    truth = helpers.face_truth(raw, clip.centres, clip.occluded)
    raw_jitter, raw_error = jitter(raw), centre_error(raw, truth)
    case = f"{len(clip.frames)}-frame clip, smoothing {args.smoothing}"
    tracker_case, stage_case = (
        f"{case}, tracker on every frame",
        f"{case}, face stage every {args.detect_every}",
    )
    return [
        _row("jitter px/frame²", tracker_case, raw_jitter, jitter(tracked), "raw/ours"),
        _row("jitter px/frame²", stage_case, raw_jitter, jitter(staged), "raw/ours"),
        _row(
            "mean centre error px",
            tracker_case,
            raw_error,
            centre_error(tracked, truth),
            "raw/ours",
        ),
        _row(
            "mean centre error px", stage_case, raw_error, centre_error(staged, truth), "raw/ours"
        ),
        _row("ids through occlusion", case, 1, f"tracker {ids[0]}, stage {ids[1]}", "ids"),
    ]


def _portrait(helpers: Any) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(helpers.SHARED_DATA / "faces" / "paul_rudd.jpg"))
    if bgr is None:
        raise SystemExit(f"test media missing: {helpers.SHARED_DATA}")
    return _resize(np.ascontiguousarray(bgr[:, :, ::-1]), (512, 640))


def _follow(
    args: argparse.Namespace, clip: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """Centres per frame of the raw detections (best face), of the tracker fed with them
    and of the face stage, and the ids the tracker and the stage gave."""
    from engines.detection import FaceDetector
    from stream.face_stage import FaceStage
    from stream.pipeline import FrameContext
    from tracking import FaceTracker
    from tracking.metrics import box_centres

    detector = FaceDetector(device=args.device, min_face_size=60)
    tracker = FaceTracker(smoothing=args.smoothing)
    stage = FaceStage(detector, detect_every=args.detect_every, smoothing=args.smoothing)
    raw, tracked, staged = (np.full((len(clip.frames), 2), np.nan) for _ in range(3))
    ids: list[set[int]] = [set(), set()]
    for index, frame in enumerate(clip.frames):
        found = detector.detect([frame])[0][:1]
        if len(found):
            raw[index] = box_centres(found.boxes)[0]
        tracks = tracker.update(found.boxes, found.scores, found.landmarks)
        if tracks:
            tracked[index] = box_centres(tracks[0].box[None])[0]
            ids[0] |= {t.id for t in tracks}
        ctx = FrameContext(image=frame.copy(), index=index)
        stage.process(ctx)
        if ctx.faces:
            staged[index] = box_centres(ctx.faces[0].box[None])[0]
            ids[1] |= {f.track_id for f in ctx.faces}
    return raw, tracked, staged, [sorted(i) for i in ids]


# -- debug video ---------------------------------------------------------------------------------


def _debug_video(args: argparse.Namespace) -> list[dict[str, Any]]:
    import av

    from engines.detection import FaceDetector
    from engines.effects.base import EffectResources
    from engines.effects.registry import build_effect, get_effect_spec
    from stream.face_stage import FaceStage
    from stream.pipeline import EffectPipeline, StageFactories

    helpers = _helpers()
    detector = FaceDetector(device=args.device)
    spec = get_effect_spec("debug")
    pipeline = EffectPipeline(
        spec,
        build_effect("debug", {}, EffectResources()),
        StageFactories(
            face=lambda: FaceStage(
                detector, detect_every=args.detect_every, smoothing=args.smoothing
            )
        ),
    )
    args.debug_video.parent.mkdir(parents=True, exist_ok=True)
    stills: list[np.ndarray] = []
    with av.open(str(helpers.VIDEO)) as source, av.open(str(args.debug_video), "w") as sink:
        stream = sink.add_stream("libx264", rate=25, options={"crf": "32", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            ctx = pipeline.process(frame.to_ndarray(format="rgb24"), time_s=frame.time)
            image = _resize(ctx.image, (1280, 720))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                sink.mux(packet)
            if index in _STILLS:
                stills.append(_resize(image, (640, 360)))
        for packet in stream.encode():
            sink.mux(packet)
    sheet = args.debug_video.with_suffix(".jpg")
    _write_sheet(sheet, stills)
    size_mb = args.debug_video.stat().st_size / 1e6
    return [
        _row("debug video", _relative(args.debug_video), None, f"{size_mb:.1f} MB", "file"),
        _row(
            "debug frames", _relative(sheet), None, f"frames {', '.join(map(str, _STILLS))}", "file"
        ),
    ]


_STILLS = (0, 35, 70, 104)


def _relative(path: Path) -> str:
    return (
        str(path.resolve().relative_to(PROJECT_ROOT))
        if path.resolve().is_relative_to(PROJECT_ROOT)
        else str(path)
    )


def _write_sheet(path: Path, stills: list[np.ndarray]) -> None:
    """A 2x2 JPEG of the still frames (RGB)."""
    import cv2

    if len(stills) < 4:
        return
    grid = np.vstack([np.hstack(stills[:2]), np.hstack(stills[2:4])])
    cv2.imwrite(str(path), np.ascontiguousarray(grid[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 80])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    cli = argparse.ArgumentParser(prog="bench_detect")
    add_arguments(cli)
    for result in run(cli.parse_args()):
        print(result)
