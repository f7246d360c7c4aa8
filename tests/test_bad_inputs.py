"""Every bad input, and what a user sees for it: one table.

Each case triggers the mistake the way a user makes it (most through ``cli.run_job(train,
cfg)``, what ``scripts/train.py`` runs) and compares what is reported with the expected
text: the ``error: ...`` lines the script prints before exiting with status 1, a warning for
what is skipped, Hydra's own error for an unknown config option, or nothing ("") for images
that are converted. In the expected text ``...`` stands for any text, ``{tmp}`` for the
test's folder and ``{ckpt}`` for a checkpoint of a tiny run.
"""

from __future__ import annotations

import io
import math
import os
import re
import urllib.error
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from autoencoder import checkpointing, losses
from autoencoder.cli import run_job
from autoencoder.data import FolderDataModule, ImageDataModule
from autoencoder.data.torchvision_sets import _TorchvisionDataModule
from autoencoder.encode import encode
from autoencoder.evaluate import evaluate
from autoencoder.examples import TWO_PHASES, smoke_overrides
from autoencoder.models.shape import ARCHITECTURE_KEY
from autoencoder.runs import load_autoencoder
from autoencoder.train import train
from tests.conftest import compose_job, make_images

TINY = (*smoke_overrides(16, 8, 8, batch_size=8), "trainer.max_epochs=1", "logger=none")
# The model of TINY on data from files (data=folder or data=arrays).
ON_FILES = (
    "data.num_workers=0",
    "data.batch_size=4",
    "encoder.weights=null",
    "layout=depth3",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=none",
)
# Two steps per epoch; phase 2 from the end of epoch 0 (global step 2), without warm-up.
PHASE_TWO_AT_STEP_2 = (*TWO_PHASES, "finetune.warmup_steps=0")


@dataclass(frozen=True)
class Inputs:
    """What a trigger may use: its own folder and a tiny trained run (trained on demand)."""

    tmp: Path
    tiny_run: Callable[[], tuple[Path, DictConfig]]


@dataclass(frozen=True)
class Case:
    id: str
    trigger: Callable[[Inputs], Any]
    expected: str
    # refused before any work: no dataset opened, no weights downloaded or read
    before_work: bool = False


def cli_train(inputs: Inputs, *overrides: str, base: tuple[str, ...] = TINY) -> Any:
    """``scripts/train.py`` with ``base`` and ``overrides``, in this process."""
    return run_job(train, compose_job("train", *base, *overrides, output_dir=inputs.tmp / "run"))


def user_sees(trigger: Callable[[], Any]) -> list[str]:
    """What is reported: the error lines as the script prints them, Hydra's error, and
    the warnings. The script's stderr holds those error lines and nothing else."""
    stderr = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stderr(stderr):
        warnings.simplefilter("always")
        try:
            run_job(lambda _: trigger(), OmegaConf.create())
        except SystemExit as exit:
            assert exit.code == 1
        except HydraException as error:
            return [str(error)]
    printed = stderr.getvalue()
    assert "Traceback" not in printed
    errors = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert errors == printed.splitlines(), f"stderr has more than error lines:\n{printed}"
    return (["\n".join(errors)] if errors else []) + [str(w.message) for w in caught]


def matches(expected: str, message: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, message, flags=re.DOTALL) is not None


# -- triggers -------------------------------------------------------------------------------


def image_folder(tmp: Path, extra: dict[str, Image.Image | bytes]) -> Path:
    """Ten 8x8 RGB PNGs plus ``extra`` files (images, or raw bytes)."""
    folder = tmp / "images"
    folder.mkdir()
    for index, pixels in enumerate(make_images(10, size=8)):
        Image.fromarray(pixels).save(folder / f"{index}.png")
    for name, content in extra.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            content.save(folder / name)
    return folder


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(make_images(1, size=8)[0]).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def load_folder(tmp: Path, extra: dict[str, Image.Image | bytes], **options: Any) -> dict:
    """Set up a folder datamodule; return its images by file name, as the model gets them."""
    datamodule = FolderDataModule(
        image_folder(tmp, extra), batch_size=4, val_fraction=0.2, test_fraction=0.2, **options
    )
    datamodule.setup()
    files = datamodule.train_set.base.dataset  # every readable file, before the split
    transform = datamodule.test_set.transform
    return {path.name: transform(files[i][0]) for i, (path, _) in enumerate(files.items)}


def changed_after_scan(inputs: Inputs) -> None:
    """A file that breaks after the start (rewritten by a sync tool, a full disk, ...)."""
    folder = image_folder(inputs.tmp, {})
    datamodule = FolderDataModule(folder, batch_size=4, val_fraction=0.2, test_fraction=0.2)
    datamodule.setup()
    (folder / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for loader in (
        datamodule.train_dataloader,
        datamodule.val_dataloader,
        datamodule.test_dataloader,
    ):
        for _ in loader():
            pass


def converted(image: Image.Image, rgb: tuple[float, float, float]) -> Callable[[Inputs], None]:
    def trigger(inputs: Inputs) -> None:
        pixels = load_folder(inputs.tmp, {"odd.png": image})["odd.png"]
        assert pixels.shape == (3, 8, 8) and pixels.dtype == torch.float32
        torch.testing.assert_close(pixels[:, 0, 0], torch.tensor(rgb))

    return trigger


def arrays(inputs: Inputs, images: np.ndarray) -> None:
    folder = inputs.tmp / "arrays"
    folder.mkdir()
    for split in ("train", "test"):
        np.savez(folder / f"{split}.npz", images=images)
    cli_train(inputs, "data=arrays", f"data.path={folder}", base=ON_FILES)


def empty_folder(inputs: Inputs) -> None:
    folder = inputs.tmp / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    cli_train(inputs, "data=folder", f"data.path={folder}", base=ON_FILES)


class RunsCode:
    """An object whose unpickling would create the folder ``path``: code in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.path),))


def weights_file(inputs: Inputs, name: str, content: Any) -> Path:
    path = inputs.tmp / name
    torch.save(content, path)
    return path


def with_weights(inputs: Inputs, content: Any, *overrides: str) -> None:
    cli_train(inputs, *overrides, f"encoder.weights={weights_file(inputs, 'file.pt', content)}")


def offline(inputs: Inputs) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("offline")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
        patch.setattr(torchvision.models.WeightsEnum, "get_state_dict", no_network)
        cfg = compose_job(
            "train", "logger=none", f"paths.data_dir={inputs.tmp}", output_dir=inputs.tmp / "run"
        )
        run_job(train, cfg)


def resume(inputs: Inputs, checkpoint: Path, *overrides: str) -> None:
    cli_train(inputs, *overrides, f"ckpt_path={checkpoint}")


def without_settings(inputs: Inputs) -> Path:
    """The tiny run's checkpoint as written before it recorded its settings."""
    checkpoint = torch.load(inputs.tiny_run()[0], weights_only=True)
    del checkpoint[ARCHITECTURE_KEY]
    return weights_file(inputs, "old.ckpt", checkpoint)


def truncated_checkpoint(inputs: Inputs) -> Path:
    data = inputs.tiny_run()[0].read_bytes()
    path = inputs.tmp / "half.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path


def evaluate_with(inputs: Inputs, *overrides: str) -> None:
    checkpoint, cfg = inputs.tiny_run()
    other = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    load_autoencoder(checkpoint, other)


def cli_job(inputs: Inputs, job: Callable[[DictConfig], Any], name: str, *overrides: str) -> Any:
    """``scripts/<name>.py overrides...`` in this process, with the Hydra section that a
    script's job has (the command line's overrides and group choices)."""
    return run_job(job, compose_job(name, *overrides, output_dir=inputs.tmp / "job", hydra=True))


def run_folder(inputs: Inputs) -> Path:
    """The tiny run's folder (``<run>/checkpoints/last.ckpt`` inside)."""
    return inputs.tiny_run()[0].parent.parent


def without_cuda(trigger: Callable[[Inputs], Any]) -> Callable[[Inputs], Any]:
    """``trigger`` on a machine where torch sees no CUDA device."""

    def on_a_cpu_machine(inputs: Inputs) -> Any:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: False)
            patch.setattr(torch.cuda, "device_count", lambda: 0)
            return trigger(inputs)

    return on_a_cpu_machine


def adapt_offline(inputs: Inputs) -> None:
    """experiment=adapt without init_from, as a new user types it, offline."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("offline")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
        cli_job(inputs, train, "train", "experiment=adapt", f"paths.data_dir={inputs.tmp}")


def nan_once_in_training(inputs: Inputs) -> None:
    """A loss that is NaN at the 4th training step only (global step 3, in phase 2)."""
    mse, calls = losses.PIXEL_LOSSES["mse"], []

    def flaky_mse(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            calls.append(None)
        loss = mse(reconstruction, target)
        return loss * math.nan if len(calls) == 4 and torch.is_grad_enabled() else loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(losses.PIXEL_LOSSES, "mse", flaky_mse)
        summary, _ = cli_train(inputs, *PHASE_TWO_AT_STEP_2, "model.nonfinite_loss=skip")
    assert math.isfinite(summary["test/psnr"]) and summary["transition_epoch"] == 0


FIX_RESUME = (
    ". Resume with the config of the run that wrote it (the overrides in its "
    ".hydra/overrides.yaml), or train without ckpt_path."
)
ARRAYS_FORMAT = (
    "each .npz needs key 'images' (uint8, N x H x W x 3 RGB or N x H x W grayscale) and "
    "optionally key 'labels' (integers, length N)."
)

NO_CUDA = "this machine has no CUDA device (torch.cuda.is_available() is false)"

CASES = [
    # -- before any work: what the config and the file system decide ----------------------------
    Case(
        "adapt-needs-init-from-before-downloading",
        adapt_offline,
        "error: this recipe adapts a pretrained autoencoder (requires_init_from=true, e.g. "
        "experiment=adapt): set init_from=<a run's checkpoint>, e.g. init_from=outputs/train/"
        "runs/<run>/checkpoints/best-epochNNN.ckpt. To start from a run's encoder alone, use "
        "encoder.weights=<that checkpoint> with another experiment.",
        before_work=True,
    ),
    Case(
        "score-start-invalid",
        lambda i: cli_train(i, "score_start=maybe"),
        "error: score_start must be auto, true or false; got 'maybe'.",
        before_work=True,
    ),
    Case(
        "model-lr-before-the-data",
        lambda i: cli_train(i, "data=arrays", f"data.path={i.tmp}", "model.lr=0", base=ON_FILES),
        "error: data.path='{tmp}' has no train.npz and no test.npz. data=arrays needs "
        "data.path=<DIR> containing train.npz and test.npz.\n"
        "error: model.lr must be > 0, got 0.",
        before_work=True,
    ),
    Case(
        "seed-not-an-integer",
        lambda i: cli_train(i, "seed=abc"),
        "error: seed must be an integer, got 'abc'; e.g. seed=42.",
        before_work=True,
    ),
    Case(
        "optimized-metric-not-logged",
        lambda i: cli_train(i, "optimized_metric=val/acc"),
        "error: optimized_metric='val/acc' is not a metric the model logs; use one of val/loss, "
        "val/mae, val/mse, val/psnr, val/ssim.",
        before_work=True,
    ),
    Case(
        "export-encoder-a-folder",
        lambda i: cli_job(
            i, encode, "encode", f"ckpt_path={i.tiny_run()[0]}", f"export_encoder={i.tmp}"
        ),
        "error: export_encoder='{tmp}' is a folder; pass the file to write, e.g. "
        "export_encoder={tmp}/encoder.pt.",
        before_work=True,
    ),
    Case(
        "init-from-a-run-folder",
        lambda i: cli_train(i, f"init_from={run_folder(i)}"),
        "error: init_from='...' is a folder, not a file. Pass the file inside it: "
        "init_from='{ckpt}'",
        before_work=True,
    ),
    Case(
        "resume-from-a-checkpoints-folder",
        lambda i: resume(i, i.tiny_run()[0].parent),
        "error: ckpt_path='...' is a folder, not a file. Pass the file inside it: "
        "ckpt_path='{ckpt}'",
        before_work=True,
    ),
    Case(
        "weights-a-folder",
        lambda i: cli_train(i, f"encoder.weights={i.tmp}"),
        "error: encoder.weights='{tmp}' is a folder, not a file. Use encoder.weights=imagenet, "
        "encoder.weights=null, the path to a state dict saved with torch.save, or a training "
        "run's checkpoint (its encoder is taken).",
        before_work=True,
    ),
    Case(
        "arrays-folder-missing",
        lambda i: cli_train(i, "data=arrays", f"data.path={i.tmp / 'nope'}", base=ON_FILES),
        "error: data.path='{tmp}/nope': no such folder. data=arrays needs data.path=<DIR> "
        "containing train.npz and test.npz.",
        before_work=True,
    ),
    Case(
        "evaluate-a-run-folder",
        lambda i: cli_job(i, evaluate, "evaluate", f"ckpt_path={run_folder(i)}"),
        "error: ckpt_path='...' is a folder, not a file. Pass the file inside it: "
        "ckpt_path='{ckpt}'",
        before_work=True,
    ),
    Case(
        "evaluate-on-a-missing-gpu",
        without_cuda(
            lambda i: cli_job(
                i, evaluate, "evaluate", f"ckpt_path={i.tiny_run()[0]}", "device=cuda"
            )
        ),
        f"error: device='cuda': {NO_CUDA}; use device=cpu, or device=null to use a GPU only "
        "where there is one.",
        before_work=True,
    ),
    Case(
        "encode-malformed-device",
        lambda i: cli_job(i, encode, "encode", f"ckpt_path={i.tiny_run()[0]}", "device=gpu0"),
        "error: device='gpu0' is not a device; use cpu, cuda or cuda:N (device=null: cuda when "
        "available, else cpu).",
        before_work=True,
    ),
    Case(
        "encode-unknown-split",
        lambda i: cli_job(i, encode, "encode", f"ckpt_path={i.tiny_run()[0]}", "split=dev"),
        "error: split='dev' is invalid; use one of train, val, test or all.",
        before_work=True,
    ),
    Case(
        "gpu-trainer-without-gpu",
        without_cuda(lambda i: cli_job(i, train, "train", "trainer=gpu", "logger=none")),
        f"error: trainer.accelerator=gpu: {NO_CUDA}. Drop trainer=gpu, or set "
        "trainer.accelerator=auto (the GPU where there is one) or cpu.",
        before_work=True,
    ),
    Case(
        "gpu-trainer-on-an-experiment-that-pins-the-cpu",
        lambda i: cli_job(i, train, "train", "experiment=smoke", "trainer=gpu"),
        "error: trainer=gpu is not used: experiment=smoke sets trainer.accelerator=cpu. Set the "
        "keys themselves instead (trainer.accelerator=gpu), or drop trainer=gpu.",
        before_work=True,
    ),
    Case(
        "layout-on-a-recipe-with-its-own-cut",
        lambda i: cli_job(i, train, "train", "experiment=quality_256", "layout=depth2"),
        "error: layout=depth2 is not used: experiment=quality_256 sets encoder.depth=3. Set the "
        "keys themselves instead (encoder.depth=2), or drop layout=depth2.",
        before_work=True,
    ),
    # -- names --------------------------------------------------------------------------------
    Case(
        "unknown-encoder-option",
        lambda i: cli_train(i, "encoder=resnet19"),
        "In 'train': Could not find 'encoder/resnet19'\n\nAvailable options in 'encoder':\n"
        "\t_base\n\tresnet101\n\tresnet152\n\tresnet18\n\tresnet34\n\tresnet50\n\ttimm\n\tvgg11\n"
        "\tvgg11_bn\n\tvgg13\n\tvgg13_bn\n\tvgg16\n\tvgg16_bn\n\tvgg19\n\tvgg19_bn\n...",
    ),
    Case(
        "unknown-encoder-name",
        lambda i: cli_train(i, "encoder.name=resnet19"),
        "error: unknown encoder 'resnet19'. Valid names: resnet18, resnet34, resnet50, "
        "resnet101, resnet152, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, "
        "vgg19_bn, or timm/MODEL for a timm model (set encoder=NAME; an encoder registered in "
        "a module of your own needs imports=[MODULE]).",
    ),
    Case(
        "unimportable-module",
        lambda i: cli_train(i, "imports=[no_such_package.encoders]"),
        "error: imports: cannot import 'no_such_package.encoders' (ModuleNotFoundError: No "
        "module named 'no_such_package'). Put the folder that holds it on PYTHONPATH or install "
        "its package, or fix the name in imports=[...].",
    ),
    Case(
        "imports-not-module-names",
        lambda i: cli_train(i, "imports=[1]"),
        "error: imports must be a list of module names, e.g. imports=[my_package.my_encoders]; "
        "got [1].",
    ),
    Case(
        "unknown-decoder-option",
        lambda i: cli_train(i, "decoder=bilinear"),
        "In 'train': Could not find 'decoder/bilinear'\n\nAvailable options in 'decoder':\n"
        "\tpixel_shuffle\n\tresize_conv\n\ttransposed\n...",
    ),
    Case(
        "unknown-decoder-upsampling",
        lambda i: cli_train(i, "decoder.upsample=bilinear"),
        "error: invalid configuration:\n"
        "error:   decoder.upsample='bilinear': expected one of 'resize_conv', "
        "'pixel_shuffle', 'transposed', got str",
    ),
    Case(
        "unknown-dataset",
        lambda i: cli_train(i, "data=imagenet"),
        "In 'train': Could not find 'data/imagenet'\n\nAvailable options in 'data':\n"
        "\t_base\n\tarrays\n\tcifar10\n\tcifar100\n\tfolder\n\tstl10\n\tsynthetic\n...",
    ),
    # -- learning rates -------------------------------------------------------------------------
    Case(
        "model-lr-not-positive",  # also the top encoder stage's rate: named as the user set it
        lambda i: cli_train(i, "model.lr=-1"),
        "error: model.lr must be > 0, got -1.",
    ),
    Case(
        "encoder-lr-negative",
        lambda i: cli_train(i, "finetune.encoder_lr=-1"),
        "error: finetune.encoder_lr must be >= 0, or null to follow model.lr; got -1.",
    ),
    # -- sizes ----------------------------------------------------------------------------------
    Case(
        "depth-too-large",
        lambda i: cli_train(i, "encoder.depth=6"),
        "error: encoder.depth=6 is out of range for resnet18: it has 5 stages (stem, layer1, "
        "layer2, layer3, layer4). Use 1 .. 5.",
    ),
    Case(
        "depth-zero",
        lambda i: cli_train(i, "encoder=vgg11", "encoder.depth=0"),
        "error: encoder.depth=0 is out of range for vgg11: it has 5 stages (block1, block2, "
        "block3, block4, block5). Use 1 .. 5.",
    ),
    Case(
        "image-size-not-divisible",
        lambda i: cli_train(i, "encoder.depth=5", "data.image_size=48"),
        "error: image size 48x48 is not divisible by the encoder's downsampling (32x for "
        "resnet18 at depth 5). Nearest valid sizes: 32 or 64; set data.image_size=N, or use a "
        "shallower encoder.depth.",
    ),
    # -- image files ------------------------------------------------------------------------------
    Case(
        "empty-image-folder",
        empty_folder,
        "error: no images found under {tmp}/empty (looked for extensions .png, .jpg, .jpeg, "
        ".bmp, .gif, .webp, .tif, .tiff). Point data.path at a folder of images.",
    ),
    Case(
        "corrupt-image-skipped",
        lambda i: load_folder(i.tmp, {"broken.png": b"\x89PNG\r\n\x1a\n" + b"garbage" * 10}),
        "Skipping 1 unreadable image file(s) under {tmp}/images: broken.png.",
    ),
    Case(
        "truncated-jpeg-skipped",
        lambda i: load_folder(i.tmp, {"cut.jpg": truncated_jpeg()}),
        "Skipping 1 unreadable image file(s) under {tmp}/images: cut.jpg.",
    ),
    Case(
        "corrupt-image-refused",
        lambda i: load_folder(i.tmp, {"cut.jpg": truncated_jpeg()}, skip_corrupt=False),
        "error: 1 unreadable image file(s) under {tmp}/images: cut.jpg. Delete or fix them, or "
        "set data.skip_corrupt=true to skip them.",
    ),
    Case(
        "image-broken-after-the-start",
        changed_after_scan,
        "error: {tmp}/images/0.png could not be read (...); it was readable when the folder was "
        "scanned, so it changed since. Restore or delete it and restart from the run's "
        "checkpoints/last.ckpt.",
    ),
    Case("grayscale-image-converted", converted(Image.new("L", (8, 8), 51), (0.2, 0.2, 0.2)), ""),
    Case(
        "rgba-image-converted",
        converted(Image.new("RGBA", (8, 8), (255, 0, 51, 7)), (1.0, 0.0, 0.2)),
        "",
    ),
    Case(
        "16-bit-image-converted",
        converted(Image.fromarray(np.full((8, 8), 257 * 51, np.uint16)), (0.2, 0.2, 0.2)),
        "",
    ),
    Case(
        "rgba-arrays",
        lambda i: arrays(i, np.zeros((4, 8, 8, 4), np.uint8)),
        "error: {tmp}/arrays/train.npz: 'images' has shape (4, 8, 8, 4), expected N x H x W x 3 "
        f"or N x H x W with N > 0 (channels last); {ARRAYS_FORMAT}",
    ),
    Case(
        "16-bit-arrays",
        lambda i: arrays(i, np.zeros((4, 8, 8, 3), np.uint16)),
        "error: {tmp}/arrays/train.npz: 'images' has dtype uint16, expected uint8 (0..255). "
        f"Convert 16-bit values with (images / 257).round().astype(np.uint8); {ARRAYS_FORMAT}",
    ),
    # -- weights -------------------------------------------------------------------------------
    Case(
        "weights-of-another-architecture",
        lambda i: with_weights(i, torchvision.models.resnet18().state_dict(), "encoder=resnet34"),
        "error: {tmp}/file.pt does not fit encoder resnet34: 96 missing keys: layer1.2.bn1.bias, "
        "... (+91 more). Is it a state dict of another architecture? Set encoder=NAME to the "
        "one it was saved from (this run builds resnet34), or use encoder.weights=imagenet / "
        "null.",
    ),
    Case(
        "weights-file-missing",
        lambda i: cli_train(i, f"encoder.weights={i.tmp / 'missing.pt'}"),
        "error: encoder.weights='{tmp}/missing.pt': no such file. Use encoder.weights=imagenet, "
        "encoder.weights=null, the path to a state dict saved with torch.save, or a training "
        "run's checkpoint (its encoder is taken).",
    ),
    Case(
        "weights-file-that-runs-code",
        lambda i: with_weights(i, {"conv1.weight": RunsCode(i.tmp / "ran")}),
        "error: encoder.weights='{tmp}/file.pt' could not be read as a weights-only state dict "
        "(...GLOBAL os.makedirs...). Save plain tensors with torch.save(model.state_dict(), "
        "PATH).",
    ),
    Case(
        "dataset-and-weights-offline",
        offline,
        "error: CIFAR-10 is not in {tmp} and could not be downloaded (offline). Either connect "
        "to the internet once, put the extracted dataset under data.root=<DIR> (as "
        "<DIR>/cifar-10-batches-py), or train from local arrays: data=arrays data.path=<DIR "
        "with train.npz and test.npz>.\n"
        "error: could not download the ImageNet weights of resnet18 "
        "(https://download.pytorch.org/models/resnet18-f37072fd.pth): offline. Either connect "
        "once so torchvision caches them, pass a local state dict with encoder.weights=PATH "
        "(e.g. one made by scripts/pretrain_encoder.py), or train from scratch with "
        "encoder.weights=null.",
    ),
    # -- checkpoints ---------------------------------------------------------------------------
    Case(
        "checkpoint-missing",
        lambda i: resume(i, i.tmp / "missing.ckpt"),
        "error: ckpt_path='{tmp}/missing.ckpt': no such file. Pass an existing checkpoint, e.g. "
        "outputs/train/runs/<run>/checkpoints/last.ckpt.",
    ),
    Case(
        "checkpoint-of-another-latent-size",
        lambda i: resume(i, i.tiny_run()[0], "model.latent_channels=32"),
        "error: ckpt_path={ckpt} was saved with model.latent_channels=16, but this config has "
        "model.latent_channels=32" + FIX_RESUME,
    ),
    Case(
        "checkpoint-of-another-encoder",
        lambda i: resume(i, i.tiny_run()[0], "encoder=resnet34", "encoder.depth=2"),
        "error: ckpt_path={ckpt} was saved with encoder.name=resnet18, encoder.depth=3, but "
        "this config has encoder.name=resnet34, encoder.depth=2" + FIX_RESUME,
    ),
    Case(
        "checkpoint-without-recorded-settings",
        lambda i: resume(i, without_settings(i), "model.latent_channels=32"),
        "error: ckpt_path={tmp}/old.ckpt does not fit this model: 3 weights of another shape: "
        "bottleneck.bias (16 in the checkpoint, 32 here), bottleneck.weight (16x128x1x1 in the "
        "checkpoint, 32x128x1x1 here), decoder.input.0.weight (128x16x3x3 in the checkpoint, "
        "128x32x3x3 here)" + FIX_RESUME,
    ),
    Case(
        "evaluate-checkpoint-with-another-config",
        lambda i: evaluate_with(i, "model.latent_channels=32"),
        "error: {ckpt} was saved with model.latent_channels=16, but this config has "
        "model.latent_channels=32. Pass model_config=PATH to the .hydra/config.yaml of the run "
        "that wrote it.",
    ),
    Case(
        "checkpoint-truncated",
        lambda i: resume(i, truncated_checkpoint(i)),
        "error: {tmp}/half.ckpt is not a readable checkpoint (PytorchStreamReader failed reading "
        "zip archive...): it is truncated or corrupt. "
        "Resume from another checkpoint of the run (checkpoints/last.ckpt or "
        "best-epochNNN.ckpt).",
    ),
    Case(
        "checkpoint-that-runs-code",
        lambda i: resume(
            i, weights_file(i, "evil.ckpt", {"state_dict": {}, "x": RunsCode(i.tmp / "ran")})
        ),
        "error: {tmp}/evil.ckpt holds pickled objects other than tensors and plain values, which "
        "a weights-only load refuses (...GLOBAL os.makedirs...). Checkpoints written by this "
        "project never do: use one of your own runs' checkpoints. Unpickling this file could "
        "run code from it; never do that with a file from an unknown source.",
    ),
    # -- training ------------------------------------------------------------------------------
    Case(
        "nan-loss-stops",
        lambda i: cli_train(i, *PHASE_TWO_AT_STEP_2, "finetune.encoder_lr=1e30"),
        "error: non-finite training loss (nan) at global step 3, epoch 1, fine-tuning phase 2 "
        "(encoder unfrozen). Lower model.lr (and finetune.encoder_lr), check the data for NaN "
        "or extreme pixel values, or set model.nonfinite_loss=skip to skip such batches. The "
        "run's checkpoints/last.ckpt (once an epoch ended) holds the weights from before this "
        "step.",
    ),
    Case(
        "nan-loss-skipped",
        nan_once_in_training,
        "non-finite training loss (nan) at global step 3, epoch 1, fine-tuning phase 2 (encoder "
        "unfrozen): batch skipped (model.nonfinite_loss=skip), 1 so far in this run.",
    ),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], tuple[Path, DictConfig]]:
    """A one-epoch run (ResNet-18 to layer2, 16 latent channels), trained on first use."""
    trained: list[tuple[Path, DictConfig]] = []

    def get() -> tuple[Path, DictConfig]:
        if not trained:
            folder = tmp_path_factory.mktemp("tiny_run")
            cfg = compose_job("train", *TINY, output_dir=folder)
            train(cfg)
            trained.append((folder / "checkpoints" / "last.ckpt", cfg))
        return trained[0]

    return get


@contextmanager
def loaders_watched() -> Iterator[list[str]]:
    """Record every call of the project's data and weight loaders (each refuses to run):
    a datamodule's setup or download, a weights file or checkpoint read, a torchvision
    weights download."""
    touched: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def loader(*args: Any, **kwargs: Any) -> Any:
            touched.append(name)
            raise AssertionError(f"{name} was called before the checks")

        return loader

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageDataModule, "setup", refuse("datamodule setup"))
        patch.setattr(_TorchvisionDataModule, "prepare_data", refuse("dataset download"))
        patch.setattr(checkpointing, "load_weights_only", refuse("weights file read"))
        patch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse("weights download"))
        yield touched


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_reports_what_is_wrong_and_the_fix(
    case: Case, tmp_path: Path, tiny_run: Callable[[], tuple[Path, DictConfig]]
) -> None:
    inputs = Inputs(tmp_path, tiny_run)
    if case.before_work:
        tiny_run()  # trained (once for the module) before the loaders are watched
        with loaders_watched() as touched:
            seen = user_sees(lambda: case.trigger(inputs))
        assert touched == [], f"loaders called before the mistake was reported: {touched}"
    else:
        seen = user_sees(lambda: case.trigger(inputs))
    if not case.expected:
        assert seen == []
        return
    expected = case.expected.replace("{tmp}", str(tmp_path))
    if "{ckpt}" in expected:
        expected = expected.replace("{ckpt}", str(tiny_run()[0]))
    assert any(matches(expected, message) for message in seen), "\n---\n".join(seen)
    assert not (tmp_path / "ran").exists()  # no file ran code
