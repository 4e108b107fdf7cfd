"""`facestream convert INPUT OUTPUT --effect NAME ...`: one video file through the pipeline.

Every frame is processed (none dropped), the audio is copied unchanged, frame count
and timestamps are kept; the output is H.264 (MP4 by default, faststart). Bad input
ends with one line `facestream: ...` on stderr and exit status 2; a failure while
converting with status 1. Nothing is left behind on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SOURCE_FACE_ID = "cli"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="apply an effect to a video file (audio and timing kept)",
        description="Apply an effect to every frame of a video file. Example: "
        "facestream convert in.mp4 out.mp4 --effect cartoon --param levels=6",
    )
    parser.add_argument("input", type=Path, help="the video to convert")
    parser.add_argument("output", type=Path, help="where to write the result (.mp4, .mov or .mkv)")
    parser.add_argument("--effect", required=True, help="effect name (see `facestream effects`)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an effect parameter (repeatable)",
    )
    parser.add_argument(
        "--source-face", type=Path, metavar="IMAGE", help="the face to swap in (swap effects)"
    )
    parser.add_argument(
        "--consent",
        action="store_true",
        help="confirm that the person in --source-face agreed to this use of their face "
        "(required with --source-face)",
    )
    parser.add_argument(
        "--model", type=Path, metavar="PATH", help="a model file overriding the effect's default"
    )
    parser.add_argument(
        "--crf", type=int, help="H.264 quality, 0 (lossless) .. 51 (worst); default 21"
    )
    parser.add_argument(
        "--preset",
        choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
        help="x264 speed/size trade-off (default superfast; veryfast: smaller files, more CPU)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


class UsageError(ValueError):
    """A command-line value that cannot be used; exit status 2."""


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings to a dict of strings (the effect coerces them to its types)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param must look like KEY=VALUE, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def _load_face(path: Path) -> Any:
    import cv2

    if not path.is_file():
        raise UsageError(f"source face {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f"source face {path} is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _resources(args: argparse.Namespace, settings: Any, device: str) -> Any:
    from stream.services import effect_resources

    faces = {}
    if args.source_face is not None:
        if not args.consent:
            raise UsageError(
                "--source-face needs --consent: confirm that the person in the image agreed "
                "to the use of their face"
            )
        faces[SOURCE_FACE_ID] = _load_face(args.source_face)
    if args.model is not None and not args.model.is_file():
        raise UsageError(f"model file {args.model} does not exist")
    return effect_resources(settings, device, faces, model_path=args.model)


def _progress_bar(args: argparse.Namespace) -> tuple[Any, list[Any] | None]:
    """(callback, bars) — a tqdm bar with frames, fps and time left; (None, None) when quiet."""
    if args.quiet:
        return None, None
    from tqdm import tqdm

    holder: list[Any] = []

    def update(progress: Any) -> None:
        if not holder:  # made at the first frame, so early errors print no empty bar
            holder.append(
                tqdm(
                    total=progress.frames_total,
                    unit="frame",
                    desc=args.input.name,
                    dynamic_ncols=True,
                    file=sys.stderr,
                )
            )
        bar = holder[0]
        if bar.total != progress.frames_total:
            bar.total = progress.frames_total
        bar.update(progress.frames_done - bar.n)

    return update, holder


def run(args: argparse.Namespace) -> int:
    from av.error import FFmpegError
    from pydantic import ValidationError

    from engines.errors import EngineError
    from stream.convert import convert_file, prepare_params
    from stream.face_process import FaceProcessError
    from stream.media_probe import MediaRejected
    from stream.provenance import ProvenanceError
    from stream.settings import Settings

    bar = None
    faces = None
    try:
        settings = Settings(**({"device": args.device} if args.device else {}))
        if args.crf is not None and not 0 <= args.crf <= 51:
            raise UsageError(f"--crf must be between 0 and 51, got {args.crf}")
        resources = _resources(args, settings, settings.resolved_device())
        params = prepare_params(
            args.effect, parse_params(args.param), SOURCE_FACE_ID if args.source_face else None
        )
        callback, bar = _progress_bar(args)
        faces = _face_process(args.effect, settings, args.input)  # starts while the rest loads
        result = convert_file(
            args.input,
            args.output,
            args.effect,
            params,
            resources,
            settings,
            progress=callback,
            encode=_encode_options(args),
            faces=faces,
        )
    except (UsageError, MediaRejected, EngineError, ValidationError, ValueError) as error:
        return _fail(bar, _one_line(error), 2)
    except (FFmpegError, OSError, ProvenanceError, FaceProcessError) as error:
        return _fail(bar, f"conversion failed: {_one_line(error)}", 1)
    finally:
        if faces is not None:
            faces.close()
    _close(bar)
    print(
        f"facestream: wrote {result.output} ({result.frames} frames, "
        f"{result.audio_packets} audio packets) "
        f"in {result.wall_s:.1f} s, {result.realtime_ratio:.2f}x real time",
        file=sys.stderr,
    )
    return 0


def _face_process(effect: str, settings: Any, input: Path) -> Any:
    """A FaceProcess for an effect with faces when Settings.face_process wants one for this
    input (its length, the device), else None."""
    from engines.effects.registry import get_effect_spec
    from stream.face_process import FaceProcess, wanted
    from stream.media_probe import probe

    spec = get_effect_spec(effect)  # UnknownEffect here is the CLI's one-line error
    if not (spec.needs_faces or spec.needs_landmarks68):
        return None
    frames = probe(input).frames  # MediaRejected here is the CLI's one-line error
    return FaceProcess(settings) if wanted(settings, settings.resolved_device(), frames) else None


def _encode_options(args: argparse.Namespace) -> Any:
    """EncodeOptions with --crf / --preset where given (the defaults live there)."""
    from stream.convert import EncodeOptions

    given = {"crf": args.crf, "preset": args.preset}
    return EncodeOptions(**{name: value for name, value in given.items() if value is not None})


def _one_line(error: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _close(holder: list[Any] | None) -> None:
    for bar in holder or ():
        bar.close()


def _fail(holder: list[Any] | None, message: str, status: int) -> int:
    _close(holder)
    print(f"facestream: {message}", file=sys.stderr)
    return status
