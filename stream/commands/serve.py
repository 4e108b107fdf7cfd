"""`facestream serve`: the HTTP + WebRTC server."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the webcam filter, overlay and conversion pages",
        description="Run the HTTP + WebRTC server: the webcam filter page (/), the OBS "
        "overlay (/overlay), file conversion (/convert, /jobs), WHIP/WHEP and the JSON API. "
        "Options override the FACESTREAM_* environment variables (see the README).",
    )
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8080)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where the models run (default auto: CUDA when present, else the CPU)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "eager", "inductor", "tensorrt"),
        default=None,
        help="how models are compiled (default auto: TensorRT if installed, else "
        "torch.compile (inductor), else eager)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from stream.app import create_app
    from stream.commands.common import UsageError, check_device
    from stream.settings import Settings

    overrides = {
        k: getattr(args, k)
        for k in ("host", "port", "device", "backend")
        if getattr(args, k) is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"]))
        print(
            f"facestream: bad setting {where}: {first['msg']}"
            if where
            else f"facestream: {first['msg']}",
            file=sys.stderr,
        )
        return 2
    try:
        check_device(settings.resolved_device())
    except UsageError as error:
        print(f"facestream: {error}", file=sys.stderr)
        return 2
    print(f"facestream: open http://{settings.host}:{settings.port}/ in a browser", file=sys.stderr)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0
