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

import inspect
import math
import typing
from collections.abc import Sequence
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.optim.lr_scheduler import LambdaLR

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
    BatchNormPolicy,
    EncoderRamp,
    PlateauRule,
    Unfreezing,
    flat_parameters,
    option_groups,
)
from autoencoder.models.encoders import BatchNormMode
from autoencoder.param_groups import (
    DECODER_GROUP,
    ENCODER_PREFIX,
    RatePolicy,
    RateSpread,
    encoder_group,
)


# ------------------------------------------------------------------------------ contract
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
    """What :class:`TwoPhaseFinetuning` needs of the LightningModule it fine-tunes; the
    check at setup names the members a model lacks.

    The model's ``configure_optimizers`` must build one named group per encoder stage
    (``encoder.<stage>``) and one ``decoder`` group, and set each group's rate at every step
    from ``rate_policy``, through a ``LambdaLR`` stepped every optimiser step. At setup the
    callback puts its :class:`StagedRates` in ``rate_policy``; it changes rates through the
    trainer's schedulers, and the model never calls it.
    :class:`~autoencoder.models.autoencoder.Autoencoder` is one.
    """

    encoder: StagedEncoder
    rate_policy: RatePolicy


_ABSENT = object()


def _protocol_members(protocol: type) -> dict[str, Any]:
    """The members a Protocol declares, in order, each with its type (``None`` for a
    method)."""
    members: dict[str, Any] = dict(typing.get_type_hints(protocol))
    for name, value in vars(protocol).items():
        if name.startswith("_") or name in members:
            continue
        fget = value.fget if isinstance(value, property) else None
        members[name] = typing.get_type_hints(fget).get("return") if fget else None
    return members


def _is_protocol(kind: Any) -> bool:
    return isinstance(kind, type) and Protocol in kind.__bases__


def missing_members(obj: object, protocol: type, prefix: str = "") -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks, as attribute paths; members typed
    with a Protocol are checked down to theirs."""
    missing = []
    for name, kind in _protocol_members(protocol).items():
        value = _ABSENT if obj is _ABSENT else getattr(obj, name, _ABSENT)
        if value is _ABSENT:
            missing.append(prefix + name)
        if _is_protocol(kind):
            missing += missing_members(value, kind, f"{prefix}{name}.")
    return missing


# --------------------------------------------------------------------- plateaus and rates
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


class StagedRates:
    """The :class:`~autoencoder.param_groups.RatePolicy` of two-phase fine-tuning: every
    encoder stage at rate 0 until it is unfrozen, then ramped to its peak (``spread``,
    ``ramp``); the decoder at ``model.lr`` throughout.

    It holds the state the rates depend on, which only :class:`TwoPhaseFinetuning` changes:
    the stages, the step each one was unfrozen at, the warm-up and the run's length.
    """

    def __init__(self, spread: RateSpread, ramp: EncoderRamp) -> None:
        self.spread = spread
        self.ramp = ramp
        self.stage_names: list[str] = []
        self.unfreeze_steps: dict[str, int] = {}  # stage -> step it was unfrozen at
        self.resolved_warmup_steps = 0
        self.total_steps = 0

    @property
    def phase(self) -> int:
        """1 while the whole encoder is frozen, 2 once any stage was unfrozen."""
        return 2 if self.unfreeze_steps else 1

    @property
    def transition_step(self) -> int | None:
        """The global step at which phase 2 began (``None`` before)."""
        return min(self.unfreeze_steps.values(), default=None)

    def peak_rates(self, group_names: Sequence[str], decoder_lr: float) -> dict[str, float]:
        stage_rates = self.spread.stage_rates(len(self.stage_names), decoder_lr)
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
        if self.ramp.encoder_schedule == "stlr":
            return slanted_triangular(
                step - start,
                max(1, self.total_steps - start),
                self.ramp.stlr_cut_frac,
                self.ramp.stlr_ratio,
            )
        if self.resolved_warmup_steps > 0:
            return min(1.0, (step - start + 1) / self.resolved_warmup_steps)
        return 1.0


# ------------------------------------------------------------------------------ callback
class TwoPhaseFinetuning(pl.Callback):
    """Freeze the encoder, train the decoder until a plateau, then unfreeze with
    discriminative rates. The other strategies are settings of the same callback:

    * ``full``: ``min_frozen_epochs = max_frozen_epochs = 0`` (phase 2 from step 0),
      ``factor=1`` (one rate), no warm-up, BatchNorm on batch statistics
      (``conf/finetune/full.yaml``);
    * ``frozen``: ``patience=None`` and ``max_frozen_epochs=None`` (phase 1 forever);
    * ``epoch``: ``min_frozen_epochs = max_frozen_epochs = N`` with ``patience=None``.

    The model must follow :class:`FinetunableModel`. Each argument is one group of options
    (``None``: its defaults); :meth:`from_flat` takes them as the flat keys of
    ``conf/finetune``.
    """

    def __init__(
        self,
        plateau: PlateauRule | None = None,
        spread: RateSpread | None = None,
        ramp: EncoderRamp | None = None,
        batchnorm: BatchNormPolicy | None = None,
        unfreezing: Unfreezing | None = None,
        anchoring: Anchoring | None = None,
    ) -> None:
        super().__init__()
        self.plateau = plateau or PlateauRule()
        self.batchnorm = batchnorm or BatchNormPolicy()
        self.unfreezing = unfreezing or Unfreezing()
        self.anchoring = anchoring or Anchoring()
        self.rates = StagedRates(spread or RateSpread(), ramp or EncoderRamp())
        # With rates.unfreeze_steps, the state that a checkpoint saves and restores:
        self.best = self.plateau.initial_best
        self.wait = 0
        self.transition_epoch: int | None = None
        self.last_unfreeze_epoch = 0.0
        self.anchors: dict[str, list[torch.Tensor]] = {}  # group -> its starting weights
        # an unfreezing at the end of a validation: the loop then restores the modules'
        # modes from before it, so the new BatchNorm modes are set again at the next step
        self._modes_pending = False

    @classmethod
    def from_flat(cls, **flat: Any) -> TwoPhaseFinetuning:
        """The callback from the flat keys users write (``finetune.patience=2``): each is a
        field of one option group (:data:`~autoencoder.finetuning_options.OPTION_GROUPS`),
        documented there, and its default is that field's. The signature is derived from
        those fields."""
        return cls(**option_groups(flat))

    @property
    def phase(self) -> int:
        """1 while the whole encoder is frozen, 2 once any stage was unfrozen."""
        return self.rates.phase

    @property
    def transition_step(self) -> int | None:
        """The global step at which phase 2 began (``None`` before)."""
        return self.rates.transition_step

    # ------------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        missing = missing_members(pl_module, FinetunableModel)
        if missing:
            raise ConfigError(
                f"TwoPhaseFinetuning cannot fine-tune {type(pl_module).__name__}: it lacks "
                f"{', '.join(missing)}. The model must follow "
                "autoencoder.finetuning.FinetunableModel (as "
                "autoencoder.models.autoencoder.Autoencoder does), or train it without the "
                "finetune callback."
            )
        self.rates.stage_names = list(pl_module.encoder.stage_names)
        pl_module.rate_policy = self.rates
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and not ddp_finds_unused_parameters(strategy):
            raise ConfigError(
                "two-phase fine-tuning under DDP needs find_unused_parameters=True, since frozen "
                "stages produce no gradients: use trainer=ddp (strategy "
                "ddp_find_unused_parameters_true) or finetune=full."
            )

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

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._modes_pending:
            self._set_trainable(pl_module)
            self._modes_pending = False
        if logs_this_step(trainer):  # at the other steps the value would go unseen
            pl_module.log("finetune/phase", float(self.phase), on_step=True, on_epoch=False)

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

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
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
        self.best = self.plateau.initial_best
        self.wait = 0
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


def _derive_from_flat_signature() -> None:
    function = TwoPhaseFinetuning.from_flat.__func__
    parameters = flat_parameters()
    cls_parameter = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    function.__signature__ = inspect.Signature(
        [cls_parameter, *parameters], return_annotation=TwoPhaseFinetuning
    )
    function.__annotations__ = {
        **{parameter.name: parameter.annotation for parameter in parameters},
        "return": TwoPhaseFinetuning,
    }


_derive_from_flat_signature()
