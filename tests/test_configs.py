"""Every config option composes, validates and instantiates; typos fail at start, clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import submitit.slurm.slurm as submitit_slurm
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict

from autoencoder.config import instantiate, instantiate_all
from autoencoder.errors import ConfigError
from autoencoder.runs import build_model
from autoencoder.validation import matches, validate_config
from tests.conftest import CONFIG_DIR, run_script

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
    "hparams_search",
)
OPTIONS = [
    (group, path.stem)
    for group in GROUPS
    for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
]


def compose_train(*overrides: str, hydra: bool = False) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()


def test_every_group_is_covered() -> None:
    groups = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()} - {"hydra"}
    assert groups == set(GROUPS)
    assert len(OPTIONS) > 40


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_validates_and_instantiates(group, option, arrays_dir, tmp_path) -> None:
    cfg = compose_train(f"{group}={option}")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.encoder.weights = None  # no downloads
        cfg.trainer.accelerator = "cpu"
        if OmegaConf.is_missing(cfg.data, "path"):
            cfg.data.path = str(arrays_dir)
    validate_config(cfg)
    datamodule = instantiate(cfg.data)
    encoder = instantiate(cfg.encoder)
    model = build_model(cfg, encoder)
    assert datamodule.batch_size > 0
    size = cfg.data.get("image_size") or 32
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert model.eval()(images).shape == images.shape
    finetuning = instantiate(cfg.finetune)
    callbacks = [*instantiate_all(cfg.callbacks), finetuning]
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    assert trainer.fast_dev_run or trainer.max_epochs == cfg.trainer.max_epochs
    if group == "encoder":
        assert encoder.name == option


@pytest.mark.parametrize("config_name", ["pretrain", "evaluate", "encode"])
def test_other_entry_points_compose_and_validate(config_name, tmp_path) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    validate_config(cfg)


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
        compose_train(override)
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
                "finetune.lr_range=[1, 'x']: expected Sequence[float] | None, got list",
                "callbacks.lr_monitor.logging_interval='hour': expected one of 'step', 'epoch'",
            ],
        ),
    ],
)
def test_validation_names_every_bad_key_and_type(overrides, lines) -> None:
    cfg = compose_train("experiment=smoke", *overrides)
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    text = str(error.value)
    assert text.startswith("invalid configuration:")
    for line in lines:
        assert line in text


def test_all_problems_are_reported_at_once() -> None:
    cfg = compose_train("experiment=smoke", "finetune.factor=abc", "+finetune.factr=2")
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


def test_slurm_launcher_maps_nodes_tasks_and_gpus_from_the_trainer(tmp_path) -> None:
    cfg = compose_train(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    # the plugin accepts the config, and submitit turns it into these sbatch lines
    assert instantiate(launcher).params["tasks_per_node"] == 4
    sbatch = submitit_slurm._make_sbatch_string(
        command="python scripts/train.py",
        folder=tmp_path,
        nodes=launcher.nodes,
        ntasks_per_node=launcher.tasks_per_node,
        gpus_per_node=launcher.gpus_per_node,
        cpus_per_task=launcher.cpus_per_task,
        partition=launcher.partition,
        time=launcher.timeout_min,
    )
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu"):
        assert f"#SBATCH {line}" in sbatch


def test_output_folders_of_runs_and_sweeps_started_together_differ() -> None:
    first, second = (compose_train(hydra=True).hydra for _ in range(2))
    assert first.run.dir != second.run.dir and first.sweep.dir != second.sweep.dir
    # one folder per job of a sweep
    assert OmegaConf.to_container(first.sweep, resolve=False)["subdir"] == "${hydra.job.num}"
