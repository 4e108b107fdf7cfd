"""The effect interface, its parameter specs and parameter validation.

An effect turns one RGB uint8 frame (HxWx3, numpy, host memory) plus the tracked
faces in it into the output frame. One instance serves one session or one file,
so it may keep per-track state (smoothing); heavy models are shared through
cached loaders, never reloaded per instance.
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from engines.batching import SchedulerPool
from engines.errors import EffectUnavailable, InvalidParams, ModelLoadError
from engines.types import Face

ParamType = Literal["float", "int", "bool", "color", "choice", "face"]
Color = tuple[int, int, int]

logger = logging.getLogger(__name__)

_HEX_COLOR = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class ParamSpec:
    """One effect parameter as shown by `GET /effects` and checked on input.

    type: "float" | "int" | "bool" | "color" (RGB triple, also accepted as
        "#rrggbb" or "r,g,b") | "choice" (one of `choices`) | "face" (a face_id
        from `POST /faces`, or empty).
    """

    type: ParamType
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "type": self.type,
            "default": list(self.default) if self.type == "color" else self.default,
            "min": self.min,
            "max": self.max,
        }
        if self.choices:
            described["choices"] = list(self.choices)
        if self.help:
            described["help"] = self.help
        return described

    def coerce(self, name: str, value: Any) -> Any:
        """Return `value` converted to this parameter's type, or raise InvalidParams."""
        if self.type == "color":
            return _coerce_color(name, value)
        if self.type == "bool":
            return _coerce_bool(name, value)
        if self.type == "choice":
            if str(value) not in self.choices:
                raise InvalidParams(
                    f"{name} must be one of {', '.join(self.choices)}, got {value!r}"
                )
            return str(value)
        if self.type == "face":
            return "" if value is None else str(value)
        return self._coerce_number(name, value)

    def _coerce_number(self, name: str, value: Any) -> float | int:
        if isinstance(value, bool):
            raise InvalidParams(f"{name} must be a number, got {value!r}")
        try:
            number: float | int = int(value) if self.type == "int" else float(value)
        except (TypeError, ValueError):
            raise InvalidParams(
                f"{name} must be {'an integer' if self.type == 'int' else 'a number'}, got {value!r}"
            ) from None
        if self.type == "float" and not np.isfinite(number):
            raise InvalidParams(f"{name} must be a finite number, got {value!r}")
        if (self.min is not None and number < self.min) or (
            self.max is not None and number > self.max
        ):
            raise InvalidParams(f"{name} must be between {self.min} and {self.max}, got {number}")
        return number


def _coerce_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise InvalidParams(f"{name} must be true or false, got {value!r}")


def _coerce_color(name: str, value: Any) -> Color:
    channels: list[Any]
    if isinstance(value, str):
        match = _HEX_COLOR.match(value.strip())
        if match:
            digits = match.group(1)
            return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
        channels = value.split(",")
    elif isinstance(value, list | tuple):
        channels = list(value)
    else:
        channels = []
    try:
        rgb = tuple(int(c) for c in channels)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise InvalidParams(
            f"{name} must be an RGB colour (three values 0-255 or #rrggbb), got {value!r}"
        )
    return (rgb[0], rgb[1], rgb[2])


@dataclass(frozen=True)
class EffectResources:
    """What an effect may draw on besides its parameters.

    weights_dir: the project's weights/ folder (trained and downloaded models).
    device: "cpu" or "cuda[:N]".
    source_faces: face_id -> RGB uint8 image of an uploaded swap source.
    model_path: a model file given explicitly (`--model`), overriding the default.
    backend: the compile backend asked for at start ("auto", "eager", "inductor", "tensorrt");
        effects with their own networks compile them with it on a GPU.
    batching: the server's cross-session batch schedulers (live sessions, when batching is
        on); effects with their own networks send their model calls through them.
    remote_users: the effect is chosen by users of the HTTP server, not on this machine's
        command line: reasons and errors name no server paths and no command-line options,
        and point to the server's operator (REMOTE_MODEL_ADVICE) instead.
    """

    weights_dir: Path = Path("weights")
    device: str = "cpu"
    source_faces: Mapping[str, np.ndarray] = field(default_factory=dict)
    model_path: Path | None = None
    backend: str = "auto"
    batching: SchedulerPool | None = None
    remote_users: bool = False


# What a remote user can do about an effect whose model is not installed on the server.
REMOTE_MODEL_ADVICE = (
    "choose another effect, or ask the server's operator to install it "
    "(`facestream effects` on the server says how)"
)


def model_load_failed(
    effect: str, error: ModelLoadError, resources: EffectResources
) -> EffectUnavailable:
    """The error for an effect whose model file does not load: the loader's reason on the
    command line; for remote users one without the server's paths (logged here instead)."""
    if not resources.remote_users:
        return EffectUnavailable(f"effect {effect!r} cannot load its model: {error}")
    logger.warning("effect %r cannot load its model: %s", effect, error)
    return EffectUnavailable(
        f"effect {effect!r} cannot load the model installed on this server: ask the "
        "server's operator to check it (the server's log says why)"
    )


class Effect(abc.ABC):
    """One frame effect. `apply` runs in the model worker thread, never on the event loop."""

    name: ClassVar[str]

    @abc.abstractmethod
    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Return the processed frame.

        frame: HxWx3 uint8 RGB, C-contiguous; the effect may modify it in place.
        faces: the tracked faces in this frame (empty when the effect needs none).
        Returns an HxWx3 uint8 RGB array of the same size.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free per-instance resources; shared models stay loaded."""


@dataclass(frozen=True)
class EffectSpec:
    """Everything facestream knows about an effect before making one.

    needs_faces: the pipeline runs detection and tracking for it.
    needs_landmarks68: the pipeline fills Face.landmarks68 for it.
    changes_identity: output shows a synthetic identity: labelled "AI-modified".
    unavailable_reason: returns None when the effect can run with these resources,
        else a sentence saying why not and what to do.
    factory: builds an instance from validated parameters.
    """

    name: str
    description: str
    params: Mapping[str, ParamSpec]
    factory: Callable[[Mapping[str, Any], EffectResources], Effect]
    needs_faces: bool = False
    needs_landmarks68: bool = False
    changes_identity: bool = False
    unavailable_reason: Callable[[EffectResources], str | None] = lambda _resources: None

    def validate(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with `raw`, each value coerced; unknown keys are an error."""
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise InvalidParams(
                f"params of {self.name} must be an object, got {type(raw).__name__}"
            )
        unknown = sorted(set(raw) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise InvalidParams(
                f"unknown parameter(s) for {self.name}: {', '.join(map(str, unknown))} (known: {known})"
            )
        values = {key: spec.default for key, spec in self.params.items()}
        for key, value in raw.items():
            values[key] = self.params[key].coerce(key, value)
        return values

    def face_ids(self, params: Mapping[str, Any]) -> list[str]:
        """The uploaded faces (face_ids) `params` give this effect's face parameters, in
        the order the parameters are declared."""
        return [
            str(params[name])
            for name, param in self.params.items()
            if param.type == "face" and params.get(name)
        ]

    def describe(self, resources: EffectResources) -> dict[str, Any]:
        reason = self.unavailable_reason(resources)
        return {
            "name": self.name,
            "description": self.description,
            "params": {key: spec.describe() for key, spec in self.params.items()},
            "needs_faces": self.needs_faces,
            "available": reason is None,
            "reason": reason,
        }
