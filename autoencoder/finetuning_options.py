"""The options of two-phase fine-tuning, grouped by what they decide: one frozen dataclass
per group, checked when it is built.

:class:`~autoencoder.finetuning.TwoPhaseFinetuning` takes the options as flat keyword
arguments (the keys of ``conf/finetune``), documents them in its Args section, and builds
one value of each group; the rate spread is :class:`~autoencoder.param_groups.RateSpread`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from autoencoder.errors import ConfigError, check_choice
from autoencoder.models.encoders import BatchNormMode

Mode = Literal["min", "max"]
ScheduleShape = Literal["constant", "stlr"]
GradualTrigger = Literal["plateau", "epoch"]
AnchorScope = Literal["all", "encoder"]


@dataclass(frozen=True)
class PlateauRule:
    """When phase 1 ends (and, in gradual unfreezing, when the next stage unfreezes)."""

    monitor: str
    mode: Mode
    patience: int | None
    min_delta: float
    relative_delta: bool
    min_frozen_epochs: float
    max_frozen_epochs: float | None

    def __post_init__(self) -> None:
        check_choice("finetune.mode", self.mode, Mode)
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"finetune.patience must be >= 1 or null, got {self.patience}.")
        if self.min_frozen_epochs < 0:
            raise ConfigError(
                f"finetune.min_frozen_epochs must be >= 0, got {self.min_frozen_epochs}."
            )
        if self.max_frozen_epochs is not None and self.max_frozen_epochs < self.min_frozen_epochs:
            raise ConfigError(
                f"finetune.max_frozen_epochs={self.max_frozen_epochs} is below "
                f"finetune.min_frozen_epochs={self.min_frozen_epochs}."
            )

    @property
    def initial_best(self) -> float:
        """The best value before any check: every finite value improves on it."""
        return math.inf if self.mode == "min" else -math.inf


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


@dataclass(frozen=True)
class EncoderRamp:
    """How the rate of a newly unfrozen stage reaches its peak."""

    encoder_schedule: ScheduleShape
    warmup_steps: int | None
    warmup_epochs: float
    min_warmup_steps: int
    stlr_cut_frac: float
    stlr_ratio: float

    def __post_init__(self) -> None:
        check_choice("finetune.encoder_schedule", self.encoder_schedule, ScheduleShape)
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(
                f"finetune.warmup_steps must be >= 0 or null, got {self.warmup_steps}."
            )
        if self.warmup_epochs < 0 or self.min_warmup_steps < 0:
            raise ConfigError(
                "finetune.warmup_epochs and finetune.min_warmup_steps must be >= 0, got "
                f"{self.warmup_epochs} and {self.min_warmup_steps}."
            )
        if not 0 < self.stlr_cut_frac <= 1 or self.stlr_ratio < 1:
            raise ConfigError(
                "finetune.stlr_cut_frac must be in (0, 1] and finetune.stlr_ratio >= 1, got "
                f"{self.stlr_cut_frac} and {self.stlr_ratio}."
            )


@dataclass(frozen=True)
class BatchNormPolicy:
    """The BatchNorm mode of frozen and of unfrozen encoder stages while the model trains."""

    frozen_bn: BatchNormMode
    unfrozen_bn: BatchNormMode

    def __post_init__(self) -> None:
        check_choice("finetune.frozen_bn", self.frozen_bn, BatchNormMode)
        check_choice("finetune.unfrozen_bn", self.unfrozen_bn, BatchNormMode)


@dataclass(frozen=True)
class Unfreezing:
    """Which stages a transition unfreezes: all at once, or one more at a time."""

    gradual: bool
    gradual_every: GradualTrigger

    def __post_init__(self) -> None:
        check_choice("finetune.gradual_every", self.gradual_every, GradualTrigger)


@dataclass(frozen=True)
class Anchoring:
    """The pull of the weights toward the values they started from (L2-SP)."""

    l2_sp: float
    l2_sp_scope: AnchorScope

    def __post_init__(self) -> None:
        if not self.l2_sp >= 0:
            raise ConfigError(f"finetune.l2_sp must be >= 0, got {self.l2_sp}.")
        check_choice("finetune.l2_sp_scope", self.l2_sp_scope, AnchorScope)
