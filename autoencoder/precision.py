"""Mixed precision that fits the hardware: ``trainer.precision=auto`` resolved before a job
runs, and a warning when bf16 is asked for where it is only emulated.

bf16 autocast is a gain only where the hardware computes in bf16: CUDA devices of compute
capability 8 or more (Ampere and later), and CPUs with AMX or AVX-512 bf16 instructions.
Elsewhere PyTorch emulates it: on a 2-core AMD EPYC with AVX2 only, a fit in bf16-mixed took
14x as long as in fp32, at the same test PSNR. So ``auto`` picks bf16-mixed where it is
native, 16-mixed on older CUDA GPUs (tensor cores in fp16) and 32-true elsewhere. Lightning
accepts only concrete values, so :func:`resolve_precision` writes the choice into the
config before anything reads it (the config's validation included).

The capability probes are small functions of their own, so that tests can replace them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, open_dict, read_write
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)

AUTO = "auto"
# Lightning's spellings of bf16 precision
BF16_PRECISIONS = frozenset({"bf16", "bf16-mixed", "bf16-true"})
# /proc/cpuinfo flags of CPUs that compute in bf16 (Intel AMX; AVX-512 bf16 on Intel
# Cooper Lake and later, AMD Zen 4 and later)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# the first compute capability with native bf16 (Ampere)
CUDA_BF16_CAPABILITY = (8, 0)
# emulated bf16 against fp32, measured on a 2-core AMD EPYC with AVX2 only (docs/results.md)
EMULATED_BF16_SLOWDOWN = 14
CPUINFO = Path("/proc/cpuinfo")


# -- the probes ---------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cuda_available() -> bool:
    return torch.cuda.is_available()


def cuda_capability(index: int) -> tuple[int, int]:
    """The compute capability of CUDA device ``index``, e.g. (8, 0) for an A100."""
    return tuple(torch.cuda.get_device_capability(index))


def cuda_bf16_supported() -> bool:
    return torch.cuda.is_bf16_supported()


def cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


# -- the decision -------------------------------------------------------------------------


def training_device(accelerator: Any, devices: Any = None) -> tuple[str, int]:
    """The kind of device a trainer with these settings trains on (``cuda``, ``cpu``, or
    the accelerator's own name for others, e.g. ``mps``) and, for CUDA, the index of its
    first device. ``auto`` means CUDA where there is a CUDA device."""
    name = str(accelerator).lower()
    if name in ("gpu", "cuda", AUTO):
        # without CUDA: auto trains on the CPU; gpu fails in Lightning with its own message
        return ("cuda", _first_index(devices)) if cuda_available() else ("cpu", 0)
    return name, 0


def _first_index(devices: Any) -> int:
    """The first CUDA index that ``trainer.devices`` names (``[2, 3]``, ``"2,3"``), else 0."""
    if isinstance(devices, (list, tuple, ListConfig)) and len(devices) > 0:
        return int(devices[0])
    if isinstance(devices, str) and "," in devices:
        first = devices.split(",")[0].strip()
        return int(first) if first.isdigit() else 0
    return 0


def native_bf16(device: str, index: int = 0) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what says so, e.g. ``CPU has
    avx512_bf16`` or ``Tesla V100 has compute capability 7.0``."""
    if device == "cuda":
        major, minor = cuda_capability(index)
        native = (major, minor) >= CUDA_BF16_CAPABILITY and cuda_bf16_supported()
        return native, f"{cuda_name(index)} has compute capability {major}.{minor}"
    if device == "cpu":
        flags = [flag for flag in CPU_BF16_FLAGS if flag in cpu_flags()]
        if flags:
            return True, f"CPU has {flags[0]}"
        return False, f"CPU has neither {' nor '.join(CPU_BF16_FLAGS)}"
    return False, f"accelerator {device}"


def auto_precision(accelerator: Any, devices: Any = None) -> tuple[str, str]:
    """The precision ``auto`` stands for on this machine, and why: bf16-mixed where bf16 is
    native, 16-mixed on CUDA devices without it, else 32-true."""
    device, index = training_device(accelerator, devices)
    native, reason = native_bf16(device, index)
    if native:
        return "bf16-mixed", reason
    return ("16-mixed" if device == "cuda" else "32-true"), reason


def resolve_precision(cfg: DictConfig) -> str | None:
    """Replace ``trainer.precision=auto`` in ``cfg`` by :func:`auto_precision`'s choice
    (logged in one line), and warn in one line when an explicit bf16 precision will be
    emulated. Returns the precision the job will run in (``None`` without a trainer)."""
    trainer = cfg.get("trainer")
    if not isinstance(trainer, DictConfig) or trainer.get("precision") is None:
        return None
    precision = str(trainer.precision)
    accelerator, devices = trainer.get("accelerator", AUTO), trainer.get("devices")
    if precision == AUTO:
        chosen, reason = auto_precision(accelerator, devices)
        with read_write(trainer), open_dict(trainer):
            trainer.precision = chosen
        _log(logging.INFO, f"precision: auto -> {chosen} ({reason})")
        return chosen
    if precision in BF16_PRECISIONS:
        device, index = training_device(accelerator, devices)
        native, reason = native_bf16(device, index)
        if not native and device in ("cpu", "cuda"):  # other accelerators: not measured
            _log(logging.WARNING, emulated_bf16_warning(precision, device, reason))
    return precision


def emulated_bf16_warning(precision: str, device: str, reason: str) -> str:
    """The one line that says an explicit bf16 precision runs emulated, what it costs and
    how to switch."""
    if device == "cuda":
        cost = "emulated bf16 runs slower than 16-mixed there"
        fix = "trainer.precision=auto (16-mixed here) or trainer.precision=32-true"
    else:
        cost = (
            f"emulated bf16 ran ~{EMULATED_BF16_SLOWDOWN}x slower than fp32 at the same PSNR "
            "on an AVX2-only CPU"
        )
        fix = "trainer.precision=32-true or trainer.precision=auto"
    return f"precision: {precision} without native bf16 ({reason}): {cost}; set {fix}"


@rank_zero_only
def _log(level: int, message: str) -> None:
    log.log(level, message)
