"""Every config option composes, validates and instantiates; typos fail at start, clearly."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict
from PIL import Image
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.strategies import DDPStrategy
from torch import nn

from autoencoder.callbacks import EMAWeights, ReconstructionImages
from autoencoder.cli import renamed_key_errors
from autoencoder.compat import ddp_finds_unused_parameters
from autoencoder.config import instantiate, instantiate_all
from autoencoder.data import (
    ArraysDataModule,
    CIFAR10DataModule,
    CIFAR100DataModule,
    FolderDataModule,
    STL10DataModule,
    SyntheticDataModule,
)
from autoencoder.errors import ConfigError
from autoencoder.loggers import ResumableCSVLogger
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.decoders import ResidualBlock
from autoencoder.models.encoders import ENCODERS
from autoencoder.precision import auto_precision, resolve_precision
from autoencoder.runs import build_model
from autoencoder.validation import matches, validate_config
from tests.conftest import CONFIG_DIR, ROOT, compose_job, make_images, run_script

GROUPS = (
    "data",
    "encoder",
    "decoder",
    "model",
    "optimizer",
    "finetune",
    "trainer",
    "callbacks",
    "logger",
    "debug",
    "paths",
    "experiment",
    "layout",
    "hparams_search",
)
# A file whose name starts with "_" is a base the options of its group inherit, not an option.
OPTIONS = [
    (group, path.stem)
    for group in GROUPS
    for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
    if not path.stem.startswith("_")
]


def test_every_group_is_covered() -> None:
    # wandb_sweep holds W&B sweep files, not a group (tests/test_wandb_sweeps.py)
    groups = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()} - {"hydra", "wandb_sweep"}
    assert groups == set(GROUPS)
    assert len(OPTIONS) > 40


# torchvision's architectures, from their papers: residual blocks per ResNet layer, convs
# per VGG block, and each stage's output channels.
RESNET_BLOCKS = {
    "resnet18": [2, 2, 2, 2],
    "resnet34": [3, 4, 6, 3],
    "resnet50": [3, 4, 6, 3],
    "resnet101": [3, 4, 23, 3],
    "resnet152": [3, 8, 36, 3],
}
VGG_CONVS = {
    "vgg11": [1, 1, 2, 2, 2],
    "vgg13": [2, 2, 2, 2, 2],
    "vgg16": [2, 2, 3, 3, 3],
    "vgg19": [2, 2, 4, 4, 4],
}


def encoder_is(name: str, built: dict[str, Any]) -> None:
    """The encoder is torchvision's ``name``: its block counts, channels and BatchNorm."""
    encoder = built["encoder"]
    stages = list(encoder.stages.values())
    if name.startswith("resnet"):
        bottleneck = name not in ("resnet18", "resnet34")
        channels = [64, 256, 512, 1024, 2048] if bottleneck else [64, 64, 128, 256, 512]
        assert [len(stage) for stage in stages[1:]] == RESNET_BLOCKS[name][: len(stages) - 1]
    else:
        channels = [64, 128, 256, 512, 512]
        convs = [sum(isinstance(m, nn.Conv2d) for m in stage) for stage in stages]
        assert convs == VGG_CONVS[name.removesuffix("_bn")][: len(stages)]
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
        assert has_bn == name.endswith("_bn")
    assert encoder.out_channels == channels[: len(stages)]


def timm_encoder_is(built: dict[str, Any]) -> None:
    """The encoder is timm's ResNet-18-D, cut at its feature maps
    (tests/models/test_timm_encoders.py)."""
    encoder = built["encoder"]
    assert encoder.name == "timm/resnet18d"
    assert encoder.stage_names == [f"stage{i + 1}" for i in range(encoder.depth)]
    assert encoder.out_channels == [64, 64, 128, 256, 512][: encoder.depth]


def vit_encoder_is(built: dict[str, Any]) -> None:
    """The encoder is timm's DINOv2 ViT-S/14 with registers on 224 px images, one token per
    2 x 2 pixels, cut as the experiment's layout says (its stem_pool=false ignored)
    (tests/models/test_vit_encoders.py)."""
    encoder = built["encoder"]
    assert encoder.name == "timm/vit_small_patch14_reg4_dinov2"
    assert encoder.stage_names == [f"stage{i + 1}" for i in range(encoder.depth)]
    assert encoder.out_channels == [384] * encoder.depth
    assert (encoder.input_scale, encoder.reduction, encoder.stem_pool) == (7, 2, True)


def is_the_rae_experiment(phases: int) -> Callable[[dict[str, Any]], None]:
    """DINOv2's whole representation as the latent (384 x 16 x 16 per 32 px image), frozen
    (finetune=frozen) or fine-tuned after two frozen epochs."""

    def check(built: dict[str, Any]) -> None:
        experiment_is(CIFAR10DataModule, (384, 16, 16), shared=False)(built)
        encoder, finetune = built["encoder"], built["cfg"].finetune
        assert (encoder.name, encoder.depth) == ("timm/vit_small_patch14_reg4_dinov2", 5)
        assert finetune.max_frozen_epochs == (None if phases == 1 else 2)

    return check


def has_module(kind: type, section: str) -> Callable[[dict[str, Any]], None]:
    def check(built: dict[str, Any]) -> None:
        assert any(isinstance(m, kind) for m in built[section].modules())

    return check


def datamodule_is(kind: type, shape: tuple[int, int, int]) -> Callable[[dict[str, Any]], None]:
    def check(built: dict[str, Any]) -> None:
        assert type(built["datamodule"]) is kind and built["datamodule"].image_shape == shape

    return check


def optimizer_is(kind: type, **settings: Any) -> Callable[[dict[str, Any]], None]:
    def check(built: dict[str, Any]) -> None:
        optimizer = built["optimizer"]
        assert type(optimizer) is kind
        assert {k: optimizer.defaults[k] for k in settings} == settings

    return check


def experiment_is(
    data: type, latent: tuple[int, int, int], shared: bool = True
) -> Callable[[dict[str, Any]], None]:
    """An experiment's data and latent layout (channels x height x width per image); with
    ``shared``, the model of experiment/_layout.yaml: the encoder cut after its third stage
    without its first max-pool (layout=nopool_depth3), the decoder of the quality sweep
    (residual blocks, 2x upsampling steps) and the weights' average (callbacks=ema)."""

    def check(built: dict[str, Any]) -> None:
        assert type(built["datamodule"]) is data
        _, height, width = built["datamodule_shape"]
        assert built["model"].latent_shape(height, width) == latent
        has_residual = any(isinstance(m, ResidualBlock) for m in built["model"].modules())
        assert has_residual is shared
        assert built["model"].decoder.progressive is shared
        averages = [c for c in built["trainer"].callbacks if isinstance(c, EMAWeights)]
        assert len(averages) == (1 if shared else 0)
        if shared:
            assert built["hydra"].runtime.choices.layout == "nopool_depth3"
            encoder = built["encoder"]
            assert (encoder.depth, encoder.stem_pool, encoder.reduction) == (3, False, 4)

    return check


def is_the_default_experiment(built: dict[str, Any]) -> None:
    """The default: the model the experiments share on CIFAR-10, in batches of 32 (the
    layout, the average and the batch size of the two-seed ranking in docs/results.md)."""
    experiment_is(CIFAR10DataModule, (4, 8, 8))(built)
    assert built["encoder"].name == "resnet18" and built["datamodule"].batch_size == 32
    assert built["cfg"].callbacks.ema.decay == 0.99


def is_the_gpu_experiment(built: dict[str, Any]) -> None:
    """The default experiment in the precision that fits the device, batch 256, compiled
    (compiling is switched off by the test itself, which runs on a CPU)."""
    experiment_is(CIFAR10DataModule, (4, 8, 8))(built)
    cfg = built["cfg"]
    assert compose_job("train", "experiment=cifar10_gpu").trainer.precision == "auto"
    assert (cfg.trainer.precision, cfg.trainer.benchmark) == (auto_precision("cpu")[0], True)
    assert built["datamodule"].batch_size == 256 and cfg.data.on_device == "auto"
    assert compose_job("train", "experiment=cifar10_gpu").model.compile is True


def is_the_adaptation_recipe(built: dict[str, Any]) -> None:
    """The default experiment's model, started from a run's weights (init_from, required)
    and trained with the adaptation recipe: every weight learning from the first step, as
    the ranking across splits chose (docs/results.md)."""
    experiment_is(CIFAR10DataModule, (4, 8, 8))(built)
    cfg = built["cfg"]
    assert cfg.requires_init_from is True
    assert (cfg.finetune.max_frozen_epochs, cfg.finetune.factor) == (0, 1.0)
    assert cfg.finetune.warmup_epochs == 1.0, "the encoder eases in; the decoder learns at once"
    assert cfg.finetune.unfrozen_bn == "train" and built["model"].lr == 1e-3


def is_a_quality_recipe(latent: tuple[int, int, int]) -> Callable[[dict[str, Any]], None]:
    """A reconstruction-quality recipe (experiment=quality_<floats>): its latent grid,
    trained from scratch with every weight learning (finetune=full) on one cosine, with the
    shared decoder and average, and no layout (its cut is its own)."""

    def check(built: dict[str, Any]) -> None:
        assert type(built["datamodule"]) is CIFAR10DataModule
        _, height, width = built["datamodule_shape"]
        assert built["model"].latent_shape(height, width) == latent
        assert any(isinstance(m, ResidualBlock) for m in built["model"].modules())
        assert built["model"].decoder.progressive
        assert sum(isinstance(c, EMAWeights) for c in built["trainer"].callbacks) == 1
        assert built["hydra"].runtime.choices.get("layout") is None
        assert built["hydra"].runtime.choices.finetune == "full"
        assert built["model"].scheduler_name == "cosine"
        assert built["trainer"].precision == auto_precision("cpu")[0]  # precision auto

    return check


def latent_is(latent: tuple[int, int, int]) -> Callable[[dict[str, Any]], None]:
    """The latent layout (channels x height x width per image) of the default experiment's
    32 px images."""

    def check(built: dict[str, Any]) -> None:
        _, height, width = built["datamodule_shape"]
        assert built["model"].latent_shape(height, width) == latent

    return check


def uses_ddp_with_unused_parameters(built: dict[str, Any]) -> None:
    strategy = built["trainer"].strategy
    assert isinstance(strategy, DDPStrategy) and ddp_finds_unused_parameters(strategy)
    assert built["trainer"].num_devices == 2


def logs_with(kind: type | None) -> Callable[[dict[str, Any]], None]:
    def check(built: dict[str, Any]) -> None:
        loggers = built["trainer"].loggers
        assert [type(logger) for logger in loggers] == ([kind] if kind else [])
        monitors = [c for c in built["trainer"].callbacks if isinstance(c, LearningRateMonitor)]
        assert len(monitors) == (1 if kind else 0)  # the rate monitor needs a logger

    return check


def checkpoints_and_grids(built: dict[str, Any]) -> None:
    kinds = [type(c) for c in built["trainer"].callbacks]
    checkpoints = [c for c in built["trainer"].callbacks if isinstance(c, ModelCheckpoint)]
    assert sorted((c.monitor or "", c.filename) for c in checkpoints) == [
        ("", "last"),
        ("val/loss", "best-epoch{epoch:03d}"),
    ]
    assert ReconstructionImages in kinds and LearningRateMonitor in kinds


def averages_the_weights(built: dict[str, Any]) -> None:
    checkpoints_and_grids(built)  # the default callbacks, and the average
    averages = [c for c in built["trainer"].callbacks if isinstance(c, EMAWeights)]
    assert len(averages) == 1


def runs_one_batch(built: dict[str, Any]) -> None:
    trainer = built["trainer"]
    assert trainer.fast_dev_run == 1 and trainer.limit_train_batches == 1
    assert trainer.limit_val_batches == 1 and trainer.limit_test_batches == 1


def trainer_is(accelerator: type, precision: str) -> Callable[[dict[str, Any]], None]:
    def check(built: dict[str, Any]) -> None:
        trainer = built["trainer"]
        assert isinstance(trainer.accelerator, accelerator)
        assert trainer.precision == precision and trainer.num_devices == 1

    return check


def optuna_sweeps(built: dict[str, Any]) -> None:
    sweeper = built["hydra"].sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert built["cfg"].optimized_metric == "val/psnr"


def trains_on_mse(built: dict[str, Any]) -> None:
    model = built["model"]
    assert isinstance(model, Autoencoder) and model.loss.weights == {"mse": 1.0}
    assert model.loss.perceptual is None  # its network is built only when the term is used


def downloads_into_data(built: dict[str, Any]) -> None:
    assert built["datamodule"].root == Path("data")  # torchvision sets: data.root


# What each option does, checked on the objects it builds. The strategies of ``finetune``
# act during training: real fits check them in tests/test_finetuning.py.
EFFECTS: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("data", "cifar10"): datamodule_is(CIFAR10DataModule, (3, 32, 32)),
    ("data", "cifar100"): datamodule_is(CIFAR100DataModule, (3, 32, 32)),
    ("data", "stl10"): datamodule_is(STL10DataModule, (3, 96, 96)),
    ("data", "folder"): datamodule_is(FolderDataModule, (3, 32, 32)),
    ("data", "arrays"): datamodule_is(ArraysDataModule, (3, 32, 32)),
    ("data", "synthetic"): datamodule_is(SyntheticDataModule, (3, 32, 32)),
    **{("encoder", name): functools.partial(encoder_is, name) for name in ENCODERS},
    ("encoder", "timm"): timm_encoder_is,
    ("encoder", "vit"): vit_encoder_is,
    ("decoder", "resize_conv"): has_module(nn.Upsample, "model"),
    ("decoder", "pixel_shuffle"): has_module(nn.PixelShuffle, "model"),
    ("decoder", "transposed"): has_module(nn.ConvTranspose2d, "model"),
    ("model", "default"): trains_on_mse,
    ("optimizer", "adamw"): optimizer_is(torch.optim.AdamW, weight_decay=1e-4, fused=True),
    ("optimizer", "adam"): optimizer_is(torch.optim.Adam, weight_decay=0.0, fused=True),
    ("optimizer", "sgd"): optimizer_is(torch.optim.SGD, momentum=0.9, nesterov=True),
    ("trainer", "default"): trainer_is(CPUAccelerator, "32-true"),
    ("trainer", "cpu"): trainer_is(CPUAccelerator, "32-true"),
    # precision auto, resolved for the accelerator the test sets: the CPU
    ("trainer", "gpu"): trainer_is(CPUAccelerator, auto_precision("cpu")[0]),
    ("trainer", "ddp"): uses_ddp_with_unused_parameters,
    ("callbacks", "default"): checkpoints_and_grids,
    ("callbacks", "ema"): averages_the_weights,
    ("logger", "wandb"): logs_with(WandbLogger),
    ("logger", "csv"): logs_with(ResumableCSVLogger),
    ("logger", "none"): logs_with(None),
    ("debug", "fast"): runs_one_batch,
    ("paths", "default"): downloads_into_data,
    ("experiment", "cifar10_resnet18"): is_the_default_experiment,
    ("experiment", "cifar10_resnet50"): experiment_is(CIFAR10DataModule, (4, 8, 8)),
    ("experiment", "cifar10_vgg16_bn"): experiment_is(CIFAR10DataModule, (4, 8, 8)),
    ("experiment", "compare_finetuning"): experiment_is(CIFAR10DataModule, (4, 8, 8)),
    ("experiment", "stl10_resnet50"): experiment_is(STL10DataModule, (4, 24, 24)),
    ("experiment", "cifar10_lowdata"): experiment_is(ArraysDataModule, (4, 8, 8)),
    ("experiment", "cifar10_timm"): experiment_is(CIFAR10DataModule, (4, 8, 8)),
    ("experiment", "rae_dinov2"): is_the_rae_experiment(phases=1),
    ("experiment", "rae_dinov2_two_phase"): is_the_rae_experiment(phases=2),
    ("experiment", "cifar10_gpu"): is_the_gpu_experiment,
    ("experiment", "adapt"): is_the_adaptation_recipe,
    ("experiment", "quality_64"): is_a_quality_recipe((4, 4, 4)),
    ("experiment", "quality_128"): is_a_quality_recipe((2, 8, 8)),
    ("experiment", "quality_256"): is_a_quality_recipe((4, 8, 8)),
    ("experiment", "quality_512"): is_a_quality_recipe((2, 16, 16)),
    ("experiment", "folder"): experiment_is(FolderDataModule, (4, 32, 32)),
    ("experiment", "smoke"): experiment_is(SyntheticDataModule, (16, 4, 4), shared=False),
    ("layout", "depth2"): latent_is((4, 8, 8)),
    ("layout", "depth3"): latent_is((16, 4, 4)),
    ("layout", "depth4"): latent_is((64, 2, 2)),
    ("layout", "nopool_depth3"): latent_is((4, 8, 8)),
    ("experiment", "quickstart"): experiment_is(SyntheticDataModule, (2, 16, 16), shared=False),
    ("hparams_search", "optuna"): optuna_sweeps,
}


def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, pixels in enumerate(make_images(12)):
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return folder


def test_every_option_has_its_effect_checked() -> None:
    untested = {(g, o) for g, o in OPTIONS if g != "finetune"} - set(EFFECTS)
    assert not untested, f"add the effect of {sorted(untested)} to EFFECTS"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_validates_and_instantiates(group, option, arrays_dir, tmp_path) -> None:
    cfg = compose_job("train", f"{group}={option}")
    if cfg.encoder.name.startswith("timm/"):
        pytest.importorskip("timm")  # the timm extra
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.encoder.weights = None  # no downloads
        cfg.trainer.accelerator = "cpu"
        # compiling takes a minute on a CPU (tests/models/test_autoencoder.py)
        cfg.model.compile = False
        if OmegaConf.is_missing(cfg.data, "path"):
            is_folder = cfg.data._target_.endswith("FolderDataModule")
            cfg.data.path = str(image_folder(tmp_path) if is_folder else arrays_dir)
    resolve_precision(cfg)  # as every job does before validating (autoencoder.cli.run_job)
    validate_config(cfg)
    datamodule = instantiate(cfg.data)
    encoder = instantiate(cfg.encoder)
    model = build_model(cfg, encoder)
    size = cfg.data.get("image_size") or (96 if "STL10" in cfg.data._target_ else 32)
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert model.eval()(images).shape == images.shape
    finetuning = instantiate(cfg.finetune)
    callbacks = [*instantiate_all(cfg.callbacks), finetuning]
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    built = {
        "cfg": cfg,
        "hydra": compose_job("train", f"{group}={option}", hydra=True).hydra,
        "datamodule": datamodule,
        "datamodule_shape": (3, size, size),
        "encoder": encoder,
        "model": model,
        "optimizer": instantiate(cfg.optimizer)(model.parameters(), lr=1e-3),
        "trainer": trainer,
    }
    if group != "finetune":
        EFFECTS[group, option](built)


@pytest.mark.parametrize("config_name", ["pretrain", "evaluate", "encode"])
def test_other_entry_points_compose_and_validate(config_name, tmp_path) -> None:
    validate_config(compose_job(config_name, output_dir=tmp_path))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("encodr=resnet18", "Could not override 'encodr'"),
        ("encoder=resnet19", "Could not find 'encoder/resnet19'"),
        ("finetune.factr=2", "Key 'factr' is not in struct"),
    ],
)
def test_hydra_rejects_unknown_groups_options_and_keys(override, message) -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_job("train", override)
    text = f"{error.value} {error.value.__cause__ or ''}"
    assert message in text
    if override.startswith("encoder="):
        assert "resnet18" in text and "vgg16_bn" in text  # the valid options are listed


@pytest.mark.parametrize(
    ("overrides", "lines"),
    [
        (["+finetune.factr=2"], ["finetune.factr: unknown key for", "did you mean 'factor'?"]),
        (["finetune.factor=abc"], ["finetune.factor='abc': expected float, got str"]),
        (["trainer.max_epochs=ten"], ["trainer.max_epochs='ten': expected int | None, got str"]),
        (["data.batch_size=1.5"], ["data.batch_size=1.5: expected int, got float"]),
        (["encoder.weights=3"], ["encoder.weights=3: expected str | None, got int"]),
        (["+model.latent_chanels=8"], ["did you mean 'latent_channels'?"]),
        (["data=folder"], ["data.path is required: add data.path=VALUE"]),
        (
            ["finetune.lr_range=[1,x]", "callbacks.lr_monitor.logging_interval=hour"],
            [
                "finetune.lr_range=[1, 'x']: expected tuple[float, float] | None, got list",
                "callbacks.lr_monitor.logging_interval='hour': expected one of 'step', 'epoch'",
            ],
        ),
    ],
)
def test_validation_names_every_bad_key_and_type(overrides, lines) -> None:
    cfg = compose_job("train", "experiment=smoke", *overrides)
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    text = str(error.value)
    assert text.startswith("invalid configuration:")
    for line in lines:
        assert line in text


def test_all_problems_are_reported_at_once() -> None:
    cfg = compose_job("train", "experiment=smoke", "finetune.factor=abc", "+finetune.factr=2")
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert "finetune.factor=" in str(error.value) and "finetune.factr" in str(error.value)


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (1, float, True),
        (True, int, False),
        ([0.9, 0.999], tuple[float, float], True),
        ([0.9], tuple[float, float], False),
        ("a", int | None, False),
        (None, int | None, True),
        ({"mse": 1.0}, dict[str, float], True),
        ("x.png", Path, True),
    ],
)
def test_type_matching_of_yaml_values(value, annotation, expected) -> None:
    assert matches(value, annotation) is expected


def test_typo_on_the_command_line_fails_before_anything_runs(tmp_path) -> None:
    # the default experiment would first try to download CIFAR-10: the typo is reported first
    result = run_script("train.py", "+finetune.factr=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == "error: invalid configuration:"
    assert "did you mean 'factor'?" in errors[1]
    assert "CIFAR-10" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_a_renamed_key_on_the_command_line_names_the_new_one(tmp_path) -> None:
    result = run_script(
        "train.py", "experiment=smoke", "finetune.train_bn=true", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: finetune.train_bn was renamed to finetune.frozen_bn: "
        "write finetune.frozen_bn=train."
    ]
    assert not any(tmp_path.iterdir())  # stopped before Hydra made the run's folder


@pytest.mark.parametrize(
    ("override", "error"),
    [
        (
            "+finetune.bn_policy=train",
            "finetune.bn_policy was renamed to finetune.unfrozen_bn: "
            "write finetune.unfrozen_bn=train.",
        ),
        (
            "finetune.schedule=stlr,constant",
            "finetune.schedule was renamed to "
            "finetune.encoder_schedule: write finetune.encoder_schedule=stlr,constant.",
        ),
        (
            "finetune.train_bn=false",
            "finetune.train_bn was renamed to finetune.frozen_bn: write finetune.frozen_bn=eval.",
        ),
        ("~finetune.train_bn", "finetune.train_bn was renamed to finetune.frozen_bn."),
        ("finetune.factor=2", None),
    ],
)
def test_renamed_keys_are_reported_with_the_override_to_write(override, error) -> None:
    assert renamed_key_errors([override]) == ([error] if error else [])


FAKE_SBATCH = """#!/bin/sh
# Records the script it is asked to submit, as SLURM's sbatch would receive it.
cp "$1" "$SBATCH_RECORD"
echo "Submitted batch job 4242"
"""


def test_slurm_launcher_submits_nodes_tasks_and_gpus_from_the_trainer(tmp_path) -> None:
    """scripts/train.py -m with hydra/launcher=slurm writes an sbatch script and submits it;
    a fake sbatch on PATH records that script (no cluster here), and the launcher, which
    would wait for the job, is stopped once it was submitted."""
    bin_dir, record = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that it exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    command = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "-m",
        "experiment=smoke",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "SBATCH_RECORD": str(record),
    }
    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not record.is_file() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        launcher.kill()
        _, stderr = launcher.communicate()
    assert record.is_file(), stderr.decode()[-3000:]
    sbatch = record.read_text()
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu"):
        assert f"#SBATCH {line}" in sbatch
    assert "srun" in sbatch  # each of the 8 tasks runs one rank


def test_output_folders_of_runs_and_sweeps_started_together_differ() -> None:
    first, second = (compose_job("train", hydra=True).hydra for _ in range(2))
    assert first.run.dir != second.run.dir and first.sweep.dir != second.sweep.dir
    # one folder per job of a sweep
    assert OmegaConf.to_container(first.sweep, resolve=False)["subdir"] == "${hydra.job.num}"
