"""The per-frame pipeline: stages that run in order on one frame.

A session (or a file conversion) owns one :class:`EffectPipeline`. It runs in
the model worker thread: `process` is synchronous and never touches the event
loop. Changing the effect keeps the face tracks, so a live switch does not make
faces jump.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engines.effects.base import Effect, EffectSpec
from engines.types import Face

logger = logging.getLogger(__name__)

TimingObserver = Callable[[str, float], None]


@dataclass
class FrameContext:
    """One frame on its way through the stages.

    image: HxWx3 uint8 RGB (host memory); stages may replace it.
    index: frame number within the session or file, from 0.
    time_s: the frame's presentation time in seconds (pts * time_base, on the source's
        clock: only differences between frames mean anything); None when unknown.
    faces: the tracked faces, filled by the face stage.
    timings: stage name -> seconds spent on this frame.
    """

    image: np.ndarray
    index: int
    time_s: float | None = None
    faces: list[Face] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Stage(Protocol):
    """One step of the pipeline. Implementations keep their own per-session state."""

    name: str

    def process(self, ctx: FrameContext) -> None:
        """Read and update `ctx` in place."""

    def reset(self) -> None:
        """Forget per-session state (tracks, smoothing)."""


class EffectStage:
    """Applies an effect to the frame and its faces."""

    name = "effect"

    def __init__(self, effect: Effect) -> None:
        self.effect = effect

    def process(self, ctx: FrameContext) -> None:
        ctx.image = self.effect.apply(ctx.image, ctx.faces)

    def reset(self) -> None:
        pass


class GivenFaces:
    """Stands in for the face stage with faces found elsewhere: the next list of `found`."""

    name = "faces"

    def __init__(self, found: Iterator[list[Face]]) -> None:
        self.found = found

    def process(self, ctx: FrameContext) -> None:
        try:
            ctx.faces = next(self.found)
        except StopIteration:
            raise RuntimeError(f"no faces were found for frame {ctx.index}") from None

    def reset(self) -> None:
        pass


StageFactory = Callable[[], Stage]


@dataclass(frozen=True)
class StageFactories:
    """How to make the stages an effect may need; each is built at most once per pipeline.

    face: detection + tracking (needed by effects with `needs_faces`).
    landmarks68: dense landmarks (needed by effects with `needs_landmarks68`).
    label: the visible "AI-modified" label (for effects with `changes_identity`),
        None when the operator turned labelling off.
    """

    face: StageFactory | None = None
    landmarks68: StageFactory | None = None
    label: StageFactory | None = None


class EffectPipeline:
    """Face stages (as the effect needs them), then the effect, then the label."""

    def __init__(
        self,
        spec: EffectSpec,
        effect: Effect,
        factories: StageFactories,
        observe: TimingObserver | None = None,
    ) -> None:
        self._factories = factories
        self._observe = observe
        self._built: dict[str, Stage] = {}
        self._frame_index = 0
        self.spec = spec
        self.effect = effect
        self._stages: Sequence[Stage] = self._stages_for(spec, effect)

    def _stage(self, key: str, factory: StageFactory | None) -> Stage:
        if factory is None:
            raise RuntimeError(f"the {key} stage is not available in this pipeline")
        if key not in self._built:
            self._built[key] = factory()
        return self._built[key]

    def _stages_for(self, spec: EffectSpec, effect: Effect) -> list[Stage]:
        stages: list[Stage] = []
        if spec.needs_faces or spec.needs_landmarks68:
            stages.append(self._stage("face", self._factories.face))
        if spec.needs_landmarks68:
            stages.append(self._stage("landmarks68", self._factories.landmarks68))
        stages.append(EffectStage(effect))
        if spec.changes_identity and self._factories.label is not None:
            stages.append(self._stage("label", self._factories.label))
        return stages

    def set_effect(self, spec: EffectSpec, effect: Effect) -> None:
        """Switch to another effect; face tracks are kept. Call from the worker thread."""
        old = self.effect
        self._stages = self._stages_for(spec, effect)
        self.spec, self.effect = spec, effect
        old.close()

    def process(self, image: np.ndarray, time_s: float | None = None) -> FrameContext:
        """Run every stage on one HxWx3 uint8 RGB frame; returns the finished context.

        time_s: the frame's presentation time in seconds (see FrameContext), None when
        unknown (smoothing then assumes a fixed frame rate).
        """
        return self.finish(self.begin(image, time_s=time_s))

    def begin(
        self,
        image: np.ndarray,
        found: Iterator[list[Face]] | None = None,
        time_s: float | None = None,
    ) -> FrameContext:
        """The first part of `process`: the face stage (when the effect needs one).

        found: the faces of this and the following frames, found elsewhere (a
        conversion's stream.face_process); one list is taken from it instead of
        running the face stage. `begin` and `finish` must each be called for every
        frame, in order; `set_effect` only while no frame is between them.
        """
        ctx = FrameContext(
            image=np.ascontiguousarray(image), index=self._frame_index, time_s=time_s
        )
        self._frame_index += 1
        front = self._stages[: self._front_count()]
        self._run(front if found is None or not front else [GivenFaces(found)], ctx)
        return ctx

    @property
    def needs_faces(self) -> bool:
        """Whether the current effect runs the face stage."""
        return self._front_count() > 0

    def finish(self, ctx: FrameContext) -> FrameContext:
        """The rest of `process` for a context from `begin`: landmarks, effect, label."""
        self._run(self._stages[self._front_count() :], ctx)
        return ctx

    def _front_count(self) -> int:
        face = self._built.get("face")
        return 1 if face is not None and self._stages and self._stages[0] is face else 0

    def _run(self, stages: Sequence[Stage], ctx: FrameContext) -> None:
        for stage in stages:
            started = time.perf_counter()
            stage.process(ctx)
            elapsed = time.perf_counter() - started
            ctx.timings[stage.name] = elapsed
            if self._observe is not None:
                self._observe(stage.name, elapsed)

    def reset(self) -> None:
        for stage in self._built.values():
            stage.reset()
        self._frame_index = 0

    def close(self) -> None:
        self.effect.close()
