"""`gan_swap`: swap every tracked face with a trained faceswap-GAN pair model.

Each face is aligned by its five landmarks, drawn as the other identity by the
model (a face and an attention mask), colour-matched to the original, and warped
back into the frame through the mask times a feathered border. All faces of a
frame go through the model as one batch. The model comes from `--model`
(resources.model_path) or is the newest weights/faceswap/*/model.pt.

With cross-session batching (resources.batching, the live server's schedulers), the
model call goes through one shared scheduler per model and direction: the faces of
several sessions' frames become one call of the network, in the scheduler's thread.

Two paths, the same result (tests hold them within a grey level or two):
- host (a model on the CPU, where it is the faster one): crops cut, colour-matched and
  pasted with OpenCV on the host, the network fed host arrays;
- device (a model on a GPU; `device_path=True` forces it anywhere): the frame goes to
  the model's device once, every aligned crop is cut by one batched warp, the network
  runs on the device tensors, colour match, mask blur and the batched inverse warp and
  blend stay there, and the frame comes back once, with no host sync in between.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np

from engines.alignment import (
    Alignment,
    border_feather,
    crop_bounds_in_frame,
    estimate_alignment,
    paste_back,
    warp_to_crop,
)
from engines.batching import BatchScheduler
from engines.effects.base import (
    REMOTE_MODEL_ADVICE,
    Effect,
    EffectResources,
    EffectSpec,
    ParamSpec,
    model_load_failed,
)
from engines.errors import EffectUnavailable, ModelLoadError
from engines.faceswap_gan.batched import (
    BatchedSwapper,
    DeviceSwapModel,
    SwapModel,
    run_swap_tensors,
    run_swaps,
)
from engines.types import Face

if TYPE_CHECKING:
    import torch

    from engines.faceswap_gan.inference import FaceSwapper, SwapResult

    TensorPair = tuple[torch.Tensor, torch.Tensor]

logger = logging.getLogger(__name__)

_TRAIN_HINT = (
    "train one with `facestream extract` and `facestream train faceswap --out weights/faceswap/NAME`, "
    "or pass --model PATH"
)


def resolve_model_path(resources: EffectResources) -> Path | None:
    """The explicit model path if one was given (a training's output folder stands for
    the model.pt in it), else the newest weights/faceswap/*/model.pt."""
    from engines.faceswap_gan.modelfile import MODEL_FILENAME, find_model

    if resources.model_path is not None:
        path = Path(resources.model_path)
        return path / MODEL_FILENAME if path.is_dir() else path

    return find_model(resources.weights_dir)


def _unavailable_reason(resources: EffectResources) -> str | None:
    path = resolve_model_path(resources)
    if path is not None and path.is_file():
        return None
    if resources.remote_users:
        return f"no faceswap model is installed on this server; {REMOTE_MODEL_ADVICE}"
    if path is None:
        return f"no faceswap model in {Path(resources.weights_dir) / 'faceswap'}; {_TRAIN_HINT}"
    return f"model file {path} does not exist; {_TRAIN_HINT}"


def colour_match(generated: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Shift the per-channel mean and scale the spread of `generated` to those of
    `original`, both measured where `weight` is high.

    generated, original: (S, S, 3) uint8 RGB; weight: (S, S) float32 in [0, 1].
    Returns (S, S, 3) uint8 RGB. The spread ratio is kept within [0.5, 2].
    """
    w = weight[..., None].astype(np.float32)
    total = float(w.sum())
    if total < 1.0:
        return generated
    gen, ref = generated.astype(np.float32), original.astype(np.float32)
    gen_mean = (gen * w).sum(axis=(0, 1)) / total
    ref_mean = (ref * w).sum(axis=(0, 1)) / total
    gen_std = np.sqrt(((gen - gen_mean) ** 2 * w).sum(axis=(0, 1)) / total) + 1e-3
    ref_std = np.sqrt(((ref - ref_mean) ** 2 * w).sum(axis=(0, 1)) / total) + 1e-3
    ratio = np.clip(ref_std / gen_std, 0.5, 2.0)
    return np.clip((gen - gen_mean) * ratio + ref_mean + 0.5, 0, 255).astype(np.uint8)


_effect_ids = itertools.count()


def batched(swapper: FaceSwapper, resources: EffectResources) -> SwapModel:
    """`swapper`, or with resources.batching a BatchedSwapper on the shared scheduler of
    that swapper (one per model file, device and direction)."""
    if resources.batching is None:
        return swapper
    pool = resources.batching
    name = f"gan_swap.{swapper.direction}"
    scheduler: BatchScheduler[np.ndarray, SwapResult] = pool.get(
        swapper, functools.partial(run_swaps, swapper), name=name
    )

    def device_scheduler() -> BatchScheduler[torch.Tensor, TensorPair]:
        run = functools.partial(run_swap_tensors, swapper)
        return pool.get((swapper, "device"), run, name=f"{name}.device")

    session = f"gan_swap-{next(_effect_ids)}"
    return BatchedSwapper(swapper, scheduler, session, device_scheduler)


def runs_on_gpu(swapper: SwapModel) -> bool:
    """Whether `swapper` has a device path and its network lives on a CUDA device."""
    device = getattr(swapper, "device", None)
    return hasattr(swapper, "swap_tensor") and getattr(device, "type", None) == "cuda"


def opencv_ksize(sigma: float) -> int:
    """The kernel side cv2.GaussianBlur picks for a float image with ksize (0, 0)."""
    return round(sigma * 8.0 + 1.0) | 1


class GanSwapEffect(Effect):
    """Replaces each face with the model's drawing of the other identity.

    device_path: True runs `apply` on the model's device (see the module docstring; the
    swapper must be a DeviceSwapModel), False on the host; None (default) picks the
    device path when the model is on a CUDA device.
    """

    name = "gan_swap"

    def __init__(
        self, swapper: SwapModel, colour: bool, feather: float, device_path: bool | None = None
    ) -> None:
        self.swapper = swapper
        self.colour = colour
        size = swapper.size
        self._edge = border_feather(size, feather)
        self._blur_sigma = max(size / 96.0, 0.5)
        self.device_path = runs_on_gpu(swapper) if device_path is None else device_path
        if self.device_path and not hasattr(swapper, "swap_tensor"):
            raise ValueError(f"{type(swapper).__name__} has no swap_tensor: no device path")
        self._edges: dict[str, torch.Tensor] = {}

    def _align(self, faces: Sequence[Face]) -> list[Alignment]:
        alignments = []
        for face in faces:
            try:
                alignments.append(
                    estimate_alignment(face.landmarks5, self.swapper.size, self.swapper.padding)
                )
            except ValueError:
                logger.debug("skipping face %d with unusable landmarks", face.track_id)
        return alignments

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        alignments = self._align(faces)
        if not alignments:
            return frame
        if self.device_path:
            return self._apply_on_device(frame, alignments)
        crops = np.stack([warp_to_crop(frame, alignment) for alignment in alignments])
        result = self.swapper(crops)
        for index, alignment in enumerate(alignments):
            mask = cv2.GaussianBlur(result.mask[index], (0, 0), self._blur_sigma)
            alpha = mask * self._edge
            face = result.rgb[index]
            if self.colour:
                face = colour_match(face, crops[index], alpha)
            paste_back(frame, face, alpha, alignment)
        return frame

    def _apply_on_device(self, frame: np.ndarray, alignments: Sequence[Alignment]) -> np.ndarray:
        """The device path: one upload, swap_on_device, one download. frame: HxWx3 uint8
        RGB (changed in place when the device is the CPU); returns the output frame."""
        import torch

        from engines import gpu_ops

        swapper = cast(DeviceSwapModel, self.swapper)
        device = torch.device(swapper.device)
        edge = self._edges.get(str(device))
        if edge is None:
            edge = gpu_ops.to_device(self._edge[None, None], device)
            self._edges[str(device)] = edge
        with torch.inference_mode():
            image = gpu_ops.upload_frame(frame, device)
            swap_on_device(image, alignments, swapper, edge, self._blur_sigma, self.colour)
            return gpu_ops.download_frame(image)


def swap_on_device(
    image: torch.Tensor,
    alignments: Sequence[Alignment],
    swapper: DeviceSwapModel,
    edge: torch.Tensor,
    blur_sigma: float,
    colour: bool,
) -> torch.Tensor:
    """Swap every aligned face of `image` in place, on its device, and return it.

    image: (3, H, W) uint8 RGB on the swapper's device. alignments: one per face (host
    matrices; sent in one non-blocking copy). edge: (1, 1, S, S) float32 border feather
    on the device. Same steps as the host path: crops cut with BORDER_REFLECT_101, alpha
    = Gaussian-blurred mask (sigma `blur_sigma`, OpenCV's kernel size) times the edge,
    RGB mean/spread matched to the crop where alpha is high (when `colour`), then warped
    back and blended, face after face. Reads nothing back from the device.
    """
    from engines import gpu_color, gpu_ops

    size, count = swapper.size, len(alignments)
    host = np.stack([np.stack([a.matrix, a.inverse]) for a in alignments]).astype(np.float32)
    matrices = gpu_ops.to_device(host, image.device)  # (N, 2, 2, 3): frame->crop, crop->frame
    source = gpu_ops.to_float(image).expand(count, -1, -1, -1)
    crops = gpu_ops.warp_affine(
        source, matrices[:, 1], (size, size), inverse_map=True, padding="reflect101"
    )
    rgb, mask = swapper.swap_tensor(crops * 2.0 - 1.0)
    faces = (rgb.clamp(-1.0, 1.0) + 1.0) * 0.5
    alpha = gpu_ops.gaussian_blur(mask, blur_sigma, opencv_ksize(blur_sigma)) * edge
    if colour:  # as colour_match: RGB, spread ratio in [0.5, 2], +1e-3 grey levels
        faces = gpu_color.color_transfer(
            faces, crops, alpha, 1e-3 / 255, space="rgb", ratio_range=(0.5, 2.0), min_weight=1.0
        )
    shape = (int(image.shape[1]), int(image.shape[2]))
    rois = [crop_bounds_in_frame(a, shape) or (0, 0, 0, 0) for a in alignments]
    return gpu_ops.paste_back(image, faces, matrices[:, 0], alpha, rois)


def _compile_fn(path: Path, resources: EffectResources, direction: str) -> Any:
    """On CUDA, a function compiling the swap network with engines.backends (cached
    under weights/cache, keyed by the model file's hash); None on CPU (eager)."""
    if not resources.device.startswith("cuda"):
        return None
    from engines.backends import hash_file
    from engines.faceswap_gan.compiled import compile_swap_net

    model_hash = hash_file(path)

    def compile_fn(net: Any, config: Any) -> Any:
        return compile_swap_net(
            net,
            config,
            name=f"faceswap.{direction}.{config.size}",
            device=resources.device,
            cache_dir=Path(resources.weights_dir) / "cache",
            model_hash=model_hash,
            backend=resources.backend,
        )

    return compile_fn


def _build(params: Mapping[str, Any], resources: EffectResources) -> Effect:
    from engines.faceswap_gan.inference import shared_swapper

    path = resolve_model_path(resources)
    if path is None:
        hint = REMOTE_MODEL_ADVICE if resources.remote_users else _TRAIN_HINT
        raise EffectUnavailable(f"effect 'gan_swap' has no model: {hint}")
    compile_fn = _compile_fn(path, resources, params["direction"])
    try:
        swapper = shared_swapper(path, resources.device, params["direction"], compile_fn)
    except ModelLoadError as error:
        raise model_load_failed("gan_swap", error, resources) from error
    logger.info(
        "gan_swap: %s, %s, size %d on %s", path, params["direction"], swapper.size, resources.device
    )
    model = batched(swapper, resources)
    return GanSwapEffect(model, colour=params["color_match"], feather=params["feather"])


SPECS = (
    EffectSpec(
        name="gan_swap",
        description="faceswap-GAN: replace faces with a trained pair model (weights/faceswap)",
        params={
            "direction": ParamSpec(
                "choice",
                "a_to_b",
                choices=("a_to_b", "b_to_a"),
                help="a_to_b draws person a as person b; b_to_a the reverse",
            ),
            "color_match": ParamSpec(
                "bool", True, help="match the swapped face's colours to the original"
            ),
            "feather": ParamSpec(
                "float",
                0.1,
                min=0.0,
                max=0.3,
                help="width of the soft edge, fraction of the face crop",
            ),
        },
        factory=_build,
        needs_faces=True,
        changes_identity=True,
        unavailable_reason=_unavailable_reason,
    ),
)
