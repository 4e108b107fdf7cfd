"""`facestream extract VIDEO_OR_DIR OUTDIR`: aligned training faces for `train faceswap`.

As with `convert`, a bad input or option ends with one line `facestream: ...` and exit
status 2 (videos are opened and judged as convert opens its input), a failure while
extracting (a video damaged beyond the few frames skipped, nothing kept) with status 1.
"""

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
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where face detection runs (default auto: CUDA when present, else the CPU)",
    )
    parser.set_defaults(func=run)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    from av.error import FFmpegError
    from tqdm import tqdm

    from engines.errors import EngineError
    from stream.commands.common import UsageError, local_path, one_line
    from stream.extract import (
        ExtractError,
        ExtractInputError,
        ExtractOptions,
        count_frames,
        extract_faces,
        list_inputs,
    )
    from stream.media_damage import DamagedMedia
    from stream.media_limits import MediaRejected

    if args.size < 16 or args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        print("facestream: --size must be >= 16, --every and --max-frames >= 1", file=sys.stderr)
        return 2
    try:
        source, out_dir = local_path(args.source, "input"), local_path(args.out_dir, "output")
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
        total = count_frames(list_inputs(source), options)
        with tqdm(total=total, unit="frame", desc="extract", file=sys.stderr) as bar:
            summary = extract_faces(source, out_dir, options, progress=bar.update)
    except DamagedMedia as error:  # a ValueError, but found while extracting
        return _fail(one_line(error), 1)
    except (UsageError, MediaRejected, ExtractInputError) as error:
        return _fail(one_line(error), 2)
    except (ExtractError, EngineError, FFmpegError, OSError, ValueError) as error:
        return _fail(one_line(error), 1)
    tracks = ", ".join(
        f"{track}: {count}" for track, count in sorted(summary.tracks.items()) if track >= 0
    )
    print(
        f"{summary.kept} faces in {summary.manifest} ({summary.found} found in {summary.frames} frames)"
    )
    if tracks:
        print(f"faces per track id: {tracks}")
    return 0


def _fail(message: str, status: int) -> int:
    print(f"facestream: {message}", file=sys.stderr)
    return status
