"""The memory layout the models run their convolutions in."""

from __future__ import annotations

import torch


def conv_memory_format(channels_last: bool) -> torch.memory_format:
    """Channels-last (NHWC, the layout that CPU and tensor-core convolution kernels take) or
    the default layout."""
    return torch.channels_last if channels_last else torch.contiguous_format
