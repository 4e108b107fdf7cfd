"""`facestream effects`: every effect, its parameters and whether it can run here."""

from __future__ import annotations

import argparse
import json

from stream.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("effects", help="list effects, parameters and availability")
    parser.add_argument("--json", action="store_true", help="print the GET /effects JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engines.effects.base import EffectResources
    from engines.effects.registry import describe_effects

    settings = Settings()
    effects = describe_effects(EffectResources(weights_dir=settings.weights_dir))
    if args.json:
        print(json.dumps(effects, indent=2))
        return 0
    for effect in effects:
        status = "available" if effect["available"] else f"unavailable: {effect['reason']}"
        print(f"{effect['name']:<13} {effect['description']}  [{status}]")
        for name, spec in effect["params"].items():
            bounds = f" {spec['min']}..{spec['max']}" if spec["min"] is not None else ""
            choices = f" one of {', '.join(spec['choices'])}" if "choices" in spec else ""
            print(f"    {name:<20} {spec['type']:<6} default {spec['default']}{bounds}{choices}")
    return 0
