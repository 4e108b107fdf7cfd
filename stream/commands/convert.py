"""`facestream convert INPUT OUTPUT --effect NAME ...`: one video file through the pipeline.

Every frame is processed (none dropped), the audio is copied unchanged, frame count
and timestamps are kept; the output is H.264 (MP4 by default, faststart). Bad input
ends with one line `facestream: ...` on stderr and exit status 2; a failure while
converting (an input damaged beyond the few frames skipped, an FFmpeg or disk error)
with status 1. Nothing is left behind on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stream.commands.common import (
    UsageError,
    check_device,
    describe_interrupt,
    interrupt_status,
    local_path,
    one_line,
)

SOURCE_FACE_ID = "cli"
# A photo's stated size is read from this much of its start (JPEG metadata may come first).
_HEADER_BYTES = 1 << 20
__all__ = ["SOURCE_FACE_ID", "UsageError", "add_parser", "parse_params", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="apply an effect to a video file (audio and timing kept)",
        description="Apply an effect to every frame of a video file. Example: "
        "facestream convert in.mp4 out.mp4 --effect cartoon --param levels=6",
    )
    # Paths are made in run(): argparse's type=Path would turn a URL's "//" into "/".
    parser.add_argument("input", help="the video file to convert (a local file, not a URL)")
    parser.add_argument("output", help="where to write the result (.mp4, .mov or .mkv)")
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
        "--model",
        type=Path,
        metavar="PATH",
        help="a model file overriding the effect's default (for gan_swap also the folder "
        "`facestream train faceswap --out` wrote)",
    )
    parser.add_argument(
        "--crf", type=int, help="H.264 quality, 0 (lossless) .. 51 (worst); default 21"
    )
    parser.add_argument(
        "--preset",
        choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
        help="x264 speed/size trade-off (default superfast; veryfast: smaller files, more CPU)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where the models run (default auto: CUDA when present, else the CPU)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="info log lines (-vv: debug); by default only warnings, under the progress bar",
    )
    parser.set_defaults(func=run)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings to a dict of strings (the effect coerces them to its types)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param must look like KEY=VALUE, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def _load_face(path: Path, models: Any) -> Any:
    """The RGB image at `path`, held to POST /faces' rule: exactly one face (faces much
    smaller than the largest, on posters in the background, are not counted)."""
    import cv2

    from engines.errors import NoFaceFound, TooManyFaces
    from stream.face_store import find_single_face
    from stream.security.image_size import MAX_IMAGE_PIXELS, pixel_size

    if not path.is_file():
        raise UsageError(f"source face {path} does not exist")
    with path.open("rb") as handle:
        size = pixel_size(handle.read(_HEADER_BYTES))
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise UsageError(
            f"source face {path} is {size[0]}x{size[1]} pixels, more than the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels: make it smaller (for example 2000 "
            "pixels on the longer side)"
        )
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f"source face {path} is not a readable image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        find_single_face(rgb, models.detector, verb="give")
    except (NoFaceFound, TooManyFaces) as error:
        raise UsageError(f"--source-face {path}: {error}") from None
    return rgb


def _takes_model(spec: Any) -> bool:
    """Whether an effect reads --model: its module resolves a model path (gan_swap,
    neural_style: `resolve_model_path`)."""
    import importlib

    module = importlib.import_module(spec.factory.__module__)
    return hasattr(module, "resolve_model_path")


def _check_faces(args: argparse.Namespace, spec: Any, params: dict[str, Any]) -> None:
    """A face parameter needs --source-face here (face ids belong to a server)."""
    for name, param in spec.params.items():
        if param.type != "face":
            continue
        value = str(params.get(name) or "")
        if value and (value != SOURCE_FACE_ID or args.source_face is None):
            raise UsageError(
                f"--param {name}={value} names a face stored on a server; on the command line "
                "give the photo itself: --source-face IMAGE --consent"
            )
        if not value:
            raise UsageError(
                f"effect {spec.name!r} needs a source face: give a photo of the person "
                "who agreed with --source-face IMAGE --consent"
            )


def _prepare(args: argparse.Namespace, settings: Any, device: str) -> tuple[Any, Any, dict]:
    """(resources, models, params) for the effect, every command-line value checked."""
    from engines.effects.registry import get_effect_spec
    from stream.convert import prepare_params
    from stream.models import SharedModels
    from stream.services import effect_resources

    spec = get_effect_spec(args.effect)
    if args.source_face is not None and not args.consent:
        raise UsageError(
            "--source-face needs --consent: confirm that the person in the image agreed "
            "to the use of their face"
        )
    params = prepare_params(
        args.effect, parse_params(args.param), SOURCE_FACE_ID if args.source_face else None
    )
    _check_faces(args, spec, params)
    if args.model is not None and not _takes_model(spec):
        raise UsageError(f"effect {args.effect!r} takes no model: leave out --model")
    if args.model is not None and not args.model.exists():
        raise UsageError(f"model file {args.model} does not exist")
    models = SharedModels(settings, device)
    faces = {}
    if args.source_face is not None:
        faces[SOURCE_FACE_ID] = _load_face(args.source_face, models)
    resources = effect_resources(settings, device, faces, model_path=args.model)
    return resources, models, params


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
    from stream.convert import check_output, convert_file
    from stream.face_process import FaceProcessError
    from stream.media_damage import DamagedMedia
    from stream.media_limits import MediaRejected
    from stream.provenance import ProvenanceError
    from stream.settings import Settings

    bar = None
    faces = None
    try:
        args.input = local_path(args.input, "input")
        args.output = local_path(args.output, "output")
        settings = Settings(**({"device": args.device} if args.device else {}))
        if args.crf is not None and not 0 <= args.crf <= 51:
            raise UsageError(f"--crf must be between 0 and 51, got {args.crf}")
        check_output(args.input, args.output)
        device = check_device(settings.resolved_device())
        resources, models, params = _prepare(args, settings, device)
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
            models=models,
            faces=faces,
        )
    except KeyboardInterrupt as error:  # Ctrl-C, SIGTERM, SIGHUP: the output was removed
        message = f"{describe_interrupt(error)}; no output was written"
        return _fail(bar, message, interrupt_status(error))
    except DamagedMedia as error:  # a ValueError, but found while converting
        return _fail(bar, one_line(error), 1)
    except (UsageError, MediaRejected, EngineError, ValidationError) as error:
        return _fail(bar, one_line(error), 2)
    except (FFmpegError, OSError, ProvenanceError, FaceProcessError) as error:
        # before ValueError: FFmpeg's InvalidDataError (and others) are ValueErrors too
        return _fail(bar, f"conversion failed: {one_line(error)}", 1)
    except ValueError as error:
        return _fail(bar, one_line(error), 2)
    finally:
        if faces is not None:
            faces.close()
    _close(bar, frames=result.frames)
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


def _close(holder: list[Any] | None, frames: int | None = None) -> None:
    """Close the bar; `frames`: the conversion finished with that many frames, so the
    bar's total (an estimate from the container) becomes the real count: 100 %."""
    for bar in holder or ():
        if frames is not None:
            bar.total = frames
            bar.update(frames - bar.n)
            bar.refresh()
        bar.close()


def _fail(holder: list[Any] | None, message: str, status: int) -> int:
    _close(holder)
    print(f"facestream: {message}", file=sys.stderr)
    return status
