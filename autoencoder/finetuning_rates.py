"""What two-phase fine-tuning needs of a model, and the rates it gives the model.

:class:`FinetunableModel` is the contract of the LightningModule that
:class:`~autoencoder.finetuning.TwoPhaseFinetuning` fine-tunes; :class:`StagedRates` is the
:class:`~autoencoder.param_groups.RatePolicy` that the callback puts in the model: every
encoder stage at rate 0 until it is unfrozen, then ramped to its peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import pytorch_lightning as pl

from autoencoder.errors import ConfigError
from autoencoder.finetuning_options import EncoderRamp
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
    check at setup names the first attribute a model lacks.

    The model's ``configure_optimizers`` must build one named group per encoder stage
    (``encoder.<stage>``) and one ``decoder`` group, and set each group's rate at every step
    from ``rate_policy``, through a ``LambdaLR`` stepped every optimiser step. At setup the
    callback puts its :class:`StagedRates` in ``rate_policy``; it changes rates through the
    trainer's schedulers, and the model never calls it.
    :class:`~autoencoder.models.autoencoder.Autoencoder` is one.
    """

    encoder: StagedEncoder
    rate_policy: RatePolicy


def missing_attribute(pl_module: pl.LightningModule) -> str | None:
    """The first attribute of :class:`FinetunableModel` that ``pl_module`` lacks, if any."""
    if not hasattr(pl_module, "encoder"):
        return "encoder"
    for name in ("stage_names", "set_trainable"):
        if not hasattr(pl_module.encoder, name):
            return f"encoder.{name}"
    return None if hasattr(pl_module, "rate_policy") else "rate_policy"


# -------------------------------------------------------------------------- rates
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
