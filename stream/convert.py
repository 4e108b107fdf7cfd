"""Offline video conversion: every frame of a file through the effect pipeline.

Unlike a live session nothing is dropped: frames are processed in order, one by one,
by the same :class:`EffectPipeline` the webcam filter uses. Three threads overlap the
work: a reader (demux + decode + RGB), the calling thread (the pipeline; it owns the
models, like a device worker), and a writer (H.264 encode + mux). Queues between them
are bounded. Given a :class:`stream.face_process.FaceProcess` (on a CPU), the face
stage runs in that process instead, over the same file, so a second core is used
without the threads fighting over Python's interpreter lock. Audio and subtitle tracks
and attachments are kept (stream.convert_writer), video timestamps are kept,
and the result is written to ``OUTPUT.part-XXXX`` next to OUTPUT and renamed at the end,
so an interrupted run leaves no half file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.effects.base import EffectResources, EffectSpec
from engines.effects.registry import build_effect, get_effect_spec
from stream.convert_io import FrameReader, Pump
from stream.convert_output import (
    OUTPUT_FORMATS,
    check_output,
    mark_output,
    output_format,
    temp_path,
)
from stream.convert_types import (
    ConvertCancelled,
    ConvertProgress,
    ConvertResult,
    EncodeOptions,
    ProgressCallback,
)
from stream.convert_writer import FrameWriter, OutputSpec
from stream.media_info import MediaInfo, describe
from stream.media_limits import MediaLimits
from stream.media_probe import check, check_running, open_input, probe
from stream.models import SharedModels
from stream.pipeline import EffectPipeline, TimingObserver
from stream.provenance import ProvenanceInfo, check_markable, provenance_tags
from stream.settings import Settings

if TYPE_CHECKING:
    from stream.face_process import FaceProcess, FaceStream

logger = logging.getLogger(__name__)

__all__ = [
    "OUTPUT_FORMATS",
    "ConvertCancelled",
    "ConvertProgress",
    "ConvertResult",
    "EncodeOptions",
    "ProgressCallback",
    "build_pipeline",
    "check_output",
    "convert_file",
    "convert_with_pipeline",
    "output_format",
    "prepare_params",
]


def prepare_params(
    effect_name: str, params: Mapping[str, Any], source_face: str | None
) -> dict[str, Any]:
    """`params` with every face parameter set to `source_face` unless given.

    Raises UnknownEffect, or InvalidParams when a source face is given to an effect
    that takes none.
    """
    spec = get_effect_spec(effect_name)
    prepared = dict(params)
    if source_face is None:
        return prepared
    face_params = [name for name, param in spec.params.items() if param.type == "face"]
    if not face_params:
        from engines.errors import InvalidParams

        raise InvalidParams(f"effect {effect_name!r} takes no source face")
    for name in face_params:
        prepared.setdefault(name, source_face)
    return prepared


def build_pipeline(
    effect_name: str,
    params: Mapping[str, Any],
    resources: EffectResources,
    models: SharedModels,
    observe: TimingObserver | None = None,
) -> EffectPipeline:
    """A pipeline for one file, built in the calling thread (which then owns its models).

    observe: called with (stage name, seconds) for every stage of every frame.
    Raises UnknownEffect, InvalidParams or EffectUnavailable.
    """
    spec = get_effect_spec(effect_name)
    effect = build_effect(effect_name, params, resources)
    return EffectPipeline(spec, effect, models.stage_factories(), observe)


def convert_file(
    input: str | Path,
    output: str | Path,
    effect_name: str,
    params: Mapping[str, Any],
    resources: EffectResources,
    settings: Settings,
    progress: ProgressCallback | None = None,
    *,
    encode: EncodeOptions | None = None,
    limits: MediaLimits | None = None,
    models: SharedModels | None = None,
    cancel: threading.Event | None = None,
    job_id: str | None = None,
    source_name: str | None = None,
    observe: TimingObserver | None = None,
    faces: FaceProcess | None = None,
) -> ConvertResult:
    """Convert INPUT to OUTPUT with one effect; every frame processed, audio copied.

    Runs synchronously in the calling thread, which owns the pipeline's models
    (`models`, default: new SharedModels on `resources.device`). `progress` is
    called from this thread after every frame. The output carries its provenance
    (stream.provenance: metadata tags, a `.provenance.json` sidecar, C2PA when
    configured); job_id and source_name (default: INPUT's name) go into it.
    observe: per-stage timings (stage name, seconds), e.g. for benchmarks.
    faces: a FaceProcess to run the face stage in (when the effect needs faces).
    Raises MediaRejected (bad input), UnknownEffect / InvalidParams /
    EffectUnavailable (bad effect), ValueError (bad output name), ConvertCancelled
    (`cancel` set), ProvenanceError, or an av error from FFmpeg.
    """
    output = Path(output)
    fmt = output_format(output)
    check_output(input, output)
    spec = get_effect_spec(effect_name)
    values = spec.validate(params)  # fail before opening anything
    probe(input, limits)  # and before loading any model
    provenance = _provenance(spec, values, settings, job_id, source_name or Path(input).name)
    models = models or SharedModels(settings, resources.device)
    pipeline = build_pipeline(effect_name, params, resources, models, observe)
    try:
        return convert_with_pipeline(
            input,
            output,
            pipeline,
            settings,
            provenance,
            progress,
            encode=encode,
            limits=limits,
            cancel=cancel,
            output_format_name=fmt,
            faces=faces,
        )
    finally:
        pipeline.close()


def _provenance(
    spec: EffectSpec,
    values: Mapping[str, Any],
    settings: Settings,
    job_id: str | None,
    source_name: str,
) -> ProvenanceInfo:
    face_ids = spec.face_ids(values)
    return ProvenanceInfo(
        effect=spec.name,
        changes_identity=spec.changes_identity,
        params=values,
        job_id=job_id,
        face_id=face_ids[0] if face_ids else None,
        source_name=source_name,
        labelled=settings.label_swaps and spec.changes_identity,  # the label is drawn then
    )


def convert_with_pipeline(
    input: str | Path,
    output: str | Path,
    pipeline: EffectPipeline,
    settings: Settings,
    provenance: ProvenanceInfo,
    progress: ProgressCallback | None = None,
    *,
    encode: EncodeOptions | None = None,
    limits: MediaLimits | None = None,
    cancel: threading.Event | None = None,
    output_format_name: str | None = None,
    faces: FaceProcess | None = None,
) -> ConvertResult:
    """The conversion loop with a ready pipeline (see convert_file); does not close it."""
    output = Path(output)
    fmt = output_format_name or output_format(output)
    check_output(input, output)
    check_markable(output, settings)
    limits = limits or MediaLimits()
    started = time.perf_counter()
    container = open_input(input, limits)
    try:
        info = describe(container, Path(input))
        check(info, limits)
        temp = temp_path(output)
        try:
            tags = provenance_tags(provenance)
            found = faces.track(input) if faces is not None and pipeline.needs_faces else None
            try:
                frames, audio_packets, span_s = _run(
                    container,
                    info,
                    temp,
                    fmt,
                    pipeline,
                    tags,
                    progress,
                    encode,
                    cancel,
                    found,
                    limits,
                )
            finally:
                if found is not None:
                    found.close()
            os.replace(temp, output)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    finally:
        container.close()
    record = mark_output(output, provenance, settings)
    wall = time.perf_counter() - started
    logger.debug("converted %s -> %s: %d frames in %.1f s", input, output, frames, wall)
    return ConvertResult(
        output=output,
        frames=frames,
        audio_packets=audio_packets,
        width=info.width,
        height=info.height,
        frame_rate=info.frame_rate,
        media_duration_s=info.duration_s or span_s,
        wall_s=wall,
        provenance=record,
    )


def _run(
    container: Any,
    info: MediaInfo,
    temp: Path,
    fmt: str,
    pipeline: EffectPipeline,
    tags: Mapping[str, str],
    progress: ProgressCallback | None,
    encode: EncodeOptions | None,
    cancel: threading.Event | None,
    found: FaceStream | None,
    limits: MediaLimits,
) -> tuple[int, int, float]:
    """Reader -> pipeline (this thread; faces from `found` when given) -> writer;
    returns (video frames, audio packets, seconds of video from the first frame's
    time to the end of the last frame).

    Raises MediaRejected once the input runs past `limits`: a container that did not
    declare its length (a live-recorded Matroska, a raw stream) is held to them here.
    """
    encode = encode or EncodeOptions()
    stop = threading.Event()
    reader = FrameReader(container, stop)
    spec = OutputSpec(
        path=temp,
        format_name=fmt,
        codec=encode.codec,
        crf=encode.crf,
        preset=encode.preset,
        pix_fmt=encode.pix_fmt,
        width=info.width,
        height=info.height,
        frame_rate=info.frame_rate,
        time_base=info.time_base,
        audio_templates=reader.audio_streams,
        subtitle_templates=reader.subtitle_streams,
        attachment_templates=reader.attachment_streams,
        sample_aspect_ratio=info.sample_aspect_ratio,
        metadata=dict(tags),
    )
    writer = FrameWriter(spec, stop)
    pump = Pump(reader, writer, stop)
    started = time.perf_counter()
    done = 0
    first_s = last_s = 0.0
    try:
        for rgb, time_s in pump.timed_frames():
            if cancel is not None and cancel.is_set():
                raise ConvertCancelled("the conversion was cancelled")
            at_s = time_s if time_s is not None else done / float(info.frame_rate)
            first_s, last_s = (at_s, at_s) if done == 0 else (first_s, at_s)
            check_running(done + 1, last_s - first_s, limits, info.path.name)
            pump.send(pipeline.finish(pipeline.begin(rgb, found, time_s)).image)
            done += 1
            if progress is not None:
                progress(
                    ConvertProgress(done, max(info.frames, done), time.perf_counter() - started)
                )
        pump.finish()
    finally:
        pump.close()
    span_s = last_s - first_s + 1 / float(info.frame_rate) if done else 0.0
    return done, writer.audio_packets, span_s
