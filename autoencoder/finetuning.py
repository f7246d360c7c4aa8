"""Two-phase fine-tuning: a frozen encoder until the validation loss plateaus, then
discriminative learning rates across the encoder's stages (ULMFiT, Howard and Ruder 2018).

The callback never adds or removes parameter groups. The model creates one named group per
encoder stage from the first step; this callback is the model's :class:`RatePolicy`, so it
decides each group's peak rate and, at every step, its multiplier: 0 while the stage is
frozen, a linear ramp from 0 to 1 (warm-up) after it is unfrozen, or ULMFiT's slanted
triangular shape. The rates live in a ``LambdaLR`` scheduler that Lightning steps,
checkpoints and restores like any other.

Freezing happens in ``on_fit_start``, after the strategy wrapped the model: under DDP every
encoder parameter is registered with the reducer, so unfreezing later needs no re-wrap
(the strategy only has to accept unused parameters while stages are frozen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import pytorch_lightning as pl
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from autoencoder.compat import ddp_finds_unused_parameters
from autoencoder.errors import ConfigError, check_choice
from autoencoder.models.encoders import BatchNormMode
from autoencoder.param_groups import (
    DECODER_GROUP,
    ENCODER_PREFIX,
    RatePolicy,
    encoder_group,
    spread_rates,
)

Mode = Literal["min", "max"]
EncoderSchedule = Literal["constant", "stlr"]
GradualTrigger = Literal["plateau", "epoch"]


class StagedEncoder(Protocol):
    """The encoder of a :class:`FinetunableModel`."""

    @property
    def stage_names(self) -> list[str]:
        """The stages, lowest first; one parameter group ``encoder.<stage>`` each."""
        ...

    def set_trainable(
        self, num_trainable: int, frozen_bn: BatchNormMode, unfrozen_bn: BatchNormMode
    ) -> None:
        """Make the top ``num_trainable`` stages trainable, freeze the rest (no gradients),
        and put the BatchNorm of each kind of stage in ``eval`` or ``train`` mode."""
        ...


class FinetunableModel(Protocol):
    """What :class:`TwoPhaseFinetuning` needs of the LightningModule it fine-tunes.

    * ``encoder``: a :class:`StagedEncoder`;
    * ``rate_policy``: the callback sets itself here; the model's ``configure_optimizers``
      asks it for every group's peak rate and per-step multiplier (:class:`RatePolicy`);
    * ``lr``: the decoder's rate, also the top encoder stage's unless ``encoder_lr`` is set;
    * ``refresh_learning_rates()``: re-evaluate every group's rate now, after the policy
      changed in the middle of a step.

    :class:`~autoencoder.models.autoencoder.Autoencoder` is one; ``setup`` checks a model
    for all of it and names what is missing.
    """

    encoder: StagedEncoder
    rate_policy: RatePolicy
    lr: float

    def refresh_learning_rates(self) -> None: ...


# The members of FinetunableModel, as attribute paths for the check in ``setup``.
_REQUIRED_MEMBERS = (
    "encoder",
    "encoder.stage_names",
    "encoder.set_trainable",
    "rate_policy",
    "lr",
    "refresh_learning_rates",
)


def missing_members(model: object) -> list[str]:
    """The members of :class:`FinetunableModel` that ``model`` lacks."""
    missing = []
    for path in _REQUIRED_MEMBERS:
        target = model
        for name in path.split("."):
            target = getattr(target, name, None)
        if target is None:
            missing.append(path)
    return missing


def plateau_update(
    current: float, best: float, wait: int, mode: str, min_delta: float, relative: bool
) -> tuple[bool, float, int]:
    """One plateau check: ``(improved, new_best, new_wait)``.

    ``current`` improves on ``best`` when it is better by more than ``min_delta``
    (a fraction of ``|best|`` when ``relative``). ``wait`` counts checks without improvement.
    """
    delta = min_delta * abs(best) if relative and math.isfinite(best) else min_delta
    improved = current < best - delta if mode == "min" else current > best + delta
    if improved:
        return True, current, 0
    return False, best, wait + 1


def slanted_triangular(step: int, total: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """ULMFiT's slanted triangular multiplier at ``step`` of ``total`` (1 at the peak)."""
    cut = max(1, math.floor(total * cut_frac))
    progress = step / cut if step < cut else max(0.0, 1 - (step - cut) / max(1, total - cut))
    return (1 + progress * (ratio - 1)) / ratio


class TwoPhaseFinetuning(pl.Callback):
    """Freeze the encoder, train the decoder until a plateau, then unfreeze with
    discriminative rates. The other strategies are settings of the same callback:

    * ``full``: ``max_frozen_epochs=0`` (phase 2 from step 0, one rate, no warm-up);
    * ``frozen``: ``patience=None`` and ``max_frozen_epochs=None`` (phase 1 forever);
    * ``epoch``: ``min_frozen_epochs = max_frozen_epochs = N`` with ``patience=None``.

    The model must follow :class:`FinetunableModel`.

    Args:
        encoder_lr: peak rate of the top encoder stage in phase 2 (``None``: the model's
            ``lr``, the decoder's rate).
        factor: each lower stage gets the rate of the stage above divided by this.
        lr_range: instead, a fastai-style ``[low, high]`` pair spread geometrically
            from the lowest stage to the top one.
        rates: instead, one explicit rate per stage, lowest first.
        monitor, mode: the metric whose plateau ends phase 1 (logged at validation). A NaN
            or infinite value is skipped with a warning, never counted as a plateau.
        patience: validation checks without improvement that make a plateau
            (``None``: never transition on a plateau).
        min_delta: the smallest change that counts as an improvement.
        relative_delta: ``min_delta`` is a fraction of the best value so far.
        min_frozen_epochs, max_frozen_epochs: bounds on phase 1 in (fractional) epochs;
            ``max_frozen_epochs=None`` lets phase 1 last until a plateau, however long.
        warmup_steps, warmup_epochs: linear ramp from 0 of each newly unfrozen group
            (``warmup_steps`` wins when set; 0 disables).
        min_warmup_steps: lower bound on a warm-up given in epochs. Adam's moment estimates
            of a newly unfrozen group start empty, and with few steps per epoch a one-epoch
            ramp was too short to avoid a drop in validation PSNR (see the README).
        train_bn: let the BatchNorm layers of frozen stages use batch statistics in phase 1
            (default: eval mode, pretrained running statistics).
        bn_policy: BatchNorm of unfrozen stages in phase 2: ``eval`` keeps the pretrained
            statistics (their affine weights still learn), ``train`` uses batch statistics.
        gradual: ULMFiT gradual unfreezing: the top stage first, one more stage per
            plateau or per epoch (``gradual_every``).
        schedule: encoder rates in phase 2: ``constant`` (after warm-up) or ``stlr``
            (slanted triangular, replaces the warm-up).
        stlr_cut_frac, stlr_ratio: the slanted triangular shape (ULMFiT: 0.1 and 32).
    """

    def __init__(
        self,
        encoder_lr: float | None = None,
        factor: float = 2.6,
        lr_range: Sequence[float] | None = None,
        rates: Sequence[float] | None = None,
        monitor: str = "val/loss",
        mode: Mode = "min",
        patience: int | None = 1,
        min_delta: float = 0.0,
        relative_delta: bool = False,
        min_frozen_epochs: float = 1.0,
        max_frozen_epochs: float | None = 1.0,
        warmup_steps: int | None = None,
        warmup_epochs: float = 1.0,
        min_warmup_steps: int = 100,
        train_bn: bool = False,
        bn_policy: BatchNormMode = "eval",
        gradual: bool = False,
        gradual_every: GradualTrigger = "plateau",
        schedule: EncoderSchedule = "constant",
        stlr_cut_frac: float = 0.1,
        stlr_ratio: float = 32.0,
    ) -> None:
        super().__init__()
        check_choice("finetune.mode", mode, Mode)
        check_choice("finetune.bn_policy", bn_policy, BatchNormMode)
        check_choice("finetune.schedule", schedule, EncoderSchedule)
        check_choice("finetune.gradual_every", gradual_every, GradualTrigger)
        if patience is not None and patience < 1:
            raise ConfigError(f"finetune.patience must be >= 1 or null, got {patience}.")
        if max_frozen_epochs is not None and max_frozen_epochs < min_frozen_epochs:
            raise ConfigError(
                f"finetune.max_frozen_epochs={max_frozen_epochs} is below "
                f"finetune.min_frozen_epochs={min_frozen_epochs}."
            )
        self.encoder_lr = encoder_lr
        self.factor = factor
        self.lr_range = list(lr_range) if lr_range is not None else None
        self.rates = list(rates) if rates is not None else None
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.relative_delta = relative_delta
        self.min_frozen_epochs = min_frozen_epochs
        self.max_frozen_epochs = max_frozen_epochs
        self.warmup_steps = warmup_steps
        self.warmup_epochs = warmup_epochs
        self.min_warmup_steps = min_warmup_steps
        self.train_bn = train_bn
        self.bn_policy = bn_policy
        self.gradual = gradual
        self.gradual_every = gradual_every
        self.schedule = schedule
        self.stlr_cut_frac = stlr_cut_frac
        self.stlr_ratio = stlr_ratio
        self.stage_names: list[str] = []
        # The state that a checkpoint saves and restores:
        self.unfreeze_steps: dict[str, int] = {}  # stage -> step it was unfrozen at
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.transition_epoch: int | None = None
        self.resolved_warmup_steps = 0
        self.last_unfreeze_epoch = 0.0
        self.total_steps = 0

    @property
    def phase(self) -> int:
        """1 while the whole encoder is frozen, 2 once any stage was unfrozen."""
        return 2 if self.unfreeze_steps else 1

    @property
    def transition_step(self) -> int | None:
        """The global step at which phase 2 began (``None`` before)."""
        return min(self.unfreeze_steps.values(), default=None)

    # ------------------------------------------------------------------ rate policy
    def peak_rates(self, group_names: Sequence[str], decoder_lr: float) -> dict[str, float]:
        top_rate = decoder_lr if self.encoder_lr is None else self.encoder_lr
        stage_rates = spread_rates(
            len(self.stage_names), top_rate, self.factor, self.lr_range, self.rates
        )
        peaks = {encoder_group(s): r for s, r in zip(self.stage_names, stage_rates, strict=True)}
        peaks[DECODER_GROUP] = decoder_lr
        missing = set(group_names) - set(peaks)
        if missing:
            raise ConfigError(f"no learning rate for parameter groups {sorted(missing)}.")
        return {name: peaks[name] for name in group_names}

    def multiplier(self, group_name: str, step: int) -> float:
        if group_name == DECODER_GROUP:
            return 1.0
        start = self.unfreeze_steps.get(group_name.removeprefix(ENCODER_PREFIX))
        if start is None or step < start:
            return 0.0
        if self.schedule == "stlr":
            return slanted_triangular(
                step - start, max(1, self.total_steps - start), self.stlr_cut_frac, self.stlr_ratio
            )
        if self.resolved_warmup_steps > 0:
            return min(1.0, (step - start + 1) / self.resolved_warmup_steps)
        return 1.0

    # ------------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        missing = missing_members(pl_module)
        if missing:
            raise ConfigError(
                f"TwoPhaseFinetuning cannot fine-tune {type(pl_module).__name__}: it lacks "
                f"{', '.join(missing)}. The model must follow "
                "autoencoder.finetuning.FinetunableModel (as "
                "autoencoder.models.autoencoder.Autoencoder does), or train it without the "
                "finetune callback."
            )
        self.stage_names = list(pl_module.encoder.stage_names)
        pl_module.rate_policy = self
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and not ddp_finds_unused_parameters(strategy):
            raise ConfigError(
                "two-phase fine-tuning under DDP needs find_unused_parameters=True, since frozen "
                "stages produce no gradients: use trainer=ddp (strategy "
                "ddp_find_unused_parameters_true) or finetune=full."
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.total_steps = int(min(trainer.estimated_stepping_batches, 2**62))
        if self.phase == 1 and self.max_frozen_epochs == 0:
            self._unfreeze(trainer, pl_module, at_start=True)
        self._apply(pl_module)
        pl_module.refresh_learning_rates()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pl_module.log("finetune/phase", float(self.phase), on_step=True, on_epoch=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self._all_unfrozen():
            return
        epochs_done = self._epochs_done(trainer)
        if self.phase == 2 and self.gradual_every == "epoch":
            decision = epochs_done - self.last_unfreeze_epoch >= 1
        else:
            decision = self._plateau_decision(trainer, epochs_done)
        if trainer.strategy.reduce_boolean_decision(decision, all=False):
            self._unfreeze(trainer, pl_module)
            self.last_unfreeze_epoch = epochs_done

    def _plateau_decision(self, trainer: pl.Trainer, epochs_done: float) -> bool:
        """Whether to unfreeze now: phase 1 past its cap, or a plateau of the monitor.

        A NaN or infinite value is skipped: it changes neither the best value nor the wait.
        """
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            available = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise ConfigError(
                f"finetune.monitor={self.monitor!r} was not logged at validation "
                f"(logged: {available}). Set finetune.monitor to one of them."
            )
        frozen = self.phase == 1
        if frozen and self.max_frozen_epochs is not None and epochs_done >= self.max_frozen_epochs:
            return True
        value = float(value)
        if not math.isfinite(value):
            rank_zero_warn(
                f"finetune: {self.monitor} is {value} at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}; skipped, not counted towards a plateau."
            )
            return False
        _, self.best, self.wait = plateau_update(
            value, self.best, self.wait, self.mode, self.min_delta, self.relative_delta
        )
        if frozen and epochs_done < self.min_frozen_epochs:
            return False
        return self.patience is not None and self.wait >= self.patience

    # -------------------------------------------------------------------- mechanics
    def _all_unfrozen(self) -> bool:
        return len(self.unfreeze_steps) == len(self.stage_names)

    def _epochs_done(self, trainer: pl.Trainer) -> float:
        batches = trainer.num_training_batches
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if not batches or not math.isfinite(batches):
            return float(trainer.current_epoch + 1)
        return trainer.current_epoch + min(1.0, done / batches)

    def _unfreeze(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, at_start: bool = False
    ) -> None:
        step = trainer.global_step
        if self.phase == 1:
            self.transition_epoch = 0 if at_start else trainer.current_epoch
            self.resolved_warmup_steps = self._resolve_warmup(trainer)
        still_frozen = [s for s in reversed(self.stage_names) if s not in self.unfreeze_steps]
        newly = still_frozen[:1] if self.gradual else still_frozen
        for stage in newly:
            self.unfreeze_steps[stage] = step
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        if at_start:
            return
        self._apply(pl_module)
        pl_module.refresh_learning_rates()
        peaks = self.peak_rates(
            [DECODER_GROUP, *(encoder_group(s) for s in self.stage_names)], pl_module.lr
        )
        summary = ", ".join(
            f"{name}={rate:.2e}"
            for name, rate in peaks.items()
            if name == DECODER_GROUP or name.removeprefix(ENCODER_PREFIX) in self.unfreeze_steps
        )
        if self.transition_step == step:
            for logger in trainer.loggers:
                logger.log_metrics(
                    {
                        "finetune/transition_epoch": self.transition_epoch,
                        "finetune/transition_step": step,
                    },
                    step=step,
                )
        rank_zero_info(
            f"finetune: unfroze {', '.join(newly)} at epoch {trainer.current_epoch}, step {step} "
            f"(phase 2); peak rates {summary}; warm-up {self.resolved_warmup_steps} steps, "
            f"BatchNorm {self.bn_policy}, encoder schedule {self.schedule}."
        )

    def _resolve_warmup(self, trainer: pl.Trainer) -> int:
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        if self.warmup_epochs == 0:
            return 0
        steps_per_epoch = trainer.num_training_batches / max(1, trainer.accumulate_grad_batches)
        if not math.isfinite(steps_per_epoch):  # phase 2 from step 0: no train loader yet
            if not trainer.max_epochs or trainer.max_epochs < 1:
                raise ConfigError("set finetune.warmup_steps when trainer.max_epochs is not set.")
            steps_per_epoch = self.total_steps / trainer.max_epochs
        return max(round(self.warmup_epochs * steps_per_epoch), self.min_warmup_steps)

    def _apply(self, pl_module: pl.LightningModule) -> None:
        pl_module.encoder.set_trainable(
            len(self.unfreeze_steps),
            frozen_bn="train" if self.train_bn else "eval",
            unfrozen_bn=self.bn_policy,
        )

    # ---------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "unfreeze_steps": dict(self.unfreeze_steps),
            "best": self.best,
            "wait": self.wait,
            "transition_epoch": self.transition_epoch,
            "resolved_warmup_steps": self.resolved_warmup_steps,
            "last_unfreeze_epoch": self.last_unfreeze_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.unfreeze_steps = dict(state_dict["unfreeze_steps"])
        self.best = state_dict["best"]
        self.wait = state_dict["wait"]
        self.transition_epoch = state_dict["transition_epoch"]
        self.resolved_warmup_steps = state_dict["resolved_warmup_steps"]
        self.last_unfreeze_epoch = state_dict["last_unfreeze_epoch"]
