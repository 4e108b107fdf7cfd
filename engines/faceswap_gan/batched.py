"""A faceswap-GAN swapper shared by several sessions: the swap model's interface for
effects, and the adapters that batch the calls of many frames into one network call.

SwapModel / DeviceSwapModel: what an effect needs of a swapper (host crops, or device
tensors). BatchedSwapper: a swapper whose calls go through a BatchScheduler (the
scheduler's thread runs run_swaps / run_swap_tensors on the real FaceSwapper).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from engines.batching import BatchScheduler

if TYPE_CHECKING:
    import torch

    from engines.faceswap_gan.inference import FaceSwapper, SwapResult

    TensorPair = tuple[torch.Tensor, torch.Tensor]


class SwapModel(Protocol):
    """What the effect uses of a FaceSwapper: aligned crops (N, S, S, 3) uint8 RGB ->
    SwapResult (faces (N, S, S, 3) uint8 RGB, masks (N, S, S) float32)."""

    @property
    def size(self) -> int: ...

    @property
    def padding(self) -> float: ...

    def __call__(self, crops: np.ndarray) -> SwapResult: ...


def run_swaps(swapper: SwapModel, batches: Sequence[np.ndarray]) -> list[SwapResult]:
    """One network call for the crops of several frames ((N_i, S, S, 3) uint8 RGB each);
    returns each frame's part of the result, in order."""
    from engines.faceswap_gan.inference import SwapResult

    result = swapper(np.concatenate(batches))
    bounds = np.cumsum([0, *(len(batch) for batch in batches)])
    return [
        SwapResult(rgb=result.rgb[start:stop], mask=result.mask[start:stop])
        for start, stop in itertools.pairwise(bounds)
    ]


class DeviceSwapModel(SwapModel, Protocol):
    """A SwapModel that also runs on device tensors: `swap_tensor` takes (N, 3, S, S)
    float32 RGB in [-1, 1] on `device` and returns rgb (N, 3, S, S) in [-1, 1] and mask
    (N, 1, S, S) in [0, 1], float32, on the same device, without a host sync."""

    @property
    def device(self) -> torch.device: ...

    def swap_tensor(self, faces: torch.Tensor) -> TensorPair: ...


def run_swap_tensors(swapper: FaceSwapper, batches: Sequence[torch.Tensor]) -> list[TensorPair]:
    """One network call for the device crops of several frames ((N_i, 3, S, S) float32 in
    [-1, 1] each, on the model's device); each frame's (rgb, mask), in order. The split
    sizes are host ints: nothing is read back from the device."""
    import torch

    rgb, mask = swapper.swap_tensor(torch.cat(list(batches)))
    counts = [int(batch.shape[0]) for batch in batches]
    return list(zip(rgb.split(counts), mask.split(counts), strict=True))


class BatchedSwapper:
    """A FaceSwapper whose calls are batched with other sessions' by `scheduler`
    (which runs run_swaps on the real swapper in its own thread).

    session: who asks (one per effect instance): its calls keep their order. Blocks
    until the result is there; raises what the call raised on its own, or
    BatchRejected when the scheduler is full or shut down.
    device_scheduler: gives the scheduler of device-tensor calls (`swap_tensor`, which
    runs run_swap_tensors), asked for on the first such call; None: `swap_tensor` calls
    the swapper directly, unbatched.
    """

    def __init__(
        self,
        swapper: FaceSwapper,
        scheduler: BatchScheduler[np.ndarray, SwapResult],
        session: Hashable | None = None,
        device_scheduler: Callable[[], BatchScheduler[torch.Tensor, TensorPair]] | None = None,
    ) -> None:
        self.swapper = swapper
        self.scheduler = scheduler
        self.session = session
        self._device_scheduler = device_scheduler

    @property
    def size(self) -> int:
        return self.swapper.size

    @property
    def padding(self) -> float:
        return self.swapper.padding

    @property
    def direction(self) -> str:
        return self.swapper.direction

    @property
    def device(self) -> torch.device:
        return self.swapper.device

    def __call__(self, crops: np.ndarray) -> SwapResult:
        if len(crops) == 0:
            return self.swapper(crops)  # nothing for the network
        return self.scheduler.submit(crops, session=self.session).result()

    def swap_tensor(self, faces: torch.Tensor) -> TensorPair:
        """FaceSwapper.swap_tensor, batched with other sessions' device crops."""
        if self._device_scheduler is None:
            return self.swapper.swap_tensor(faces)
        return self._device_scheduler().submit(faces, session=self.session).result()
