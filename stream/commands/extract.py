"""`facestream extract VIDEO_OR_DIR OUTDIR`: aligned training faces for `train faceswap`."""

from __future__ import annotations

import argparse
import sys

from engines.alignment import DEFAULT_PADDING


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="cut aligned faces out of a video, an image or a folder of them (training data)",
        description="Detect and track faces, align each by its five landmarks and save it with "
        "its landmarks into OUTDIR (faces/*.png + manifest.json), ready for `facestream train faceswap`.",
    )
    parser.add_argument(
        "source", metavar="VIDEO_OR_DIR", help="a video, an image, or a folder of videos/images"
    )
    parser.add_argument(
        "out_dir", metavar="OUTDIR", help="folder to write faces/ and manifest.json into"
    )
    parser.add_argument(
        "--size", type=int, default=256, help="side of the saved faces in pixels (default 256)"
    )
    parser.add_argument(
        "--padding", type=float, default=DEFAULT_PADDING, help="margin around the face"
    )
    parser.add_argument("--every", type=int, default=1, help="use every Nth video frame")
    parser.add_argument(
        "--max-frames", type=int, default=None, help="stop after N used frames per video"
    )
    parser.add_argument(
        "--detect-max-side", type=int, default=1280, help="downscale frames to this for detection"
    )
    parser.add_argument(
        "--min-face", type=int, default=40, help="smallest face width kept, source pixels"
    )
    parser.add_argument("--min-score", type=float, default=0.95, help="lowest detection score kept")
    person = parser.add_mutually_exclusive_group()
    person.add_argument(
        "--keep",
        choices=("all", "largest"),
        default="all",
        help="all faces, or one person: the track with the largest total face area",
    )
    person.add_argument(
        "--track-id", type=int, default=None, help="keep only this track id (see the summary)"
    )
    parser.add_argument("--append", action="store_true", help="add to the faces already in OUTDIR")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.set_defaults(func=run)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from engines.errors import EngineError
    from stream.extract import (
        ExtractError,
        ExtractOptions,
        count_frames,
        extract_faces,
        list_inputs,
    )

    if args.size < 16 or args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        print(
            "facestream extract: --size must be >= 16, --every and --max-frames >= 1",
            file=sys.stderr,
        )
        return 2
    try:
        options = ExtractOptions(
            size=args.size,
            padding=args.padding,
            every=args.every,
            max_frames=args.max_frames,
            detect_max_side=args.detect_max_side,
            min_face=args.min_face,
            min_score=args.min_score,
            keep=args.keep,
            track_id=args.track_id,
            append=args.append,
            device=_device(args.device),
        )
        total = count_frames(list_inputs(Path(args.source)), options)
        with tqdm(total=total, unit="frame", desc="extract", file=sys.stderr) as bar:
            summary = extract_faces(
                Path(args.source), Path(args.out_dir), options, progress=bar.update
            )
    except (ExtractError, EngineError, ValueError, OSError) as error:
        print(f"facestream extract: {error}", file=sys.stderr)
        return 1
    tracks = ", ".join(
        f"{track}: {count}" for track, count in sorted(summary.tracks.items()) if track >= 0
    )
    print(
        f"{summary.kept} faces in {summary.manifest} ({summary.found} found in {summary.frames} frames)"
    )
    if tracks:
        print(f"faces per track id: {tracks}")
    return 0
