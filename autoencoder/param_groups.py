"""Discriminative learning rates and the per-group rate policy.

The optimiser always holds the same named parameter groups: ``decoder`` (decoder and
bottleneck) and one ``encoder.<stage>`` group per encoder stage. Each group has a *peak*
rate, and at every step its rate is ``peak * multiplier(group, step)``: a frozen group has
multiplier 0, a warming-up group ramps from 0 to 1. The multipliers come from a
:class:`RatePolicy`, which the fine-tuning callback implements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol

from autoencoder.errors import ConfigError

DECODER_GROUP = "decoder"
ENCODER_PREFIX = "encoder."


def encoder_group(stage: str) -> str:
    return f"{ENCODER_PREFIX}{stage}"


def spread_rates(
    num_stages: int,
    top_lr: float | None = None,
    factor: float = 2.6,
    lr_range: Sequence[float] | None = None,
    rates: Sequence[float] | None = None,
) -> list[float]:
    """Rates for encoder stages, lowest stage first.

    Exactly one spelling is used, in this order of precedence:

    * ``rates``: an explicit list, one rate per stage, lowest first;
    * ``lr_range``: a fastai-style ``(low, high)`` pair spread geometrically, the lowest
      stage gets ``low`` and the top stage ``high``;
    * ``top_lr`` and ``factor``: ULMFiT, the top stage gets ``top_lr`` and each lower stage
      the rate of the stage above divided by ``factor``.
    """
    if rates is not None:
        if len(rates) != num_stages:
            raise ConfigError(
                f"finetune.rates has {len(rates)} entries but the encoder has {num_stages} "
                f"stages; give one rate per stage, lowest first."
            )
        return [float(rate) for rate in rates]
    if lr_range is not None:
        if len(lr_range) != 2 or not 0 < lr_range[0] <= lr_range[1]:
            raise ConfigError(
                f"finetune.lr_range must be [low, high] with 0 < low <= high, got {list(lr_range)}."
            )
        low, high = float(lr_range[0]), float(lr_range[1])
        if num_stages == 1:
            return [high]
        return [low * (high / low) ** (i / (num_stages - 1)) for i in range(num_stages)]
    if top_lr is None or top_lr < 0 or factor <= 0:
        raise ConfigError(
            f"finetune.encoder_lr must be >= 0 and finetune.factor > 0 (got {top_lr}, {factor})."
        )
    return [top_lr / factor ** (num_stages - 1 - i) for i in range(num_stages)]


class RatePolicy(Protocol):
    """Decides each parameter group's peak rate and its multiplier at every step."""

    def peak_rates(self, group_names: Sequence[str], decoder_lr: float) -> dict[str, float]: ...

    def multiplier(self, group_name: str, step: int) -> float: ...


class UniformRates:
    """Without a fine-tuning callback: every group trains at the decoder's rate."""

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
