"""The measurements the speed benchmarks share: a training config as they run it, its
batches in memory, the seconds per step of the training job (Lightning and all) and of a
bare PyTorch loop, the throughput of the training loader alone, and peak memory.

The pipeline is ``autoencoder.train.train``, timed from one training batch to the next; the
bare loop is forward, loss, backward and optimiser step on batches already in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict

from autoencoder.config import compose_config, instantiate
from autoencoder.data import DeviceBatches, ImageDataModule
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.precision import resolve_precision
from autoencoder.runs import build_model
from autoencoder.train import train


@dataclass(frozen=True)
class Measurement:
    """Median seconds per step, images per second and peak memory of one variant."""

    variant: str
    seconds: float
    images_per_second: float
    peak_memory_mb: float | None


class StepTimer(pl.Callback):
    """Times the pipeline from the start of one training batch to the start of the next:
    the whole step, data loading, logging and callbacks included."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())

    @property
    def step_seconds(self) -> list[float]:
        """Seconds between consecutive batch starts."""
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """The peak memory of the block in MB: CUDA's allocator peak on a GPU; on Linux the
    process's resident-set peak (VmHWM, reset through /proc/self/clear_refs); else None."""
    result: dict[str, float | None] = {"mb": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cpu_peak = _reset_rss_peak()
    try:
        yield result
    finally:
        if device.type == "cuda":
            result["mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        elif cpu_peak:
            result["mb"] = _rss_peak_mb()


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _rss_peak_mb() is not None


def _rss_peak_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def compose_benchmark_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The training config as a job runs it (``trainer.precision=auto`` resolved)."""
    cfg = compose_config("train", *overrides)
    resolve_precision(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.encoder.weights = None  # random weights: speed does not depend on them
    return cfg


def training_loader(cfg: DictConfig) -> torch.utils.data.DataLoader | DeviceBatches:
    """The training loader of the config's datamodule (as ``data.on_device`` decides for
    the CPU)."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def in_memory_batches(cfg: DictConfig, count: int) -> list[torch.Tensor]:
    """The first ``count`` training batches, as the pipeline's loader makes them."""
    batches = []
    for images, _ in training_loader(cfg):
        batches.append(images)
        if len(batches) == count:
            return batches
    raise ValueError(f"the training split has fewer than {count} batches; lower --steps")


def loader_throughput(
    cfg: DictConfig, count: int, warmup: int, device: torch.device, on_device: bool
) -> float:
    """Images per second of the training loader alone, until its batches are on ``device``:
    per image (workers, transforms, collation, then the copy to the device) or drawn on the
    device (``data.on_device``: one gather, flip, crop and conversion per batch there)."""
    datamodule: ImageDataModule = instantiate(cfg.data, on_device=on_device)
    datamodule.setup("fit")
    loader = datamodule.device_batches(device) if on_device else datamodule.train_dataloader()
    batches = _epochs(loader)

    def next_on_device() -> int:
        images = next(batches)[0].to(device, non_blocking=True)
        return len(images)

    for _ in range(warmup):
        next_on_device()
    _synchronize(device)
    start, images = time.perf_counter(), 0
    for _ in range(count):
        images += next_on_device()
    _synchronize(device)
    return images / (time.perf_counter() - start)


def _epochs(loader: Iterable[Any]) -> Iterator[Any]:
    """The loader's batches, epoch after epoch (a small split may hold fewer than needed)."""
    while True:
        yield from loader


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(
    cfg: DictConfig,
    batches: list[torch.Tensor],
    warmup: int,
    device: torch.device,
    frozen: bool = False,
    channels_last: bool = True,
    bf16: bool = False,
    compiled: bool = False,
) -> list[float]:
    """Seconds per step of forward, loss, backward and AdamW step, on ``batches``."""
    torch.manual_seed(0)
    with open_dict(cfg):
        cfg.model.channels_last = channels_last
    model: Autoencoder = build_model(cfg).to(device)
    stages = len(model.encoder.stage_names)
    model.encoder.set_trainable(0 if frozen else stages, frozen_bn="eval", unfrozen_bn="train")
    model.train()
    groups = model.parameter_groups()
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    optimizer = instantiate(cfg.optimizer)([g for g in groups if g["params"]], lr=model.lr)
    forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compiled else model
    timings = []
    for step, images in enumerate(batches):
        start = time.perf_counter()
        images = images.to(device, non_blocking=True).contiguous(memory_format=model.memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(forward(images).float(), images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            timings.append(time.perf_counter() - start)
    return timings


def pipeline(cfg: DictConfig, steps: int, warmup: int) -> list[float]:
    """Seconds per step of the training job itself (validation and testing off)."""
    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + steps + 1
        cfg.trainer.max_epochs = None
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.test = False
        cfg.callbacks.step_timer = {"_target_": f"{__name__}.StepTimer"}
    _, built = train(cfg)
    (timer,) = (c for c in built["callbacks"] if isinstance(c, StepTimer))
    return timer.step_seconds[warmup:]
