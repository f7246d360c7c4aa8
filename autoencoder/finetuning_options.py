"""The options of two-phase fine-tuning (``conf/finetune``), one frozen dataclass per group,
each field one flat key users write (``finetune.patience=2``), checked when it is built.

:class:`~autoencoder.finetuning.TwoPhaseFinetuning` takes one value of each group
(:data:`OPTION_GROUPS`); its ``from_flat`` takes the flat keys (:func:`option_groups`),
with the signature :func:`flat_parameters` derives from the fields.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from omegaconf import ListConfig

from autoencoder.errors import ConfigError, check_choice
from autoencoder.models.encoders import BatchNormMode
from autoencoder.param_groups import RateSpread

Mode = Literal["min", "max"]
ScheduleShape = Literal["constant", "stlr"]
GradualTrigger = Literal["plateau", "epoch"]
AnchorScope = Literal["all", "encoder"]


@dataclass(frozen=True)
class PlateauRule:
    """When phase 1 ends (and, in gradual unfreezing, when the next stage unfreezes).

    Attributes:
        monitor, mode: the metric whose plateau ends phase 1 (logged at validation). A NaN
            or infinite value is skipped with a warning, never counted as a plateau.
        patience: validation checks without improvement that make a plateau (``None``:
            never transition on a plateau).
        min_delta: the smallest change that counts as an improvement.
        relative_delta: ``min_delta`` is a fraction of the best value so far.
        min_frozen_epochs, max_frozen_epochs: bounds on phase 1 in (fractional) epochs;
            ``max_frozen_epochs=None`` lets phase 1 last until a plateau, however long, and
            ``0`` starts phase 2 at step 0.
    """

    monitor: str = "val/loss"
    mode: Mode = "min"
    patience: int | None = 1
    min_delta: float = 0.0
    relative_delta: bool = False
    min_frozen_epochs: float = 1.0
    max_frozen_epochs: float | None = 1.0

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


@dataclass(frozen=True)
class EncoderRamp:
    """How the rate of a newly unfrozen stage reaches its peak.

    Attributes:
        encoder_schedule: ``constant`` (a linear warm-up from 0, then the peak) or ``stlr``
            (ULMFiT's slanted triangular rates until the end of the run, no warm-up).
        warmup_steps, warmup_epochs: the length of the warm-up (``warmup_steps`` wins when
            set; 0 disables).
        min_warmup_steps: lower bound on a warm-up given in epochs (0: none). Adam's moment
            estimates of a newly unfrozen group start empty, and with few steps per epoch a
            one-epoch ramp can dip; a bound of 100 steps kept a 64 x 2 x 2 run from dipping
            but cost 0.6 dB at the ``layer2`` cut, where it outlasts a short run
            (docs/results.md).
        stlr_cut_frac, stlr_ratio: the slanted triangular shape (ULMFiT: 0.1 and 32).
    """

    encoder_schedule: ScheduleShape = "constant"
    warmup_steps: int | None = None
    warmup_epochs: float = 1.0
    min_warmup_steps: int = 0
    stlr_cut_frac: float = 0.1
    stlr_ratio: float = 32.0

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
    """The BatchNorm of encoder stages while the model trains: ``eval`` keeps the
    pretrained running statistics (the affine weights of unfrozen stages still learn),
    ``train`` uses batch statistics.

    Attributes:
        frozen_bn: in frozen stages (all of them in phase 1).
        unfrozen_bn: in unfrozen stages.
    """

    frozen_bn: BatchNormMode = "eval"
    unfrozen_bn: BatchNormMode = "eval"

    def __post_init__(self) -> None:
        check_choice("finetune.frozen_bn", self.frozen_bn, BatchNormMode)
        check_choice("finetune.unfrozen_bn", self.unfrozen_bn, BatchNormMode)


@dataclass(frozen=True)
class Unfreezing:
    """Which stages a transition unfreezes.

    Attributes:
        gradual: ULMFiT gradual unfreezing: the top stage first, then one more stage per
            plateau or per epoch (``gradual_every``); otherwise the whole encoder at once.
        gradual_every: ``plateau`` or ``epoch``.
    """

    gradual: bool = False
    gradual_every: GradualTrigger = "plateau"

    def __post_init__(self) -> None:
        check_choice("finetune.gradual_every", self.gradual_every, GradualTrigger)


@dataclass(frozen=True)
class Anchoring:
    """A pull of the weights toward the values they started from (L2-SP, Li et al. 2018),
    decoupled from the gradient as AdamW decouples weight decay: after every optimiser step
    each weight moves ``lr * l2_sp`` of the way back to its start, ``lr`` its group's rate
    at that step (0 for a frozen stage, which stays where it is anyway).

    Attributes:
        l2_sp: the strength (0: off). The start is the weights when fitting begins: the
            pretrained encoder, and with ``init_from`` the pretrained decoder too.
        l2_sp_scope: ``all`` parameter groups, or the ``encoder`` stages only (for a fresh
            decoder, whose start is its random initialisation).
    """

    l2_sp: float = 0.0
    l2_sp_scope: AnchorScope = "all"

    def __post_init__(self) -> None:
        if not self.l2_sp >= 0:
            raise ConfigError(f"finetune.l2_sp must be >= 0, got {self.l2_sp}.")
        check_choice("finetune.l2_sp_scope", self.l2_sp_scope, AnchorScope)


# The option groups of TwoPhaseFinetuning, by its argument names; every flat key of
# conf/finetune is a field of exactly one of them.
OPTION_GROUPS: dict[str, type] = {
    "spread": RateSpread,
    "plateau": PlateauRule,
    "ramp": EncoderRamp,
    "batchnorm": BatchNormPolicy,
    "unfreezing": Unfreezing,
    "anchoring": Anchoring,
}


def option_groups(flat: Mapping[str, Any]) -> dict[str, Any]:
    """One value of each option group, by :data:`OPTION_GROUPS`' argument names, from flat
    keys (each a field of one group; the others take their defaults); a
    :class:`~autoencoder.errors.ConfigError` names the keys no group has."""
    left = dict(flat)
    groups = {}
    for argument, group in OPTION_GROUPS.items():
        values = {
            entry.name: _plain(left.pop(entry.name))
            for entry in fields(group)
            if entry.name in left
        }
        groups[argument] = group(**values)
    if left:
        raise ConfigError(
            f"unknown fine-tuning options: {', '.join(sorted(left))} (valid: "
            f"{', '.join(p.name for p in flat_parameters())})."
        )
    return groups


def _plain(value: Any) -> Any:
    """A config list as the tuple the option fields hold."""
    return tuple(value) if isinstance(value, (list, tuple, ListConfig)) else value


def flat_parameters() -> list[inspect.Parameter]:
    """``TwoPhaseFinetuning.from_flat``'s keyword parameters: every option group's fields,
    with their defaults and types."""
    parameters = []
    for group in OPTION_GROUPS.values():
        hints = typing.get_type_hints(group)
        for entry in fields(group):
            parameters.append(
                inspect.Parameter(
                    entry.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=entry.default,
                    annotation=hints[entry.name],
                )
            )
    return parameters
