"""The GPU recipe (``experiment=cifar10_gpu``) on CUDA: a compiled fit through both phases in
the precision ``auto`` picks (bf16-mixed from compute capability 8), its checkpoints, a
resume from ``last.ckpt`` and the test; the training batches drawn on the GPU; the metrics
in fp32 under bf16; DDP over two GPUs. Each test takes under a minute on one GPU and prints
its peak GPU memory.

Marked ``gpu``: skipped where ``torch.cuda.is_available()`` is false (tests/conftest.py).
Run them with ``pytest -m gpu`` or ``bash scripts/gpu_check.sh DIR``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters as dynamo_counters

from autoencoder.data import ArraysDataModule
from autoencoder.models.autoencoder import Autoencoder, _metrics
from autoencoder.models.encoders import Encoder
from autoencoder.precision import resolve_precision
from autoencoder.train import train
from tests.conftest import DDP_ENV, compose_job, make_images, run_script, write_arrays

pytestmark = pytest.mark.gpu

# The GPU experiment on a small generated array set: 1,280 training images, a fifth held out
# (4 steps of batch 256 an epoch, one validation and one test batch of 256: every batch of a
# split the same shape, so nothing compiles twice for a shape), one epoch frozen, then
# fine-tuned; no download (random encoder weights), no loader workers, and no image grids
# (the grid's 16 images would compile the forward once more, for dynamic shapes).
NUM_TRAIN, NUM_TEST = 1280, 256
GPU_EXPERIMENT = (
    "experiment=cifar10_gpu",
    "data=arrays",
    "data.val_fraction=0.2",
    "data.num_workers=0",
    "~callbacks.reconstructions",
    "encoder.weights=null",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "finetune.patience=null",
    "finetune.max_frozen_epochs=1",
)
EPOCHS, RESUMED_EPOCHS = 2, 3


def native_bf16_gpu() -> bool:
    return torch.cuda.get_device_capability() >= (8, 0) and torch.cuda.is_bf16_supported()


@pytest.fixture(scope="module")
def gpu_arrays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpu_arrays")
    for split, count, seed in (("train", NUM_TRAIN, 0), ("test", NUM_TEST, 1)):
        np.savez(folder / f"{split}.npz", images=make_images(count, seed=seed))
    return folder


def reset_peak_memory() -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def peak_memory_mib() -> float:
    """CUDA's allocator peak since :func:`reset_peak_memory`."""
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def print_peak(capsys: pytest.CaptureFixture, name: str, mib: float) -> None:
    """One line per test, shown even when pytest captures the output."""
    with capsys.disabled():
        print(f"\n[gpu] {name}: peak GPU memory {mib:.0f} MiB")


@pytest.fixture
def peak_memory(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture) -> Iterator[None]:
    """Print the test's peak GPU memory. Requested after the module's fixtures, whose work
    (the shared fit) is then not counted."""
    reset_peak_memory()
    yield
    print_peak(capsys, request.node.name, peak_memory_mib())


def gpu_config(arrays: Path, output_dir: Path, *overrides: str) -> Any:
    """The GPU experiment's config as its job runs it: ``trainer.precision=auto`` resolved."""
    cfg = compose_job(
        "train", *GPU_EXPERIMENT, f"data.path={arrays}", *overrides, output_dir=output_dir
    )
    assert cfg.trainer.precision == "auto" and cfg.model.compile is True
    resolve_precision(cfg)
    assert cfg.trainer.precision == ("bf16-mixed" if native_bf16_gpu() else "16-mixed")
    return cfg


@dataclass(frozen=True)
class GpuFit:
    folder: Path
    metrics: dict[str, Any]
    log: str  # Lightning's info lines
    compiled_graphs: int
    peak_memory_mib: float


@pytest.fixture(scope="module")
def gpu_fit(gpu_arrays: Path, tmp_path_factory: pytest.TempPathFactory) -> GpuFit:
    """The GPU experiment fitted for two epochs (one per phase) and tested, once per module."""
    folder = tmp_path_factory.mktemp("gpu_fit") / "run"
    lightning, lines = logging.getLogger("pytorch_lightning"), []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    lightning.addHandler(handler)
    level = lightning.level
    lightning.setLevel(logging.INFO)
    dynamo_counters.clear()
    reset_peak_memory()
    try:
        metrics, _ = train(gpu_config(gpu_arrays, folder, f"trainer.max_epochs={EPOCHS}"))
    finally:
        lightning.removeHandler(handler)
        lightning.setLevel(level)
    graphs = int(dynamo_counters["stats"]["unique_graphs"])
    return GpuFit(folder, metrics, "\n".join(lines), graphs, peak_memory_mib())


def test_the_gpu_experiment_fits_both_phases_compiled_with_checkpoints_and_a_test(
    gpu_fit: GpuFit, capsys: pytest.CaptureFixture
) -> None:
    print_peak(capsys, "the GPU experiment's fit and test", gpu_fit.peak_memory_mib)
    metrics = gpu_fit.metrics
    assert metrics["transition_epoch"] == 0  # phase 2 from the second epoch
    assert gpu_fit.compiled_graphs >= 2  # the forward compiled, again after the unfreezing
    assert "training batches drawn on cuda" in gpu_fit.log  # data.on_device=auto on the GPU
    checkpoints = gpu_fit.folder / "checkpoints"
    assert Path(metrics["best_ckpt"]).is_file() and (checkpoints / "last.ckpt").is_file()
    for key in ("test/mse", "test/mae", "test/psnr", "test/ssim"):
        assert math.isfinite(metrics[key]), key
    assert metrics["test/psnr"] > 5  # random weights and 8 steps: a reconstruction, not noise
    assert json.loads((gpu_fit.folder / "metrics.json").read_text())["best_ckpt"]


def test_the_gpu_experiment_resumes_from_last_ckpt_in_phase_2(
    gpu_fit: GpuFit, gpu_arrays: Path, tmp_path: Path, peak_memory: None
) -> None:
    last = gpu_fit.folder / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == EPOCHS - 1
    resumed, _ = train(
        gpu_config(
            gpu_arrays,
            tmp_path / "resumed",
            f"trainer.max_epochs={RESUMED_EPOCHS}",
            f"ckpt_path={last}",
        )
    )
    assert resumed["transition_epoch"] == gpu_fit.metrics["transition_epoch"] == 0
    assert math.isfinite(resumed["test/psnr"]) and resumed["test/psnr"] > 5
    final = torch.load(
        tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert final["epoch"] == RESUMED_EPOCHS - 1


def device_batches(
    folder: Path, device: torch.device, seed: int = 7, **options: Any
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two epochs (0 and 3) of on-device training batches drawn on ``device``, on the CPU."""
    torch.manual_seed(seed)
    datamodule = ArraysDataModule(folder, batch_size=16, on_device=True, **options)
    datamodule.setup("fit")
    loader = datamodule.device_batches(device)
    assert loader.images.device.type == device.type
    drawn = []
    for epoch in (0, 3):
        loader.set_epoch(epoch)
        for images, labels in loader:
            assert images.device.type == labels.device.type == device.type
            drawn.append((images.cpu(), labels.cpu()))
    return drawn


def per_image_batches(folder: Path, seed: int = 7) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    datamodule = ArraysDataModule(folder, batch_size=16, num_workers=0, on_device=False)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    drawn = []
    for epoch in (0, 3):
        loader.sampler.set_epoch(epoch)
        drawn += list(loader)
    return drawn


def assert_equal_batches(first: list, second: list) -> None:
    assert len(first) == len(second) > 0
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second, strict=True):
        assert images_a.dtype == images_b.dtype == torch.float32
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


def test_batches_drawn_on_cuda_are_the_cpu_batches_for_the_same_seed(
    tmp_path: Path, peak_memory: None
) -> None:
    """The CPU version is tests/data/test_on_device.py: the same order and images as the
    per-image loader without augmentation, and with flips and crops the same draws on the
    GPU as on the CPU (drawn from a CPU generator, applied on the device)."""
    folder = write_arrays(tmp_path / "arrays")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert_equal_batches(device_batches(folder, cuda), per_image_batches(folder))
    augmented = {"random_crop": True, "horizontal_flip": True}
    on_gpu = device_batches(folder, cuda, **augmented)
    assert_equal_batches(on_gpu, device_batches(folder, cpu, **augmented))
    assert not torch.equal(on_gpu[0][0], device_batches(folder, cuda)[0][0])  # augmented


def test_metrics_are_computed_in_fp32_under_bf16_autocast_on_cuda(peak_memory: None) -> None:
    """The CUDA version of tests/models/test_autoencoder.py's CPU test: under bf16-mixed the
    test step runs in autocast, the metrics opt out of it."""
    torch.manual_seed(0)
    model = Autoencoder(Encoder("resnet18", weights=None, depth=2), latent_channels=4)
    model = model.cuda().eval()
    images = torch.rand(16, 3, 32, 32, device="cuda").clamp(0.05, 0.95)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        reconstruction = model(images)
        model._step(images, model.test_metrics, "test")
    assert reconstruction.dtype == torch.bfloat16  # the forward ran in bf16
    expected = _metrics("fp32/").cuda()
    expected.update(reconstruction.float().contiguous(), images)
    got, want = model.test_metrics.compute(), expected.compute()
    for name in ("mse", "mae", "psnr", "ssim"):
        assert got[f"test/{name}"].dtype == torch.float32
        assert got[f"test/{name}"].item() == pytest.approx(want[f"fp32/{name}"].item(), rel=1e-5)


@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason=f"needs two CUDA GPUs; torch sees {torch.cuda.device_count()}",
)
def test_ddp_over_two_gpus_goes_through_both_phases_and_ranks_agree(
    gpu_arrays: Path, tmp_path: Path
) -> None:
    """The GPU experiment on two GPUs as scripts/train.py launches it (Lightning re-runs the
    script for rank 1), each rank drawing its shard on its own GPU. Not compiled: compiling
    under DDP (its graph split per bucket) is left out to stay within a minute. The ranks
    are processes of their own: no peak memory of this process to print."""
    run_dir, probe = tmp_path / "ddp", tmp_path / "probe"
    result = run_script(
        "train.py",
        *GPU_EXPERIMENT,
        f"data.path={gpu_arrays}",
        "trainer.strategy=ddp_find_unused_parameters_true",
        "trainer.devices=2",
        f"trainer.max_epochs={EPOCHS}",
        "model.compile=false",
        f"hydra.run.dir={run_dir}",
        "+callbacks.rank_probe._target_=tests.probes.RankProbe",
        f"+callbacks.rank_probe.folder={probe}",
        env=DDP_ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["phase"] == 2
    assert ranks[0] == ranks[1]  # same phase, transition step, rates and weights
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["transition_epoch"] == 0 and math.isfinite(metrics["test/psnr"])
