"""What a NaN or infinite training loss does (``model.nonfinite_loss``): a callback that
the model installs itself (``Autoencoder.configure_callbacks``), so that the config key
stays on the model.

``stop`` watches the losses on the device and raises at the logging cadence (like
Lightning's ``SpikeDetection``, without a host sync per step); ``skip`` tells the model's
training step to return no loss, which is how Lightning skips a batch's update; ``ignore``
does nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from autoencoder.compat import attached_trainer, logs_this_step
from autoencoder.errors import NonFiniteLossError, check_choice

NonfiniteAction = Literal["stop", "skip", "ignore"]


class NonfiniteWatch:
    """The first non-finite training loss since the last look, kept on the device: each
    step adds two small kernels and no host sync; :meth:`first` syncs once."""

    def __init__(self) -> None:
        self.flag: torch.Tensor | None = None  # index into ``steps`` of the first, or -1
        self.value: torch.Tensor | None = None
        self.steps: list[tuple[int, int, str]] = []  # (global step, epoch, phase) since

    def record(self, loss: torch.Tensor, step: int, epoch: int, phase: str) -> None:
        loss = loss.detach().float()
        if self.flag is None:
            self.flag = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.value = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self.flag < 0)
        self.flag = torch.where(first, len(self.steps), self.flag)
        self.value = torch.where(first, loss, self.value)
        self.steps.append((step, epoch, phase))

    def first(self) -> tuple[float, int, int, str] | None:
        """The loss, global step, epoch and phase of the first non-finite loss since the
        last call, if any."""
        if self.flag is None:
            return None
        index = int(self.flag)
        found = (float(self.value), *self.steps[index]) if index >= 0 else None
        self.flag, self.value, self.steps = None, None, []
        return found


class NonfiniteLoss(pl.Callback):
    """Stop the run at, or skip the update of, a NaN or infinite training loss.

    Args:
        action: ``stop`` raises a :class:`~autoencoder.errors.NonFiniteLossError` naming
            the step and the fine-tuning phase, looking at the losses kept on the device at
            the logging cadence and at every epoch's end (before its checkpoints); ``skip``
            makes :meth:`skips` true for such a loss, with a warning (the loss is looked at
            on the host at every step and, under DDP, all ranks agree); ``ignore`` does not
            check.

    The model's phase is read through its ``phase_description()``.
    """

    def __init__(self, action: NonfiniteAction = "stop") -> None:
        check_choice("model.nonfinite_loss", action, NonfiniteAction)
        self.action = action
        self.skipped_batches = 0
        self._watch = NonfiniteWatch()
        self._batch_step = 0  # the global step of the batch being trained

    def skips(self, pl_module: pl.LightningModule, loss: torch.Tensor) -> bool:
        """``skip``: whether to skip the update of a batch with this training loss, which is
        non-finite on some rank (so all ranks skip together); warns when it does."""
        if self.action != "skip" or _is_finite_on_every_rank(pl_module, loss):
            return False
        self.skipped_batches += 1
        rank_zero_warn(
            f"non-finite training loss ({loss.item()}) at global step {pl_module.global_step}, "
            f"epoch {pl_module.current_epoch}, {pl_module.phase_description()}: batch skipped "
            f"(model.nonfinite_loss=skip), {self.skipped_batches} so far in this run."
        )
        return True

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """``stop``: keep the batch's loss on the device; look at the losses watched at the
        logging cadence and at the end of every epoch, so a step never waits for the
        device; all ranks decide together."""
        if self.action != "stop":
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            phase = pl_module.phase_description()
            self._watch.record(loss, self._batch_step, trainer.current_epoch, phase)
        if not (logs_this_step(trainer) or batch_idx + 1 >= trainer.num_training_batches):
            return
        found = self._watch.first()
        if trainer.strategy.reduce_boolean_decision(found is not None, all=False):
            value, step, epoch, phase = found or ("nan", "?", "?", "on another rank")
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at global step {step}, epoch {epoch}, "
                f"{phase}. Lower model.lr (and finetune.encoder_lr), check the data for NaN "
                "or extreme pixel values, or set model.nonfinite_loss=skip to skip such "
                "batches. The run's checkpoints/last.ckpt (once an epoch ended) holds the "
                "weights from before this step."
            )


def _is_finite_on_every_rank(pl_module: pl.LightningModule, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank (so all ranks stop or skip together)."""
    nonfinite = not bool(torch.isfinite(loss.detach()).all())
    trainer = attached_trainer(pl_module)
    if trainer is not None:
        nonfinite = bool(trainer.strategy.reduce_boolean_decision(nonfinite, all=False))
    return not nonfinite
