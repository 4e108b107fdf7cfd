"""`facestream bench NAME [--json]`: run benchmarks/bench_NAME.py and print its table."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def summary(name: str) -> str:
    """The first line of benchmarks/bench_NAME.py's docstring, read without importing it
    (benchmarks import torch and more); '' when it has none."""
    try:
        tree = ast.parse((BENCH_DIR / f"bench_{name}.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ""
    lines = (ast.get_docstring(tree) or "").strip().splitlines()
    first = lines[0] if lines else ""
    return re.sub(r"^`?facestream bench \S+?`?:\s*", "", first).strip()


def listing() -> str:
    """Every benchmark with its summary, one a line, for `facestream bench --help`."""
    names = available()
    width = max((len(name) for name in names), default=0)
    rows = [f"  {name.ljust(width)}  {summary(name)}".rstrip() for name in names]
    return "benchmarks:\n" + "\n".join(rows) if rows else "no benchmarks in benchmarks/"


class _HelpWithListing(argparse.Action):
    """-h/--help of `bench`: its help with listing() below, read only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        parser.epilog = listing()
        parser.print_help()
        parser.exit()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    # add_help=False and an -h of its own: `bench NAME --help` goes to the benchmark's
    # parser (with NAME's options), only `bench --help` / `bench -h` is answered here.
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark from benchmarks/",
        add_help=False,
        description="Run benchmarks/bench_NAME.py and print its table (--json: its rows).\n"
        "`facestream bench NAME --help` lists a benchmark's own options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-h", "--help", action=_HelpWithListing, help="show this help and the benchmarks"
    )
    parser.add_argument("name", nargs="?", help="the benchmark to run (listed below)")
    parser.add_argument(
        "bench_argv", nargs=argparse.REMAINDER, help="the benchmark's own options, and --json"
    )
    parser.set_defaults(func=run)


def load(name: str) -> ModuleType:
    path = BENCH_DIR / f"bench_{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark {name!r}; known: {', '.join(available())}")
    if str(BENCH_DIR.parent) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR.parent))
    spec = importlib.util.spec_from_file_location(f"benchmarks.bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    if not args.name:
        print(
            "usage: facestream bench NAME [options] [--json]; benchmarks: "
            + ", ".join(available())
            + " (facestream bench --help describes them)",
            file=sys.stderr,
        )
        return 2
    try:
        module = load(args.name)
    except (FileNotFoundError, ImportError) as error:
        print(f"facestream: {error}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"facestream bench {args.name}")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    module.add_arguments(parser)
    own = parser.parse_args(args.bench_argv)
    rows = module.run(own)
    print(json.dumps(rows, indent=2, default=str) if own.json else format_table(rows))
    return 0
