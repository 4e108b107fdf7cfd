"""Effect lookup by name. Effect modules are imported on first use, not at import time."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from functools import cache
from typing import Any

from engines.effects.base import Effect, EffectResources, EffectSpec
from engines.errors import EffectUnavailable, UnknownEffect

logger = logging.getLogger(__name__)

# Each module defines SPECS: a tuple of EffectSpec. Order here is the order users see.
_EFFECT_MODULES = (
    "engines.effects.filters",  # none, cartoon, sketch, stylize
    "engines.effects.makeup",
    "engines.effects.swap",
    "engines.effects.gan_swap",
    "engines.effects.neural_style",
    "engines.effects.blur",
    "engines.effects.debug",
)


@cache
def all_effects() -> Mapping[str, EffectSpec]:
    """name -> spec for every effect facestream knows, in display order."""
    specs: dict[str, EffectSpec] = {}
    for module_name in _EFFECT_MODULES:
        module = importlib.import_module(module_name)
        for spec in module.SPECS:
            specs[spec.name] = spec
    return specs


def get_effect_spec(name: str) -> EffectSpec:
    specs = all_effects()
    if name not in specs:
        raise UnknownEffect(f"unknown effect {name!r}; known effects: {', '.join(specs)}")
    return specs[name]


def build_effect(name: str, params: Mapping[str, Any] | None, resources: EffectResources) -> Effect:
    """Validate `params` for effect `name` and build it.

    Raises UnknownEffect, InvalidParams or EffectUnavailable with a message for the user.
    """
    spec = get_effect_spec(name)
    values = spec.validate(params)
    reason = spec.unavailable_reason(resources)
    if reason is not None:
        raise EffectUnavailable(f"effect {name!r} is not available here: {reason}")
    return spec.factory(values, resources)


def describe_effects(resources: EffectResources) -> list[dict[str, Any]]:
    """The `GET /effects` body: one entry per effect, with availability and reason."""
    return [spec.describe(resources) for spec in all_effects().values()]
