"""Speed: the training pipeline against a bare PyTorch loop, the data loader alone (per
image and drawn on the device), and the step cost of what changes it (fine-tuning phase,
memory layout, precision, compilation).

Every variant trains the same model (built from the project's config with the given
overrides) on the same data, one after another in this process: warm-up steps first, then
the median of the timed steps. The pipeline is ``autoencoder.train.train``, Lightning and
all, timed from one training batch to the next; the bare loop is forward, loss, backward
and optimiser step on batches already in memory.
"""

from __future__ import annotations

import copy
import csv
import json
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from autoencoder.benchmarks.tables import Table
from autoencoder.config import compose_config, instantiate
from autoencoder.data import DeviceBatches, ImageDataModule
from autoencoder.inputs import pick_device
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.precision import resolve_precision
from autoencoder.runs import build_model
from autoencoder.train import train

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


@dataclass(frozen=True)
class Measurement:
    """Median seconds per step, images per second and peak memory of one variant."""

    variant: str
    seconds: float
    images_per_second: float
    peak_memory_mb: float | None


class StepTimer(pl.Callback):
    """Times the pipeline from the start of one training batch to the start of the next:
    the whole step, data loading, logging and callbacks included."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())

    @property
    def step_seconds(self) -> list[float]:
        """Seconds between consecutive batch starts."""
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """The peak memory of the block in MB: CUDA's allocator peak on a GPU; on Linux the
    process's resident-set peak (VmHWM, reset through /proc/self/clear_refs); else None."""
    result: dict[str, float | None] = {"mb": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cpu_peak = _reset_rss_peak()
    try:
        yield result
    finally:
        if device.type == "cuda":
            result["mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        elif cpu_peak:
            result["mb"] = _rss_peak_mb()


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _rss_peak_mb() is not None


def _rss_peak_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def compose_benchmark_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The training config as a job runs it (``trainer.precision=auto`` resolved)."""
    cfg = compose_config("train", *overrides)
    resolve_precision(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.encoder.weights = None  # random weights: speed does not depend on them
    return cfg


def training_loader(cfg: DictConfig) -> torch.utils.data.DataLoader | DeviceBatches:
    """The training loader of the config's datamodule (as ``data.on_device`` decides for
    the CPU)."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def in_memory_batches(cfg: DictConfig, count: int) -> list[torch.Tensor]:
    """The first ``count`` training batches, as the pipeline's loader makes them."""
    batches = []
    for images, _ in training_loader(cfg):
        batches.append(images)
        if len(batches) == count:
            return batches
    raise ValueError(f"the training split has fewer than {count} batches; lower --steps")


def loader_throughput(
    cfg: DictConfig, count: int, warmup: int, device: torch.device, on_device: bool
) -> float:
    """Images per second of the training loader alone, until its batches are on ``device``:
    per image (workers, transforms, collation, then the copy to the device) or drawn on the
    device (``data.on_device``: one gather, flip, crop and conversion per batch there)."""
    datamodule: ImageDataModule = instantiate(cfg.data, on_device=on_device)
    datamodule.setup("fit")
    loader = datamodule.device_batches(device) if on_device else datamodule.train_dataloader()
    batches = _epochs(loader)

    def next_on_device() -> int:
        images = next(batches)[0].to(device, non_blocking=True)
        return len(images)

    for _ in range(warmup):
        next_on_device()
    _synchronize(device)
    start, images = time.perf_counter(), 0
    for _ in range(count):
        images += next_on_device()
    _synchronize(device)
    return images / (time.perf_counter() - start)


def _epochs(loader: Iterable[Any]) -> Iterator[Any]:
    """The loader's batches, epoch after epoch (a small split may hold fewer than needed)."""
    while True:
        yield from loader


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(
    cfg: DictConfig,
    batches: list[torch.Tensor],
    warmup: int,
    device: torch.device,
    frozen: bool = False,
    channels_last: bool = True,
    bf16: bool = False,
    compiled: bool = False,
) -> list[float]:
    """Seconds per step of forward, loss, backward and AdamW step, on ``batches``."""
    torch.manual_seed(0)
    with open_dict(cfg):
        cfg.model.channels_last = channels_last
    model: Autoencoder = build_model(cfg).to(device)
    stages = len(model.encoder.stage_names)
    model.encoder.set_trainable(0 if frozen else stages, frozen_bn="eval", unfrozen_bn="train")
    model.train()
    groups = model.parameter_groups()
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    optimizer = instantiate(cfg.optimizer)([g for g in groups if g["params"]], lr=model.lr)
    forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compiled else model
    timings = []
    for step, images in enumerate(batches):
        start = time.perf_counter()
        images = images.to(device, non_blocking=True).contiguous(memory_format=model.memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(forward(images).float(), images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            timings.append(time.perf_counter() - start)
    return timings


def pipeline(cfg: DictConfig, steps: int, warmup: int) -> list[float]:
    """Seconds per step of the training job itself (validation and testing off)."""
    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + steps + 1
        cfg.trainer.max_epochs = None
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.test = False
        cfg.callbacks.step_timer = {"_target_": f"{__name__}.StepTimer"}
    _, built = train(cfg)
    (timer,) = (c for c in built["callbacks"] if isinstance(c, StepTimer))
    return timer.step_seconds[warmup:]


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
    reference = results["bare"]
    table = Table(
        title=f"speed: median of {steps} steps after {warmup} warm-up steps, "
        f"batch {len(batches[0])}, {machine(device)}",
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
    batch_size = len(batches[0])
    for name, rate in loaders.items():  # the time to make a batch, against a bare step
        table.add(
            **{
                "variant": name,
                "ms/step": 1000 * batch_size / rate,
                "images/s": rate,
                "vs bare loop": rate / reference.images_per_second,
            }
        )

    def per(numerator: str, denominator: str) -> float | None:
        """Seconds per step of ``numerator`` over those of ``denominator``."""
        if numerator not in results or denominator not in results:
            return None
        return results[numerator].seconds / results[denominator].seconds

    fp32, bf16_variant = ("bare-fp32", "bare") if bf16 else ("bare", "bare-bf16")
    loader, on_device = loaders["loader (per-image)"], loaders["loader (on-device)"]
    training = results["pipeline"].images_per_second
    ratios = {
        "pipeline / bare loop throughput": per("bare", "pipeline"),
        "data loader / training throughput": loader / training,
        "on-device loader / training throughput": on_device / training,
        "on-device / per-image loader throughput": on_device / loader,
        "phase 1 / phase 2 step time": per("bare-frozen", "bare"),
        "channels_last speed-up over contiguous": per("bare-contiguous", "bare"),
        "bf16 autocast speed-up over fp32": per(fp32, bf16_variant),
        "torch.compile speed-up over eager": per("bare", "bare-compile"),
    }
    table.notes = [
        f"data loader alone, until the batch is on the device: {loader:.0f} images/s per "
        f"image, {on_device:.0f} images/s drawn on the device (data.on_device)"
    ] + [f"{name}: {value:.2f}" for name, value in ratios.items() if value is not None]
    table.write(output, "speed")
    (output / "speed.json").write_text(
        json.dumps(
            {
                "machine": machine(device),
                "loader_images_per_second": loader,
                "loaders": loaders,
                "variants": {k: vars(v) for k, v in results.items()},
                "ratios": ratios,
                "overrides": overrides,
            },
            indent=2,
        )
        + "\n"
    )
    return table


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
        cfg = compose_benchmark_config(base, Path(scratch) / "all")
        parts = {name: extra for name, extra in OVERHEAD_PARTS.items() if _switchable(cfg, extra)}
        batches = in_memory_batches(cfg, warmup + steps)
        bf16 = cfg.trainer.precision.startswith("bf16")
        bare = statistics.median(bare_loop(copy.deepcopy(cfg), batches, warmup, device, bf16=bf16))
        # a first fit pays one-time costs (allocator, kernels, imports) that no step should
        pipeline(compose_benchmark_config(base, Path(scratch) / "first"), warmup, warmup)
        full = statistics.median(pipeline(cfg, steps, warmup))
        without = {
            name: statistics.median(
                pipeline(
                    compose_benchmark_config([*base, *extra], Path(scratch) / str(index)),
                    steps,
                    warmup,
                )
            )
            for index, (name, extra) in enumerate(parts.items())
        }
        everything_off = [o for extra in parts.values() for o in extra]
        loop = statistics.median(
            pipeline(
                compose_benchmark_config([*base, *everything_off], Path(scratch) / "off"),
                steps,
                warmup,
            )
        )
    table = Table(
        title=f"fixed cost per step: tiny model ({' '.join(TINY_MODEL[:2])}), batch "
        f"{len(batches[0])}, median of {steps} steps after {warmup}, {machine(device)}",
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
    table.notes = [
        "cost: the pipeline's step time minus the same with that part off; the pipeline's "
        "row: its whole overhead over the bare loop, which trains the same model on the same "
        "batches, already in memory.",
        f"overrides: {' '.join(base)}",
    ]
    table.write(output, "overhead")
    return table


def _switchable(cfg: DictConfig, overrides: Sequence[str]) -> bool:
    """Whether every key an override switches off exists in ``cfg`` (a config without a
    weight average has no ``callbacks.ema`` to switch off)."""
    keys = [o.split("=", 1)[0] for o in overrides if not o.startswith(("logger=", "trainer."))]
    return all(OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT for key in keys)


_ABSENT = object()


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads), torch {torch.__version__}"
    )


# The check's files (scripts/gpu_check.sh): the GPU tests' JUnit report and output, the speed
# benchmark of the default model and the fixed cost of the tiny one.
CHECK_FILES = {
    "tests": "tests.xml",
    "test_output": "tests.txt",
    "speed": "default/speed.json",
    "overhead": "overhead/overhead.csv",
}
PEAK_LINE = re.compile(r"\[gpu\] (?P<test>.+): peak GPU memory (?P<mib>\d+) MiB")


def check_summary(folder: Path) -> str:
    """One Markdown block from the files of ``scripts/gpu_check.sh`` in ``folder`` (what
    :data:`CHECK_FILES` names): the GPU tests passed, images/s per variant, the fixed cost
    per step and the peak memory, ready to paste into docs/results.md. A missing file is
    named as missing rather than failing the summary."""
    paths = {name: folder / relative for name, relative in CHECK_FILES.items()}
    machine_name = _speed_machine(paths["speed"]) if paths["speed"].is_file() else "unknown"
    lines = [
        f"**GPU check** on {machine_name}",
        f"- tests (`pytest -m gpu`): {_test_counts(paths['tests'])}",
    ]
    if paths["test_output"].is_file():
        peaks = [m.groupdict() for m in PEAK_LINE.finditer(paths["test_output"].read_text())]
        if peaks:
            shown = "; ".join(f"{p['test']} {int(p['mib']):,} MiB" for p in peaks)
            lines.append(f"- peak GPU memory of the tests: {shown}")
    if paths["speed"].is_file():
        lines += _speed_lines(json.loads(paths["speed"].read_text()))
    else:
        lines.append(f"- speed: {CHECK_FILES['speed']} missing (the benchmark did not finish)")
    lines.append(f"- fixed cost per step (tiny model, batch 32): {_fixed_cost(paths['overhead'])}")
    return "\n".join(lines) + "\n"


def _speed_machine(path: Path) -> str:
    return str(json.loads(path.read_text()).get("machine", "unknown"))


def _test_counts(path: Path) -> str:
    if not path.is_file():
        return f"{CHECK_FILES['tests']} missing (pytest did not run)"
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    return (
        f"{passed} passed, {count['failures'] + count['errors']} failed, "
        f"{count['skipped']} skipped, of {count['tests']}"
    )


def _speed_lines(speed: dict[str, Any]) -> list[str]:
    overrides = " ".join(o for o in speed.get("overrides", []) if not o.startswith("data.path="))
    lines = [
        f"- images/s, default model (`{overrides}`), median step after warm-up:",
        "",
        "  | variant | images/s | ms/step | peak memory (MiB) |",
        "  | --- | --- | --- | --- |",
    ]
    for name, result in speed["variants"].items():
        peak = result.get("peak_memory_mb")
        lines.append(
            f"  | {name} | {result['images_per_second']:,.0f} | {1000 * result['seconds']:.2f} "
            f"| {'-' if peak is None else f'{peak:,.0f}'} |"
        )
    for name, rate in speed.get("loaders", {}).items():
        lines.append(f"  | {name} | {rate:,.0f} | - | - |")
    lines.append("")
    ratio = speed.get("ratios", {}).get("pipeline / bare loop throughput")
    if ratio is not None:
        lines.append(f"- pipeline / bare loop throughput: {ratio:.2f}")
    return lines


def _fixed_cost(path: Path) -> str:
    if not path.is_file():
        return f"{CHECK_FILES['overhead']} missing (the overhead benchmark did not finish)"
    with path.open() as handle:
        rows = {row["part"].strip(): row for row in csv.DictReader(handle)}
    pipeline = next((row for part, row in rows.items() if part.startswith("pipeline")), None)
    bare = next((row for part, row in rows.items() if part.startswith("bare loop")), None)
    if pipeline is None or bare is None:
        return f"{CHECK_FILES['overhead']} has no pipeline and bare-loop rows"
    return (
        f"{float(pipeline['cost (ms/step)']):.2f} ms (pipeline {float(pipeline['ms/step']):.2f} "
        f"ms against the bare loop's {float(bare['ms/step']):.2f} ms)"
    )
