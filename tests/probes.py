"""Probe callbacks that tests add to a training job through the config
(``+callbacks.NAME._target_=tests.probes.CLASS``) to see inside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch

from autoencoder.finetuning import TwoPhaseFinetuning


class RankProbe(pl.Callback):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        finetuning = next(c for c in trainer.callbacks if isinstance(c, TwoPhaseFinetuning))
        encoder = torch.cat([p.detach().flatten() for p in pl_module.encoder.parameters()])
        record = {
            "world_size": trainer.world_size,
            "phase": finetuning.phase,
            "transition_step": finetuning.transition_step,
            "unfreeze_steps": finetuning.rates.unfreeze_steps,
            "lrs": [g["lr"] for g in trainer.optimizers[0].param_groups],
            "encoder_sum": float(encoder.double().sum()),
            "encoder_abs_sum": float(encoder.double().abs().sum()),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class RankMonitor(pl.Callback):
    """Logs ``val/rank_probe`` without syncing ranks: on rank 0 it improves at every
    validation (10, 9, 8, ...), on the other ranks it never does (1, 1, 1, ...). With
    ``finetune.monitor=val/rank_probe`` and patience 1, only rank 1 sees a plateau, at its
    second validation; the reduced decision must unfreeze both ranks there."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = 10.0 - trainer.current_epoch if trainer.global_rank == 0 else 1.0
        pl_module.log("val/rank_probe", value, sync_dist=False, rank_zero_only=False)


class BatchCounter(pl.Callback):
    """Counts the batches each loop ran and keeps the final global step. Instances register
    themselves in ``instances``: the training job builds its callbacks from the config."""

    instances: list[BatchCounter] = []

    def __init__(self) -> None:
        self.batches = {"train": 0, "validation": 0, "test": 0}
        self.global_step = -1
        BatchCounter.instances.append(self)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.batches["train"] += 1

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.batches["validation"] += 1

    def on_test_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.batches["test"] += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.global_step = trainer.global_step


class CountUpdates(pl.Callback):
    """Counts the updates of the model's training metrics; instances register themselves,
    since the training job builds its callbacks from the config."""

    instances: list[CountUpdates] = []

    def __init__(self) -> None:
        self.updates = 0
        CountUpdates.instances.append(self)

    def on_fit_start(self, trainer, pl_module) -> None:
        original = pl_module.train_metrics.update

        def counted(*args, **kwargs):
            self.updates += 1
            return original(*args, **kwargs)

        pl_module.train_metrics.update = counted


class BatchNormSnapshot(pl.Callback):
    """Saves ``snapshot.pt`` in ``folder``: the model's state when the fit starts and before
    its first step, every module's train/eval mode before that step, and what the training
    images give at the input of the first BatchNorm layer (the mean over batches of each
    batch's channel means and variances, as a cumulative re-estimation averages them),
    measured in ``on_train_start`` before any callback that comes after this one."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.record: dict = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["fit_start"] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    @torch.no_grad()
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        name, layer = next(
            (n, m) for n, m in pl_module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
        )
        inputs: list[torch.Tensor] = []
        handle = layer.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
        was_training = pl_module.training
        pl_module.eval()
        for images, _ in trainer.train_dataloader:
            pl_module(images.to(pl_module.device))
        pl_module.train(was_training)
        handle.remove()
        self.record["first_bn"] = name
        self.record["target_mean"] = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
        self.record["target_var"] = torch.stack(
            [x.transpose(0, 1).flatten(1).var(1, unbiased=True) for x in inputs]
        ).mean(0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            self.record["step1"] = {k: v.clone() for k, v in pl_module.state_dict().items()}
            self.record["modes"] = {n: m.training for n, m in pl_module.named_modules()}
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.record, self.folder / "snapshot.pt")
