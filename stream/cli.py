"""The `facestream` command line. Each subcommand lives in stream/commands/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

_COMMANDS = ("serve", "convert", "effects", "bench", "extract", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facestream", description="Real-time face-effects video server and converter."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        module = importlib.import_module(f"stream.commands.{name}")
        module.add_parser(subparsers)
    return parser


def quiet_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spin; must run before torch is imported.

    GNU OpenMP's workers busy-wait between parallel regions; next to the video decoder,
    encoder and event-loop threads on a 2-core CPU they burn the cores the pipeline needs
    (a 720p makeup conversion: 33-50 s spinning, 6 s passive; benchmarks/RESULTS.md).
    An explicit OMP_WAIT_POLICY in the environment wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    quiet_openmp()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("facestream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
