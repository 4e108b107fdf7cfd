"""The pipeline stage that marks swapped frames with the visible "AI-modified" label.

EffectPipeline adds it after every effect whose spec has `changes_identity`;
the operator may turn it off (Settings.label_swaps), a user cannot (it is not an
effect parameter). A frame is labelled when at least one face was changed on
it, i.e. when the face stage left faces in the frame context; a frame without
faces comes out unlabelled.
"""

from __future__ import annotations

import logging

import numpy as np

from engines.label import DEFAULT_STYLE, LabelStyle, draw_label
from stream.pipeline import FrameContext

logger = logging.getLogger(__name__)


class LabelStage:
    """Draws the label on frames with changed faces (Stage protocol, name "label")."""

    name = "label"

    def __init__(self, enabled: bool, style: LabelStyle = DEFAULT_STYLE) -> None:
        self.enabled = enabled
        self.style = style
        self.labelled = 0
        if not enabled:
            logger.warning(
                "the 'AI-modified' label on swapped output is turned off by the operator"
            )

    def process(self, ctx: FrameContext) -> None:
        """Label `ctx.image` (HxWx3 uint8 RGB) in place when a face on it was changed."""
        if not self.enabled or not ctx.faces:
            return
        image = ctx.image
        if not image.flags.writeable or not image.flags.c_contiguous:
            image = np.ascontiguousarray(image).copy()
        try:
            ctx.image = draw_label(image, self.style)
        except ValueError:
            logger.debug("frame %dx%d too small for the label", image.shape[1], image.shape[0])
            return
        self.labelled += 1

    def reset(self) -> None:
        pass
