"""Speed: the training pipeline against a bare PyTorch loop, the data loader alone (per
image and drawn on the device), the step cost of what changes it (fine-tuning phase,
memory layout, precision, compilation), and the pipeline's fixed cost per step.

Every variant trains the same model (built from the project's config with the given
overrides) on the same data, one after another in this process: warm-up steps first, then
the median of the timed steps (:mod:`autoencoder.benchmarks.step_timing` measures them).
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from autoencoder.benchmarks.step_timing import (
    Measurement,
    bare_loop,
    compose_benchmark_config,
    in_memory_batches,
    loader_throughput,
    peak_memory,
    pipeline,
)
from autoencoder.benchmarks.tables import Table
from autoencoder.inputs import pick_device
from autoencoder.loggers import machine_description

# The bare loop runs in the trainer config's precision (fp32, or what trainer=gpu resolves to);
# ``bare-bf16`` or ``bare-fp32`` measures the other one.
VARIANTS = ("pipeline", "bare", "bare-frozen", "bare-contiguous", "bare-compile")
# The pipeline in the other precision than the config's (``pipeline-fp32``/``-bf16``).
PIPELINE_PRECISIONS = {"pipeline-fp32": "32-true", "pipeline-bf16": "bf16-mixed"}
# The training loader alone, both ways (data.on_device=false and true), as rows of the table.
LOADERS = {"loader (per-image)": False, "loader (on-device)": True}
# The fixed cost per step: a tiny model (the stem alone, 4 latent channels), where the
# pipeline's own work is most of a step. Each part is measured by switching it off.
TINY_MODEL = ("encoder.depth=1", "model.latent_channels=4", "logger=csv")
OVERHEAD_PARTS: dict[str, tuple[str, ...]] = {
    "training metrics (MSE, MAE, PSNR, SSIM on 1 batch in 50)": (
        "model.train_metrics_every_n_steps=null",
    ),
    "weight average (EMA)": ("callbacks.ema=null",),
    "loggers and the rate monitor": ("logger=none", "callbacks.lr_monitor=null"),
    "progress bar": ("trainer.enable_progress_bar=false",),
    "the other callbacks (images, timer, checkpoints)": (
        "callbacks.reconstructions=null",
        "callbacks.timer=null",
        "callbacks.model_checkpoint=null",
        "callbacks.last_checkpoint=null",
    ),
    "non-finite loss check": ("model.nonfinite_loss=ignore",),
}


def measure(
    variant: str,
    cfg: DictConfig,
    batches: list[torch.Tensor],
    steps: int,
    warmup: int,
    device: torch.device,
) -> Measurement:
    bf16 = cfg.trainer.precision.startswith("bf16")
    options = {
        "bare": {"bf16": bf16},
        "bare-frozen": {"frozen": True, "bf16": bf16},
        "bare-contiguous": {"channels_last": False, "bf16": bf16},
        "bare-bf16": {"bf16": True},
        "bare-fp32": {"bf16": False},
        "bare-compile": {"compiled": True, "bf16": bf16},
    }
    with peak_memory(device) as memory:
        if variant.startswith("pipeline"):
            variant_cfg = copy.deepcopy(cfg)
            with open_dict(variant_cfg):
                variant_cfg.trainer.precision = PIPELINE_PRECISIONS.get(
                    variant, cfg.trainer.precision
                )
            timings = pipeline(variant_cfg, steps, warmup)
        else:
            timings = bare_loop(copy.deepcopy(cfg), batches, warmup, device, **options[variant])
    seconds = statistics.median(timings)
    batch_size = len(batches[0])
    return Measurement(variant, seconds, batch_size / seconds, memory["mb"])


def run(
    overrides: list[str],
    output: Path,
    steps: int = 20,
    warmup: int = 5,
    skip: tuple[str, ...] = (),
    device_name: str | None = None,
) -> Table:
    """Measure every variant but those in ``skip`` on ``device_name`` (default: CUDA when
    there is one), then write ``speed.csv``, ``speed.md`` and ``speed.json``."""
    device = pick_device("--device", device_name)
    if device.type == "cuda":
        overrides = ["trainer=gpu", *overrides]
    with tempfile.TemporaryDirectory() as scratch:
        cfg = compose_benchmark_config(overrides, Path(scratch) / "run")
        bf16 = cfg.trainer.precision.startswith("bf16")
        other = ("bare-fp32", "pipeline-fp32") if bf16 else ("bare-bf16", "pipeline-bf16")
        variants = [v for v in (*VARIANTS, *other) if v not in skip]
        batches = in_memory_batches(cfg, warmup + steps)
        loaders = {
            name: loader_throughput(cfg, steps, warmup, device, on_device)
            for name, on_device in LOADERS.items()
        }
        results = {v: measure(v, cfg, batches, steps, warmup, device) for v in variants}
    batch_size = len(batches[0])
    table = speed_table(results, loaders, batch_size, steps, warmup, device)
    ratios = speed_ratios(results, loaders, bf16)
    loader, on_device = loaders["loader (per-image)"], loaders["loader (on-device)"]
    table.notes = [
        f"data loader alone, until the batch is on the device: {loader:.0f} images/s per "
        f"image, {on_device:.0f} images/s drawn on the device (data.on_device)"
    ] + [f"{name}: {value:.2f}" for name, value in ratios.items() if value is not None]
    table.write(output, "speed")
    record = {
        "machine": machine_description(device),
        "loader_images_per_second": loader,
        "loaders": loaders,
        "variants": {k: vars(v) for k, v in results.items()},
        "ratios": ratios,
        "overrides": overrides,
    }
    (output / "speed.json").write_text(json.dumps(record, indent=2) + "\n")
    return table


def speed_table(
    results: dict[str, Measurement],
    loaders: dict[str, float],
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
) -> Table:
    """One row per variant and per loader, each against the bare loop."""
    reference = results["bare"]
    table = Table(
        title=f"speed: median of {steps} steps after {warmup} warm-up steps, "
        f"batch {batch_size}, {machine_description(device)}",
        columns=("variant", "ms/step", "images/s", "vs bare loop", "peak memory (MB)"),
        formats={"ms/step": 1, "images/s": 0, "vs bare loop": 2, "peak memory (MB)": 0},
    )
    for result in results.values():
        table.add(
            **{
                "variant": result.variant,
                "ms/step": 1000 * result.seconds,
                "images/s": result.images_per_second,
                "vs bare loop": reference.seconds / result.seconds,
                "peak memory (MB)": result.peak_memory_mb,
            }
        )
    for name, rate in loaders.items():  # the time to make a batch, against a bare step
        table.add(
            **{
                "variant": name,
                "ms/step": 1000 * batch_size / rate,
                "images/s": rate,
                "vs bare loop": rate / reference.images_per_second,
            }
        )
    return table


def speed_ratios(
    results: dict[str, Measurement], loaders: dict[str, float], bf16: bool
) -> dict[str, float | None]:
    """What each change of the step buys (``None`` for a variant that was skipped)."""

    def per(numerator: str, denominator: str) -> float | None:
        """Seconds per step of ``numerator`` over those of ``denominator``."""
        if numerator not in results or denominator not in results:
            return None
        return results[numerator].seconds / results[denominator].seconds

    fp32, bf16_variant = ("bare-fp32", "bare") if bf16 else ("bare", "bare-bf16")
    loader, on_device = loaders["loader (per-image)"], loaders["loader (on-device)"]
    training = results["pipeline"].images_per_second
    return {
        "pipeline / bare loop throughput": per("bare", "pipeline"),
        "data loader / training throughput": loader / training,
        "on-device loader / training throughput": on_device / training,
        "on-device / per-image loader throughput": on_device / loader,
        "phase 1 / phase 2 step time": per("bare-frozen", "bare"),
        "channels_last speed-up over contiguous": per("bare-contiguous", "bare"),
        "bf16 autocast speed-up over fp32": per(fp32, bf16_variant),
        "torch.compile speed-up over eager": per("bare", "bare-compile"),
    }


def overhead(
    overrides: list[str],
    output: Path,
    steps: int = 100,
    warmup: int = 10,
    device_name: str | None = None,
) -> Table:
    """The pipeline's fixed cost per step on a tiny model (:data:`TINY_MODEL`) against the
    bare loop in the same process, and what each part costs (:data:`OVERHEAD_PARTS`): the
    pipeline's step time with that part on, minus with it off. What is left with every part
    off is the loop itself (Lightning's loop, the fine-tuning callback, the scheduler, the
    loss's logging, the batch drawn from the loader). Writes ``overhead.csv``/``.md``."""
    device = pick_device("--device", device_name)
    base = [*(["trainer=gpu"] if device.type == "cuda" else []), *overrides, *TINY_MODEL]
    with tempfile.TemporaryDirectory() as scratch:

        def seconds(extra: Sequence[str], folder: str) -> float:
            """The pipeline's median step with ``extra`` overrides on top of ``base``."""
            cfg = compose_benchmark_config([*base, *extra], Path(scratch) / folder)
            return statistics.median(pipeline(cfg, steps, warmup))

        cfg = compose_benchmark_config(base, Path(scratch) / "all")
        parts = {name: extra for name, extra in OVERHEAD_PARTS.items() if _switchable(cfg, extra)}
        batches = in_memory_batches(cfg, warmup + steps)
        bf16 = cfg.trainer.precision.startswith("bf16")
        bare = statistics.median(bare_loop(copy.deepcopy(cfg), batches, warmup, device, bf16=bf16))
        # a first fit pays one-time costs (allocator, kernels, imports) that no step should
        pipeline(compose_benchmark_config(base, Path(scratch) / "first"), warmup, warmup)
        full = statistics.median(pipeline(cfg, steps, warmup))
        without = {name: seconds(extra, str(i)) for i, (name, extra) in enumerate(parts.items())}
        loop = seconds([o for extra in parts.values() for o in extra], "off")
    title = (
        f"fixed cost per step: tiny model ({' '.join(TINY_MODEL[:2])}), batch "
        f"{len(batches[0])}, median of {steps} steps after {warmup}, {machine_description(device)}"
    )
    table = overhead_table(title, bare, full, without, loop)
    table.notes = [
        "cost: the pipeline's step time minus the same with that part off; the pipeline's "
        "row: its whole overhead over the bare loop, which trains the same model on the same "
        "batches, already in memory.",
        f"overrides: {' '.join(base)}",
    ]
    table.write(output, "overhead")
    return table


def overhead_table(
    title: str, bare: float, full: float, without: dict[str, float], loop: float
) -> Table:
    """The bare loop, the pipeline, and the pipeline with each part off, in seconds per
    step, with what each part costs."""
    table = Table(
        title=title,
        columns=("part", "ms/step", "cost (ms/step)"),
        formats={"ms/step": 2, "cost (ms/step)": 2},
    )
    table.add(part="bare loop (forward, loss, backward, AdamW step)", **{"ms/step": 1000 * bare})
    table.add(
        part="pipeline (scripts/train.py)",
        **{"ms/step": 1000 * full, "cost (ms/step)": 1000 * (full - bare)},
    )
    for name, seconds in without.items():
        table.add(
            part=f"  {name}: off",
            **{"ms/step": 1000 * seconds, "cost (ms/step)": 1000 * (full - seconds)},
        )
    table.add(
        part="  the loop itself (every part above off)",
        **{"ms/step": 1000 * loop, "cost (ms/step)": 1000 * (loop - bare)},
    )
    return table


def _switchable(cfg: DictConfig, overrides: Sequence[str]) -> bool:
    """Whether every key an override switches off exists in ``cfg`` (a config without a
    weight average has no ``callbacks.ema`` to switch off)."""
    keys = [o.split("=", 1)[0] for o in overrides if not o.startswith(("logger=", "trainer."))]
    return all(OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT for key in keys)


_ABSENT = object()
