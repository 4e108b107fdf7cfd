"""Offline video conversion: every frame of a file through the effect pipeline.

Unlike a live session nothing is dropped: frames are processed in order, one by one,
by the same :class:`EffectPipeline` the webcam filter uses. Three threads overlap the
work: a reader (demux + decode + RGB), the calling thread (the pipeline; it owns the
models, like a device worker), and a writer (H.264 encode + mux). Queues between them
are bounded. Given a :class:`stream.face_process.FaceProcess` (on a CPU), the face
stage runs in that process instead, over the same file, so a second core is used
without the threads fighting over Python's interpreter lock. The audio stream is copied packet for packet, video timestamps are kept,
and the result is written to ``OUTPUT.part-XXXX`` next to OUTPUT and renamed at the end,
so an interrupted run leaves no half file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.effects.base import EffectResources, EffectSpec
from engines.effects.registry import build_effect, get_effect_spec
from stream.convert_io import FrameReader, FrameWriter, OutputSpec, Pump
from stream.media_probe import (
    MediaInfo,
    MediaLimits,
    check,
    check_running,
    describe,
    open_input,
    probe,
)
from stream.models import SharedModels
from stream.pipeline import EffectPipeline, TimingObserver
from stream.provenance import (
    SIDECAR_SUFFIX,
    ProvenanceInfo,
    ProvenanceRecord,
    check_markable,
    mark_file,
    provenance_tags,
)
from stream.settings import Settings

if TYPE_CHECKING:
    from stream.face_process import FaceProcess, FaceStream

logger = logging.getLogger(__name__)

# Containers whose provenance tags, written at mux time, read back (case-insensitively:
# Matroska upper-cases tag names), so stream.provenance never has to remux the file.
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


class ConvertCancelled(RuntimeError):
    """The conversion was cancelled before it finished; no output was written."""


@dataclass(frozen=True)
class EncodeOptions:
    """Video encoder settings. crf: x264 constant quality, 0 (lossless) .. 51 (worst).

    Default superfast at CRF 21: on the 720p crowd clip the same PSNR to the source as
    veryfast at CRF 20 (38.96 against 38.99 dB), files about 23 % larger, 40 % less
    encoder CPU (12 against 20 ms a frame), which a CPU conversion needs to keep up.
    """

    codec: str = "libx264"
    crf: int = 21
    preset: str = "superfast"
    pix_fmt: str = "yuv420p"


@dataclass(frozen=True)
class ConvertProgress:
    """Where a conversion stands. frames_total is an estimate from the container."""

    frames_done: int
    frames_total: int
    elapsed_s: float

    @property
    def fps(self) -> float:
        return self.frames_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def fraction(self) -> float:
        if self.frames_total <= 0:
            return 0.0
        return min(self.frames_done / self.frames_total, 1.0)

    @property
    def eta_s(self) -> float | None:
        if self.frames_done == 0 or self.frames_total <= 0:
            return None
        return max(self.frames_total - self.frames_done, 0) / self.fps


@dataclass(frozen=True)
class ConvertResult:
    """A finished conversion. media_duration_s: the video's length; wall_s: time it took."""

    output: Path
    frames: int
    audio_packets: int
    width: int
    height: int
    frame_rate: Fraction
    media_duration_s: float
    wall_s: float
    provenance: ProvenanceRecord | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def realtime_ratio(self) -> float:
        """Seconds of video converted per second of wall time (>= 1: faster than real time)."""
        return self.media_duration_s / self.wall_s if self.wall_s > 0 else 0.0


ProgressCallback = Callable[[ConvertProgress], None]


def output_format(output: Path) -> str:
    """FFmpeg muxer name for OUTPUT's extension; ValueError for one facestream does not write."""
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"output {output} must end in one of {', '.join(OUTPUT_FORMATS)} "
            f"(got {output.suffix or 'no extension'})"
        )
    return fmt


def check_output(input: str | Path, output: str | Path) -> None:
    """ValueError, before any work, for an OUTPUT that cannot be written: an extension
    facestream does not write, a missing folder, an existing folder, or INPUT itself
    (also through a link). An existing file is overwritten, as cp and FFmpeg's -y do."""
    output = Path(output)
    output_format(output)
    if output.is_dir():
        raise ValueError(f"output {output} is a folder: name a file, e.g. {output / 'out.mp4'}")
    if not output.parent.is_dir():
        raise ValueError(f"output folder {output.parent} does not exist")
    if output.exists() and Path(input).exists() and os.path.samefile(input, output):
        raise ValueError(f"output {output} is the input file: write the result to another file")


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
    face_ids = [str(values[k]) for k, p in spec.params.items() if p.type == "face" and values[k]]
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
        temp = _temp_path(output)
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
    record = _mark(output, provenance, settings)
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


def _mark(output: Path, provenance: ProvenanceInfo, settings: Settings) -> ProvenanceRecord:
    """Provenance for the finished file; on failure the file is removed (never left unmarked)."""
    try:
        return mark_file(output, provenance, settings)
    except BaseException:
        output.unlink(missing_ok=True)
        output.with_name(output.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
        raise


def _temp_path(output: Path) -> Path:
    """An empty, unique OUTPUT.part-XXXX in OUTPUT's folder (so os.replace is atomic),
    made with mode 0666 less the umask, as any new file (mkstemp's 0600 would stay)."""
    while True:
        path = output.with_name(f"{output.name}.part-{secrets.token_hex(4)}")
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path


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
