"""Two-phase fine-tuning: a frozen encoder until the validation loss plateaus, then
discriminative learning rates across the encoder's stages (ULMFiT, Howard and Ruder 2018).

Control flows one way, from the callback to the model. The model follows
:class:`FinetunableModel`: it builds one named parameter group per encoder stage from the
first step and sets each group's rate from the :class:`~autoencoder.param_groups.RatePolicy`
it holds, through a ``LambdaLR`` scheduler that Lightning steps, checkpoints and restores.
At setup the callback puts its own policy there, a :class:`StagedRates` that it alone
changes: 0 while a stage is frozen, then a linear ramp from 0 to 1 (warm-up) or ULMFiT's
slanted triangular shape. When it unfreezes in the middle of a step, the callback
re-evaluates the trainer's schedulers, so the new rates hold from the next optimiser step.

Freezing happens in ``on_fit_start``, after the strategy wrapped the model: under DDP every
encoder parameter is registered with the reducer, so unfreezing later needs no re-wrap
(the strategy only has to accept unused parameters while stages are frozen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.optim.lr_scheduler import LambdaLR
from typing_extensions import override

from autoencoder.compat import (
    batches_done_in_epoch,
    ddp_finds_unused_parameters,
    lerp_all_,
    logs_this_step,
    reapply_lr_lambdas,
)
from autoencoder.errors import ConfigError
from autoencoder.finetuning_options import (
    Anchoring,
    AnchorScope,
    BatchNormPolicy,
    EncoderRamp,
    GradualTrigger,
    Mode,
    PlateauRule,
    ScheduleShape,
    Unfreezing,
    plateau_update,
)
from autoencoder.finetuning_rates import FinetunableModel, StagedRates, missing_attribute
from autoencoder.models.encoders import BatchNormMode
from autoencoder.param_groups import DECODER_GROUP, ENCODER_PREFIX, RateSpread


# ------------------------------------------------------------------------------ callback
class TwoPhaseFinetuning(pl.Callback):
    r"""Freeze the encoder, train the decoder until a plateau, then unfreeze with
    discriminative rates.

    The arguments are the keys of ``conf/finetune`` (``finetune.patience=2``). The model must
    follow :class:`FinetunableModel`. The other strategies are settings of this callback:

    * ``full``: ``min_frozen_epochs = max_frozen_epochs = 0`` (phase 2 from step 0),
      ``factor=1`` (one rate), no warm-up, BatchNorm on batch statistics
      (``conf/finetune/full.yaml``);
    * ``frozen``: ``patience=None`` and ``max_frozen_epochs=None`` (phase 1 forever);
    * ``epoch``: ``min_frozen_epochs = max_frozen_epochs = N`` with ``patience=None``.

    Args:
        encoder_lr: the peak rate of the top encoder stage in phase 2 (``None``: the
            decoder's rate, ``model.lr``); each lower stage gets the rate of the stage above
            divided by ``factor`` (ULMFiT).
        factor: the divisor between the rates of neighbouring stages (1: one rate).
        lr_range: a fastai-style ``[low, high]`` pair spread geometrically over the stages,
            the lowest stage at ``low`` and the top one at ``high``; wins over
            ``encoder_lr`` and ``factor``.
        rates: one peak rate per stage, lowest first; wins over the other spellings.
        monitor: the metric whose plateau ends phase 1, logged at validation. A NaN or
            infinite value is skipped with a warning, never counted as a plateau.
        mode: ``min`` or ``max``: whether ``monitor`` improves by decreasing or increasing.
        patience: validation checks without improvement that make a plateau (``None``:
            never transition on a plateau).
        min_delta: the smallest change of ``monitor`` that counts as an improvement.
        relative_delta: ``min_delta`` is a fraction of the best value so far.
        min_frozen_epochs: the shortest phase 1, in (fractional) epochs.
        max_frozen_epochs: the longest phase 1, in (fractional) epochs: ``None`` lets it
            last until a plateau, however long, and ``0`` starts phase 2 at step 0.
        warmup_steps: the length of the linear warm-up from 0 of a newly unfrozen stage, in
            optimiser steps; wins over ``warmup_epochs`` when set (0: no warm-up).
        warmup_epochs: the same length in epochs (0: no warm-up).
        min_warmup_steps: the shortest warm-up given in epochs, in steps (0: no bound). Adam's
            moment estimates of a newly unfrozen group start empty, and with few steps per
            epoch a one-epoch ramp can dip.
        frozen_bn: the BatchNorm of frozen stages (all of them in phase 1) while the model
            trains: ``eval`` keeps the pretrained running statistics, ``train`` uses batch
            statistics.
        unfrozen_bn: the same for unfrozen stages, whose affine weights learn in either mode.
        gradual: ULMFiT's gradual unfreezing: the top stage first, then one more stage per
            plateau or per epoch (``gradual_every``); otherwise the whole encoder at once.
        gradual_every: ``plateau`` or ``epoch``.
        encoder_schedule: the encoder rates in phase 2: ``constant`` (the peak, after the
            warm-up) or ``stlr`` (ULMFiT's slanted triangular rates until the end of the run,
            no warm-up).
        stlr_cut_frac: the fraction of the steps left that the slanted triangle rises for.
        stlr_ratio: how much smaller the slanted triangle's lowest rate is than its peak.
        l2_sp: a pull of the weights toward their values when fitting begins (L2-SP, Li et
            al. 2018), decoupled from the gradient as AdamW decouples weight decay: after
            every optimiser step each weight moves ``lr * l2_sp`` of the way back to its
            start, ``lr`` its group's rate at that step (0: off). The start is the pretrained
            encoder, and with ``init_from`` the pretrained decoder too.
        l2_sp_scope: the groups pulled: ``all``, or the ``encoder`` stages only (for a fresh
            decoder, whose start is its random initialisation).

    Attributes:
        transition_epoch: the epoch at whose validation phase 2 began (0 when it ran from
            the start; ``None`` before).

    Raises:
        ConfigError: at construction, for an option out of its range; at setup, for a
            model without an attribute of :class:`FinetunableModel`, or a DDP strategy
            that does not find unused parameters; at fit start, for a scheduler other than
            the model's ``LambdaLR``; at validation, for a ``monitor`` that was not logged.

    Example::

        >>> finetuning = TwoPhaseFinetuning(patience=2, factor=3.0, unfrozen_bn="train")
        >>> trainer = pl.Trainer(callbacks=[finetuning])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        encoder_lr: float | None = None,
        factor: float = 2.6,
        lr_range: tuple[float, float] | None = None,
        rates: tuple[float, ...] | None = None,
        monitor: str = "val/loss",
        mode: Mode = "min",
        patience: int | None = 1,
        min_delta: float = 0.0,
        relative_delta: bool = False,
        min_frozen_epochs: float = 1.0,
        max_frozen_epochs: float | None = 1.0,
        warmup_steps: int | None = None,
        warmup_epochs: float = 1.0,
        min_warmup_steps: int = 0,
        frozen_bn: BatchNormMode = "eval",
        unfrozen_bn: BatchNormMode = "eval",
        gradual: bool = False,
        gradual_every: GradualTrigger = "plateau",
        encoder_schedule: ScheduleShape = "constant",
        stlr_cut_frac: float = 0.1,
        stlr_ratio: float = 32.0,
        l2_sp: float = 0.0,
        l2_sp_scope: AnchorScope = "all",
    ) -> None:
        super().__init__()
        self.plateau = PlateauRule(
            monitor, mode, patience, min_delta, relative_delta, min_frozen_epochs, max_frozen_epochs
        )
        self.batchnorm = BatchNormPolicy(frozen_bn=frozen_bn, unfrozen_bn=unfrozen_bn)
        self.unfreezing = Unfreezing(gradual=gradual, gradual_every=gradual_every)
        self.anchoring = Anchoring(l2_sp=l2_sp, l2_sp_scope=l2_sp_scope)
        self.rates = StagedRates(
            RateSpread(encoder_lr, factor, _as_tuple(lr_range), _as_tuple(rates)),
            EncoderRamp(
                encoder_schedule=encoder_schedule,
                warmup_steps=warmup_steps,
                warmup_epochs=warmup_epochs,
                min_warmup_steps=min_warmup_steps,
                stlr_cut_frac=stlr_cut_frac,
                stlr_ratio=stlr_ratio,
            ),
        )
        # With rates.unfreeze_steps and the plateau's best and wait, the state that a
        # checkpoint saves and restores:
        self._reset_plateau()
        self.transition_epoch: int | None = None
        self.last_unfreeze_epoch = 0.0
        self.anchors: dict[str, list[torch.Tensor]] = {}  # group -> its starting weights
        # an unfreezing at the end of a validation: the loop then restores the modules'
        # modes from before it, so the new BatchNorm modes are set again at the next step
        self._modes_pending = False

    @property
    def phase(self) -> int:
        """:attr:`StagedRates.phase <autoencoder.finetuning_rates.StagedRates.phase>`."""
        return self.rates.phase

    @property
    def transition_step(self) -> int | None:
        """:attr:`StagedRates.transition_step
        <autoencoder.finetuning_rates.StagedRates.transition_step>`."""
        return self.rates.transition_step

    # ------------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        missing = missing_attribute(pl_module)
        if missing is not None:
            raise ConfigError(
                f"TwoPhaseFinetuning needs the model's `{missing}`, which "
                f"{type(pl_module).__name__} lacks (see autoencoder.finetuning.FinetunableModel)."
            )
        model = cast(FinetunableModel, pl_module)
        self.rates.stage_names = list(model.encoder.stage_names)
        model.rate_policy = self.rates
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and not ddp_finds_unused_parameters(strategy):
            raise ConfigError(
                "two-phase fine-tuning under DDP needs find_unused_parameters=True, since frozen "
                "stages produce no gradients: use trainer=ddp (strategy "
                "ddp_find_unused_parameters_true) or finetune=full."
            )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _check_schedulers(trainer)
        self.rates.total_steps = int(min(trainer.estimated_stepping_batches, 2**62))
        if self.phase == 1 and self.plateau.max_frozen_epochs == 0:
            self._unfreeze(trainer, pl_module, at_start=True)
        self._apply(trainer, pl_module)
        if self.anchoring.l2_sp > 0 and not self.anchors:  # a resumed run restored them
            self.anchors = {
                group["name"]: [param.detach().clone() for param in group["params"]]
                for group in trainer.optimizers[0].param_groups
                if self.anchoring.l2_sp_scope == "all" or group["name"] != DECODER_GROUP
            }

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._modes_pending:
            self._set_trainable(pl_module)
            self._modes_pending = False
        if logs_this_step(trainer):  # at the other steps the value would go unseen
            pl_module.log("finetune/phase", float(self.phase), on_step=True, on_epoch=False)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        """L2-SP: every anchored group moves ``lr * l2_sp`` of the way back to its start."""
        if not self.anchors:
            return
        for group in trainer.optimizers[0].param_groups:
            anchors = self.anchors.get(group["name"])
            pull = min(1.0, group["lr"] * self.anchoring.l2_sp)
            if anchors and pull > 0:
                with torch.no_grad():
                    lerp_all_(group["params"], anchors, pull)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._all_unfrozen():
            return
        epochs_done = self._epochs_done(trainer)
        if self.phase == 2 and self.unfreezing.gradual_every == "epoch":
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
        rule = self.plateau
        value = trainer.callback_metrics.get(rule.monitor)
        if value is None:
            available = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise ConfigError(
                f"finetune.monitor={rule.monitor!r} was not logged at validation "
                f"(logged: {available}). Set finetune.monitor to one of them."
            )
        frozen = self.phase == 1
        if frozen and rule.max_frozen_epochs is not None and epochs_done >= rule.max_frozen_epochs:
            return True
        value = float(value)
        if not math.isfinite(value):
            rank_zero_warn(
                f"finetune: {rule.monitor} is {value} at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}; skipped, not counted towards a plateau."
            )
            return False
        _, self.best, self.wait = plateau_update(
            value, self.best, self.wait, rule.mode, rule.min_delta, rule.relative_delta
        )
        if frozen and epochs_done < rule.min_frozen_epochs:
            return False
        return rule.patience is not None and self.wait >= rule.patience

    # -------------------------------------------------------------------- mechanics
    def _reset_plateau(self) -> None:
        """Start looking for a plateau afresh: no best value, no checks waited."""
        self.best = self.plateau.initial_best
        self.wait = 0

    def _all_unfrozen(self) -> bool:
        return len(self.rates.unfreeze_steps) == len(self.rates.stage_names)

    def _epochs_done(self, trainer: pl.Trainer) -> float:
        batches = trainer.num_training_batches
        done = batches_done_in_epoch(trainer)
        if not batches or not math.isfinite(batches):
            return float(trainer.current_epoch + 1)
        return trainer.current_epoch + min(1.0, done / batches)

    def _unfreeze(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, at_start: bool = False
    ) -> None:
        rates = self.rates
        step = trainer.global_step
        if self.phase == 1:
            self.transition_epoch = 0 if at_start else trainer.current_epoch
            rates.resolved_warmup_steps = self._resolve_warmup(trainer)
        still_frozen = [s for s in reversed(rates.stage_names) if s not in rates.unfreeze_steps]
        newly = still_frozen[:1] if self.unfreezing.gradual else still_frozen
        for stage in newly:
            rates.unfreeze_steps[stage] = step
        self._reset_plateau()
        if at_start:
            return
        self._apply(trainer, pl_module)
        self._modes_pending = True
        summary = ", ".join(
            f"{name}={rate:.2e}"
            for name, rate in self._peak_rates(trainer).items()
            if name == DECODER_GROUP or name.removeprefix(ENCODER_PREFIX) in rates.unfreeze_steps
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
            f"(phase 2); peak rates {summary}; warm-up {rates.resolved_warmup_steps} steps, "
            f"BatchNorm of unfrozen stages {self.batchnorm.unfrozen_bn}, encoder schedule "
            f"{rates.ramp.encoder_schedule}."
        )

    def _resolve_warmup(self, trainer: pl.Trainer) -> int:
        ramp = self.rates.ramp
        if ramp.warmup_steps is not None:
            return int(ramp.warmup_steps)
        if ramp.warmup_epochs == 0:
            return 0
        steps_per_epoch = trainer.num_training_batches / max(1, trainer.accumulate_grad_batches)
        if not math.isfinite(steps_per_epoch):  # phase 2 from step 0: no train loader yet
            if not trainer.max_epochs or trainer.max_epochs < 1:
                raise ConfigError("set finetune.warmup_steps when trainer.max_epochs is not set.")
            steps_per_epoch = self.rates.total_steps / trainer.max_epochs
        return max(round(ramp.warmup_epochs * steps_per_epoch), ramp.min_warmup_steps)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Freeze and unfreeze the stages as the rates say, and make every group's rate
        follow them from the next optimiser step."""
        self._set_trainable(pl_module)
        for config in trainer.lr_scheduler_configs:
            reapply_lr_lambdas(config.scheduler)

    def _set_trainable(self, pl_module: pl.LightningModule) -> None:
        pl_module.encoder.set_trainable(
            len(self.rates.unfreeze_steps),
            frozen_bn=self.batchnorm.frozen_bn,
            unfrozen_bn=self.batchnorm.unfrozen_bn,
        )

    @staticmethod
    def _peak_rates(trainer: pl.Trainer) -> dict[str, float]:
        """Every group's peak rate, as the model's scheduler holds it."""
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        groups = scheduler.optimizer.param_groups
        return {group["name"]: base for group, base in zip(groups, scheduler.base_lrs, strict=True)}

    # ---------------------------------------------------------------------- resume
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "unfreeze_steps": dict(self.rates.unfreeze_steps),
            "best": self.best,
            "wait": self.wait,
            "transition_epoch": self.transition_epoch,
            "resolved_warmup_steps": self.rates.resolved_warmup_steps,
            "last_unfreeze_epoch": self.last_unfreeze_epoch,
            "anchors": self.anchors,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # in place: the model holds self.rates
        self.rates.unfreeze_steps = dict(state_dict["unfreeze_steps"])
        self.rates.resolved_warmup_steps = state_dict["resolved_warmup_steps"]
        self.best = state_dict["best"]
        self.wait = state_dict["wait"]
        self.transition_epoch = state_dict["transition_epoch"]
        self.last_unfreeze_epoch = state_dict["last_unfreeze_epoch"]
        self.anchors = dict(state_dict.get("anchors") or {})


def _check_schedulers(trainer: pl.Trainer) -> None:
    """The callback changes rates through the model's ``LambdaLR`` (one lambda per group);
    another scheduler would ignore it."""
    configs = trainer.lr_scheduler_configs
    problems = [
        type(config.scheduler).__name__
        for config in configs
        if not isinstance(config.scheduler, LambdaLR)
        or len(config.scheduler.lr_lambdas) != len(config.scheduler.optimizer.param_groups)
    ]
    if not configs or problems:
        found = ", ".join(problems) or "none"
        raise ConfigError(
            "TwoPhaseFinetuning sets each parameter group's rate through the model's LambdaLR "
            f"scheduler (one lambda per group, stepped every optimiser step); found: {found}. "
            "Return that scheduler from configure_optimizers (as Autoencoder does), or train "
            "without the finetune callback."
        )


def _as_tuple(values: Sequence[float] | None) -> tuple[float, ...] | None:
    """A list of rates from the config (YAML has no tuples) as the tuple the options hold."""
    return None if values is None else tuple(values)
