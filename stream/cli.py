"""The `facestream` command line. Each subcommand lives in stream/commands/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from stream.commands.common import describe_interrupt, interrupt_status, stop_signals_raise

_COMMANDS = ("serve", "convert", "effects", "bench", "extract", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facestream", description="Real-time face-effects video server and converter."
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log lines: -v info, -vv debug (default: warnings only; serve logs info)",
    )
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


def log_level(command: str, verbosity: int) -> int:
    """WARNING by default, so log lines do not break a progress bar; INFO for the server
    (its access and job logs) and with -v; DEBUG with -vv."""
    if verbosity >= 2:
        return logging.DEBUG
    return logging.INFO if verbosity == 1 or command == "serve" else logging.WARNING


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CommandFormatter(logging.Formatter):
    """A log line as a command's message: 'facestream: warning: ...' (the default
    verbosity of every command but serve, where only warnings and errors are shown)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"facestream: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class ProgressSafeHandler(logging.Handler):
    """Writes each line to the current sys.stderr through tqdm.write, which clears a
    progress bar there, writes the line above it and draws the bar again (a plain
    write lands inside the bar's line). Safe from any thread."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def log_handler(command: str, verbosity: int) -> logging.Handler:
    """The root handler for `command`: the server's log lines in full (time, level,
    logger) on stderr; another command's through ProgressSafeHandler, as
    'facestream: warning: ...' by default and in full with -v or -vv."""
    if command == "serve":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        handler = ProgressSafeHandler()
    full = command == "serve" or verbosity > 0
    handler.setFormatter(logging.Formatter(LOG_FORMAT) if full else CommandFormatter())
    return handler


@contextmanager
def command_logging(command: str, verbosity: int) -> Iterator[None]:
    """Logging set up for one command (log_level, log_handler) and put back afterwards,
    so main() called again in one process (tests, scripts) neither doubles lines nor
    keeps another run's level."""
    root = logging.getLogger()
    handler, level = log_handler(command, verbosity), root.level
    root.addHandler(handler)
    root.setLevel(log_level(command, verbosity))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    quiet_openmp()
    parser = build_parser()
    args = parser.parse_args(argv)
    # The server has its own signal handling (uvicorn); every other command unwinds on
    # SIGTERM / SIGHUP as on Ctrl-C, so what it leaves half-done is cleaned up.
    signals = nullcontext() if args.command == "serve" else stop_signals_raise()
    try:
        with command_logging(args.command, args.verbose), signals:
            return int(args.func(args) or 0)
    except KeyboardInterrupt as error:
        print(f"facestream: {describe_interrupt(error)}", file=sys.stderr)
        return interrupt_status(error)


if __name__ == "__main__":
    sys.exit(main())
