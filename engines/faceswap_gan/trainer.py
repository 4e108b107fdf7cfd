"""Training a faceswap-GAN pair model: the loop, checkpoints, previews, loss log, export.

One run lives in an output folder:
    checkpoint.pt   generator, critics, optimisers, iteration, RNG (resumable)
    model.pt        the exported generator (engines.faceswap_gan.modelfile)
    config.json     model and training settings
    loss_log.csv    logged losses; loss_curve.png its plot
    previews/       preview grids (input | reconstruction | swap | swap mask per row)
Runs on CPU (slowly) or CUDA; on CUDA the forward passes use bfloat16 autocast.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from engines.errors import InvalidDataset, ModelLoadError
from engines.faceswap_gan import losses
from engines.faceswap_gan.augment import AugmentConfig, AugmentedBatch, augment_batch
from engines.faceswap_gan.dataset import FaceDataset
from engines.faceswap_gan.model import (
    IDENTITIES,
    FaceswapConfig,
    FaceswapGenerator,
    PatchDiscriminator,
)
from engines.faceswap_gan.modelfile import MODEL_FILENAME, export_model
from engines.faceswap_gan.reports import (
    LossLog,
    draw_loss_curve,
    preview_grid,
    read_loss_log,
    save_png,
)

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "facestream-faceswap-checkpoint"
CHECKPOINT_VERSION = 1
CURVE_KEYS = ("recon_a", "recon_b", "d_a", "d_b", "mask_a")

Progress = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    """iters: total iterations (a resumed run continues up to it). batch_size: faces
    per identity per step. lr: Adam learning rate of generator and critics.
    checkpoint_every / preview_every / log_every: in iterations. device: "cpu" or "cuda[:N]".
    max_seconds: stop (checkpoint, export) once this much training time has passed,
    counting resumed runs; None for no limit.
    names: display names of identities a and b (stored in the exported model)."""

    iters: int = 20000
    batch_size: int = 8
    lr: float = 1e-4
    checkpoint_every: int = 500
    preview_every: int = 250
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"
    names: tuple[str, str] = ("a", "b")
    max_seconds: float | None = None
    weights: losses.LossWeights = field(default_factory=losses.LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class FaceswapTrainer:
    """Trains one model for the pair (data_a, data_b) into `out_dir`.

    The datasets must be cut at the model's size with the model's padding. Pass
    `perceptual` (losses.load_perceptual_network) to add the perceptual loss.
    """

    def __init__(
        self,
        model_config: FaceswapConfig,
        train_config: TrainConfig,
        data: dict[str, FaceDataset],
        out_dir: Path,
        perceptual: losses.PerceptualNetwork | None = None,
    ) -> None:
        for identity in IDENTITIES:
            dataset = data[identity]
            if (
                dataset.size != model_config.size
                or abs(dataset.padding - model_config.padding) > 1e-6
            ):
                raise InvalidDataset(
                    f"{dataset.folder} was cut with padding {dataset.padding} (model wants "
                    f"{model_config.padding}); extract it again with the same padding"
                )
        self.model_config, self.config, self.data = model_config, train_config, data
        self.out_dir = Path(out_dir)
        self.device = torch.device(train_config.device)
        torch.manual_seed(train_config.seed)
        self.generator = FaceswapGenerator(model_config).to(self.device)
        self.critics = torch.nn.ModuleDict(
            {i: PatchDiscriminator(model_config) for i in IDENTITIES}
        ).to(self.device)
        self.perceptual = perceptual.to(self.device) if perceptual is not None else None
        betas = (0.5, 0.999)
        self.optim_g = torch.optim.Adam(
            self.generator.parameters(), lr=train_config.lr, betas=betas
        )
        self.optim_d = torch.optim.Adam(self.critics.parameters(), lr=train_config.lr, betas=betas)
        self.rng = torch.Generator().manual_seed(train_config.seed)
        self.iteration = 0
        self.elapsed_s = 0.0  # training time of this run and the runs it resumed
        self._preview_index = {i: torch.arange(min(4, len(d))) for i, d in data.items()}

    # ----- one step -------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )

    def _generator_terms(
        self, identity: str, batch: AugmentedBatch
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        weights = self.config.weights
        with self._autocast():
            rgb, mask = self.generator(batch.inputs, identity)
            composite = mask * rgb + (1.0 - mask) * batch.inputs
            fake_scores = self.critics[identity](composite, batch.inputs)
        rgb, mask, composite = rgb.float(), mask.float(), composite.float()
        eyes = batch.regions[:, :1]
        terms = {
            "recon": losses.l1(composite, batch.targets),
            "raw": losses.l1(rgb, batch.targets),
            "eyes": losses.l1(composite, batch.targets, eyes),
            "edges": losses.edge_loss(composite, batch.targets, eyes, weights.eyes_edge_boost),
            "mask": mask.mean(),
            "mask_tv": losses.total_variation(mask),
            "adv": losses.lsgan_generator_loss(fake_scores.float()),
        }
        total = (
            weights.reconstruction * terms["recon"]
            + weights.raw * terms["raw"]
            + weights.eyes * terms["eyes"]
            + weights.edges * terms["edges"]
            + weights.mask * terms["mask"]
            + weights.mask_smoothness * terms["mask_tv"]
            + weights.adversarial * terms["adv"]
        )
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual.loss(composite, batch.targets)
            total = total + weights.perceptual * terms["perceptual"]
        logged = {f"{key}_{identity}": float(value.detach()) for key, value in terms.items()}
        return total, logged, composite.detach()

    def step(self) -> dict[str, float]:
        """One generator and one critic update on a batch of each identity; returns the losses."""
        batches = {}
        for identity in IDENTITIES:
            images, regions = self.data[identity].sample(
                self.config.batch_size, self.rng, self.device
            )
            batches[identity] = augment_batch(images, regions, self.config.augment, self.rng)
        self.generator.train()
        self.critics.train()
        total = torch.zeros((), device=self.device)
        logged: dict[str, float] = {}
        fakes = {}
        self.critics.requires_grad_(False)
        for identity, batch in batches.items():
            loss, terms, fakes[identity] = self._generator_terms(identity, batch)
            total = total + loss
            logged.update(terms)
        self.optim_g.zero_grad(set_to_none=True)
        total.backward()
        self.optim_g.step()
        self.critics.requires_grad_(True)
        critic_total = torch.zeros((), device=self.device)
        for identity, batch in batches.items():
            with self._autocast():
                real = self.critics[identity](batch.targets, batch.inputs)
                fake = self.critics[identity](fakes[identity], batch.inputs)
            loss = losses.lsgan_discriminator_loss(real.float(), fake.float())
            logged[f"d_{identity}"] = float(loss.detach())
            critic_total = critic_total + loss
        self.optim_d.zero_grad(set_to_none=True)
        critic_total.backward()
        self.optim_d.step()
        logged["g_total"] = float(total.detach())
        self.iteration += 1
        return logged

    # ----- the run --------------------------------------------------------------------------

    def train(self, progress: Progress | None = None) -> Path:
        """Train up to `config.iters` iterations (resuming from `out_dir` if a checkpoint is
        there), checkpoint, preview, log; export and return the model path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(self._describe(), indent=1))
        log = LossLog(self.out_dir / "loss_log.csv", resume_from=self.iteration)
        started = time.perf_counter() - self.elapsed_s
        window: list[dict[str, float]] = []
        while self.iteration < self.config.iters and not self._out_of_time():
            window.append(self.step())
            self.elapsed_s = time.perf_counter() - started
            last = self.iteration == self.config.iters or self._out_of_time()
            if self.iteration % self.config.log_every == 0 or last:
                row = {"iteration": float(self.iteration), "elapsed_s": self.elapsed_s}
                row.update({key: sum(r[key] for r in window) / len(window) for key in window[0]})
                log.append(row)
                window = []
                if progress is not None:
                    progress(self.iteration, row)
            if self.iteration % self.config.preview_every == 0:
                self.write_preview()
            if self.iteration % self.config.checkpoint_every == 0:
                self.save_checkpoint()
        self.save_checkpoint()
        self.write_preview()
        if log.path.is_file() and log.path.stat().st_size:
            draw_loss_curve(read_loss_log(log.path), CURVE_KEYS, self.out_dir / "loss_curve.png")
        return self.export()

    def _out_of_time(self) -> bool:
        limit = self.config.max_seconds
        return limit is not None and self.elapsed_s >= limit

    def _describe(self) -> dict[str, Any]:
        train = asdict(self.config)
        train["names"] = list(self.config.names)
        return {
            "model": self.model_config.to_dict(),
            "train": train,
            "data": {identity: str(dataset.folder) for identity, dataset in self.data.items()},
            "faces": {identity: len(dataset) for identity, dataset in self.data.items()},
            "perceptual": self.perceptual is not None,
        }

    def export(self) -> Path:
        metadata = {
            "names": list(self.config.names),
            "iterations": self.iteration,
            "faces": {identity: len(dataset) for identity, dataset in self.data.items()},
            "perceptual_loss": self.perceptual is not None,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return export_model(self.generator, self.out_dir / MODEL_FILENAME, metadata)

    # ----- previews -------------------------------------------------------------------------

    @torch.no_grad()
    def preview_columns(self) -> list[torch.Tensor]:
        """Columns of the preview grid, faces of a then faces of b: input, own
        reconstruction, swap to the other identity, the swap's attention mask."""
        self.generator.eval()
        columns: list[list[torch.Tensor]] = [[], [], [], []]
        for identity, other in (("a", "b"), ("b", "a")):
            dataset = self.data[identity]
            faces = (
                dataset.images[self._preview_index[identity]].to(self.device).float() / 127.5 - 1.0
            )
            own_rgb, own_mask = self.generator(faces, identity)
            swap_rgb, swap_mask = self.generator(faces, other)
            columns[0].append(faces)
            columns[1].append(own_mask * own_rgb + (1 - own_mask) * faces)
            columns[2].append(swap_mask * swap_rgb + (1 - swap_mask) * faces)
            columns[3].append(swap_mask)
        return [torch.cat(column) for column in columns]

    def write_preview(self) -> Path:
        grid = preview_grid(self.preview_columns())
        save_png(self.out_dir / "previews" / f"iter_{self.iteration:07d}.png", grid)
        return save_png(self.out_dir / "preview.png", grid)

    # ----- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model_config": json.dumps(self.model_config.to_dict()),
            "iteration": self.iteration,
            "elapsed_s": self.elapsed_s,
            "generator": self.generator.state_dict(),
            "critics": self.critics.state_dict(),
            "optim_g": self.optim_g.state_dict(),
            "optim_d": self.optim_d.state_dict(),
            "rng": self.rng.get_state(),
        }
        path = self.out_dir / CHECKPOINT_NAME
        temporary = path.with_name(path.name + ".tmp")
        torch.save(payload, temporary)
        temporary.replace(path)
        logger.debug("checkpoint at iteration %d written to %s", self.iteration, path)
        return path

    def resume(self) -> bool:
        """Load `out_dir`/checkpoint.pt if there is one; False when starting fresh.

        Raises ModelLoadError when the checkpoint is damaged or was made for another
        model config.
        """
        path = self.out_dir / CHECKPOINT_NAME
        if not path.is_file():
            return False
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:
            raise ModelLoadError(
                f"checkpoint {path} is damaged ({type(error).__name__}); delete it or train into another folder"
            ) from error
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ModelLoadError(f"{path} is not a faceswap training checkpoint")
        saved = FaceswapConfig.from_dict(json.loads(payload["model_config"]))
        if saved != self.model_config:
            raise ModelLoadError(
                f"checkpoint {path} was trained with another model config ({saved}); "
                "use the same --size/--width or train into another folder"
            )
        self.generator.load_state_dict(payload["generator"])
        self.critics.load_state_dict(payload["critics"])
        self.optim_g.load_state_dict(payload["optim_g"])
        self.optim_d.load_state_dict(payload["optim_d"])
        self.rng.set_state(payload["rng"].cpu())
        self.iteration = int(payload["iteration"])
        self.elapsed_s = float(payload.get("elapsed_s", 0.0))
        logger.info("resumed from %s at iteration %d", path, self.iteration)
        return True
