"""Discriminative learning rates and the per-group rate policy.

The optimiser always holds the same named parameter groups: ``decoder`` (decoder and
bottleneck) and one ``encoder.<stage>`` group per encoder stage. Each group has a *peak*
rate, and at every step its rate is ``peak * multiplier(group, step)``: a frozen group has
multiplier 0, a warming-up group ramps from 0 to 1. The model reads both from the one
:class:`RatePolicy` it holds; the fine-tuning callback replaces it with its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from autoencoder.errors import ConfigError

DECODER_GROUP = "decoder"
ENCODER_PREFIX = "encoder."


def encoder_group(stage: str) -> str:
    return f"{ENCODER_PREFIX}{stage}"


@dataclass(frozen=True)
class RateSpread:
    """The peak rates of the encoder stages in phase 2, in one of three spellings (the
    first one given wins):

    * ``rates``: an explicit list, one rate per stage, lowest first;
    * ``lr_range``: a fastai-style ``[low, high]`` pair spread geometrically, the lowest
      stage gets ``low`` and the top stage ``high``;
    * ``encoder_lr`` and ``factor``: ULMFiT, the top stage gets ``encoder_lr`` (``None``:
      the decoder's rate, ``model.lr``) and each lower stage the rate of the stage above
      divided by ``factor``.
    """

    encoder_lr: float | None = None
    factor: float = 2.6
    lr_range: tuple[float, float] | None = None
    rates: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.encoder_lr is not None and not self.encoder_lr >= 0:
            raise ConfigError(
                f"finetune.encoder_lr must be >= 0, or null to follow model.lr; got "
                f"{self.encoder_lr}."
            )
        if not self.factor > 0:
            raise ConfigError(f"finetune.factor must be > 0, got {self.factor}.")
        if self.lr_range is not None and (
            len(self.lr_range) != 2 or not 0 < self.lr_range[0] <= self.lr_range[1]
        ):
            raise ConfigError(
                "finetune.lr_range must be [low, high] with 0 < low <= high, got "
                f"{list(self.lr_range)}."
            )
        if self.rates is not None and not all(rate >= 0 for rate in self.rates):
            raise ConfigError(f"finetune.rates must all be >= 0, got {list(self.rates)}.")

    def stage_rates(self, num_stages: int, decoder_lr: float) -> list[float]:
        """The peak rate of each of ``num_stages`` stages, lowest first."""
        if self.rates is not None:
            if len(self.rates) != num_stages:
                raise ConfigError(
                    f"finetune.rates has {len(self.rates)} entries but the encoder has "
                    f"{num_stages} stages; give one rate per stage, lowest first."
                )
            return [float(rate) for rate in self.rates]
        if self.lr_range is not None:
            low, high = float(self.lr_range[0]), float(self.lr_range[1])
            if num_stages == 1:
                return [high]
            return [low * (high / low) ** (i / (num_stages - 1)) for i in range(num_stages)]
        top = decoder_lr if self.encoder_lr is None else self.encoder_lr
        return [top / self.factor ** (num_stages - 1 - i) for i in range(num_stages)]


class RatePolicy(Protocol):
    """Each parameter group's peak rate and its multiplier at every step: what the model
    reads to set its optimiser's rates. A policy never changes the number of groups."""

    def peak_rates(self, group_names: Sequence[str], decoder_lr: float) -> dict[str, float]:
        """The peak rate of every group in ``group_names``; ``decoder_lr`` is ``model.lr``."""
        ...

    def multiplier(self, group_name: str, step: int) -> float:
        """The fraction of its peak rate that ``group_name`` trains at in optimiser step
        ``step``."""
        ...

    @property
    def phase(self) -> int | None:
        """The fine-tuning phase: 1 while the encoder is frozen, 2 once a stage was unfrozen;
        ``None`` for a policy without phases."""
        ...


class UniformRates:
    """Without a fine-tuning callback: every group trains at the decoder's rate."""

    phase: int | None = None

    def peak_rates(self, group_names: Sequence[str], decoder_lr: float) -> dict[str, float]:
        return dict.fromkeys(group_names, decoder_lr)

    def multiplier(self, group_name: str, step: int) -> float:
        return 1.0


Schedule = Literal["constant", "cosine", "linear", "onecycle"]
# onecycle: torch's OneCycleLR defaults (pct_start, div_factor, final_div_factor)
ONECYCLE_WARMUP, ONECYCLE_START, ONECYCLE_END = 0.3, 1 / 25, 1 / 25 / 1e4


def _cosine(start: float, end: float, progress: float) -> float:
    """From ``start`` (progress 0) to ``end`` (progress 1) along half a cosine."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_multiplier(name: Schedule, step: int, total_steps: float) -> float:
    """The global learning-rate shape shared by all groups, as a fraction of the peak rate:
    ``constant``; ``cosine`` or ``linear`` decay to 0; ``onecycle``, a warm-up from 1/25
    over the first 30% of the steps then a cosine decay to 1/250,000 (torch's ``OneCycleLR``
    with its defaults)."""
    if name == "constant" or not math.isfinite(total_steps) or total_steps <= 0:
        return 1.0
    if name == "onecycle":  # the phase boundaries of torch's OneCycleLR
        peak_step, last_step = ONECYCLE_WARMUP * total_steps - 1, total_steps - 1
        if step <= peak_step:
            return _cosine(ONECYCLE_START, 1.0, step / peak_step)
        return _cosine(1.0, ONECYCLE_END, min(1.0, (step - peak_step) / (last_step - peak_step)))
    progress = min(step / total_steps, 1.0)
    if name == "cosine":
        return _cosine(1.0, 0.0, progress)
    return 1 - progress
