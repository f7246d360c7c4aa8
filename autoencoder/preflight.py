"""Every check a job's composed config and the file system decide, made before any work:
before a dataset is opened, a weight downloaded or a trainer built.

:func:`check_job` runs in :func:`autoencoder.cli.run_job` after the config validation (keys
and types against the targets' signatures) and reports every problem it finds at once:

- the keys a job requires and the choices it takes (``init_from`` for a recipe that
  requires it, ``score_start``, ``split``);
- every path a key names (checkpoints, weights files, data folders), through
  :mod:`autoencoder.inputs`;
- the devices asked for (``device=cuda`` and ``trainer.accelerator=gpu`` on a machine
  without one);
- a command-line choice of a config group whose values the experiment sets back
  (``experiment=quality_256 layout=depth2``): refused instead of silently ignored;
- for training, the objects built from the config with no weights read (the model, its
  encoder and the fine-tuning callback), so that their constructors' checks
  (``model.lr > 0``, the encoder depth, ...) run first too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from autoencoder.checkpointing import CHECKPOINT_FIX
from autoencoder.config import instantiate, instantiate_all
from autoencoder.errors import AutoencoderError, ConfigError
from autoencoder.field_metrics import FIELD_METRICS, LPIPS_WEIGHTS
from autoencoder.group_choices import check_group_choices
from autoencoder.inputs import existing_file, existing_folder, torch_device
from autoencoder.precision import resolve_precision
from autoencoder.runs import RUN_CONFIG, build_model, checkpoint_file
from autoencoder.validation import validate_config

ENCODER_WEIGHTS_FIX = (
    "Use encoder.weights=imagenet, encoder.weights=null, the path to a state dict saved with "
    "torch.save, or a training run's checkpoint (its encoder is taken)."
)
ARRAYS_FIX = "data=arrays needs data.path=<DIR> containing train.npz and test.npz."
SCORE_START_CHOICES = ("auto", True, False)


def check_config(cfg: DictConfig, devices: bool = True) -> None:
    """Everything a job checks before it starts, in order: the command line's group choices
    against the composed config, ``trainer.precision=auto`` resolved for this machine, the
    keys and types (:func:`~autoencoder.validation.validate_config`), then
    :func:`check_job`. ``cfg`` may hold its ``hydra`` section (a sweep's jobs), which the
    key and type validation leaves out. ``devices=False`` leaves the devices unchecked, for
    jobs that run on another machine (a cluster's launcher)."""
    check_group_choices(cfg)
    resolve_precision(cfg)
    validate_config(_without_hydra(cfg) if "hydra" in cfg else cfg)
    check_job(cfg, devices)


@contextmanager
def composed_as_job(cfg: DictConfig) -> Iterator[DictConfig]:
    """``cfg`` (composed with its ``hydra`` section, outside a running job) as the job it
    would be: its folder set (to ``hydra.run.dir``; nothing is written there) and Hydra's
    resolvers answering from it, so that ``${hydra:...}`` and the paths that follow it
    resolve; restored after."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(cfg.hydra.run.dir)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = previous


def check_job(cfg: DictConfig, devices: bool = True) -> None:
    """Raise one :class:`ConfigError` listing every problem of the job ``cfg``
    (``cfg.task_name``: train, pretrain, evaluate or encode) found without doing any work;
    ``devices=False`` leaves out the checks of the devices it asks for."""
    checks = JOB_CHECKS.get(str(cfg.get("task_name")), ())
    problems = []
    for check in checks:
        if not devices and check in DEVICE_CHECKS:
            continue
        try:
            check(cfg)
        except AutoencoderError as error:
            problems.append(str(error))
    if problems:
        raise ConfigError("\n".join(problems))


# ------------------------------------------------------------------------- training
def _required_start(cfg: DictConfig) -> None:
    if cfg.get("requires_init_from") and not cfg.get("init_from") and not cfg.get("ckpt_path"):
        raise ConfigError(
            "this recipe adapts a pretrained autoencoder (requires_init_from=true, e.g. "
            "experiment=adapt): set init_from=<a run's checkpoint>, e.g. "
            "init_from=outputs/train/runs/<run>/checkpoints/best-epochNNN.ckpt. To start from "
            "a run's encoder alone, use encoder.weights=<that checkpoint> with another "
            "experiment."
        )


def _score_start(cfg: DictConfig) -> None:
    setting = cfg.get("score_start", "auto")
    if setting not in SCORE_START_CHOICES or not isinstance(setting, (str, bool)):
        raise ConfigError(f"score_start must be auto, true or false; got {setting!r}.")


def _reestimate_bn(cfg: DictConfig) -> None:
    setting = cfg.get("reestimate_bn", False)
    if not isinstance(setting, bool):
        raise ConfigError(f"reestimate_bn must be true or false; got {setting!r}.")


def _training_paths(cfg: DictConfig) -> None:
    """The checkpoint a run resumes or starts from, or else the encoder's weights file."""
    if cfg.get("ckpt_path"):
        existing_file("ckpt_path", cfg.ckpt_path, CHECKPOINT_FIX)
    elif cfg.get("init_from"):
        existing_file("init_from", cfg.init_from, CHECKPOINT_FIX)
    elif "encoder" in cfg and cfg.encoder.get("weights") not in (None, "imagenet"):
        existing_file("encoder.weights", cfg.encoder.weights, ENCODER_WEIGHTS_FIX)


def _resumed_checkpoint(cfg: DictConfig) -> None:
    """The checkpoint a pretraining run resumes (it reads no encoder weights)."""
    if cfg.get("ckpt_path"):
        existing_file("ckpt_path", cfg.ckpt_path, CHECKPOINT_FIX)


def _data_paths(cfg: DictConfig) -> None:
    """The folder of a data section that reads local files (``data=arrays``, ``folder``)."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or "_target_" not in data or not data.get("path"):
        return
    target = str(data._target_)
    if target.endswith("ArraysDataModule"):
        existing_folder("data.path", data.path, ARRAYS_FIX, ("train.npz", "test.npz"))
    elif target.endswith("FolderDataModule"):
        existing_folder("data.path", data.path, "Point data.path at a folder of images.")


def _accelerator(cfg: DictConfig) -> None:
    """A trainer asked for a GPU on a machine without one (Lightning would raise deep in
    its constructor, or an experiment that pins the CPU would have trained there)."""
    trainer = cfg.get("trainer")
    if not isinstance(trainer, DictConfig):
        return
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"trainer.accelerator={accelerator}: this machine has no CUDA device "
                "(torch.cuda.is_available() is false). Drop trainer=gpu, or set "
                "trainer.accelerator=auto (the GPU where there is one) or cpu."
            )
        devices = trainer.get("devices", 1)
        if isinstance(devices, int) and devices > count:
            raise ConfigError(
                f"trainer.devices={devices}: this machine has {count} CUDA device(s); set "
                f"trainer.devices={count} (or -1: all of them)."
            )
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps: MPS is not available here; use auto or cpu.")


def _built_without_weights(cfg: DictConfig) -> None:
    """Build what the job builds, with no weights or data read: the model (its encoder with
    no weights), the fine-tuning callback, the other callbacks and the datamodule, so that
    their constructors' checks run before the data and the weights are touched; and the
    metric a sweeper reads must be one the model logs."""
    unweighted = copy.deepcopy(cfg)
    with open_dict(unweighted):
        unweighted.encoder.weights = None
    model = build_model(unweighted)
    instantiate(cfg.finetune)
    _built_data_and_callbacks(cfg)
    logged = ["val/loss", *model.val_metrics.keys()]
    if cfg.get("optimized_metric") not in logged:
        raise ConfigError(
            f"optimized_metric={cfg.get('optimized_metric')!r} is not a metric the model logs; "
            f"use one of {', '.join(logged)}."
        )


def _built_data_and_callbacks(cfg: DictConfig) -> None:
    """The datamodule and the callbacks built (their constructors check their values); the
    datamodule opens nothing before its setup."""
    instantiate(cfg.data)
    instantiate_all(cfg.get("callbacks"))


def _seed(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}; e.g. seed=42.")


def _export_path(cfg: DictConfig) -> None:
    if cfg.get("export_encoder") and Path(cfg.export_encoder).expanduser().is_dir():
        raise ConfigError(
            f"export_encoder={cfg.export_encoder!r} is a folder; pass the file to write, e.g. "
            f"export_encoder={Path(cfg.export_encoder) / 'encoder.pt'}."
        )


# ---------------------------------------------------------------- evaluate and encode
def _trained_run_paths(cfg: DictConfig) -> None:
    checkpoint_file(cfg.get("ckpt_path"))
    if cfg.get("model_config"):
        existing_file(
            "model_config", cfg.model_config, f"Pass the {RUN_CONFIG} of the run that wrote it."
        )
    if cfg.get("classifier_weights"):
        existing_file(
            "classifier_weights",
            cfg.classifier_weights,
            "Pass the encoder_weights.pt written by scripts/pretrain_encoder.py.",
        )


def _field_metrics(cfg: DictConfig) -> None:
    """evaluate's ``metrics=[lpips,fid]``: known names, LPIPS' network, FID's weights file."""
    names = list(cfg.get("metrics") or [])
    unknown = [name for name in names if name not in FIELD_METRICS]
    if unknown:
        raise ConfigError(
            f"metrics={names}: unknown {', '.join(map(str, unknown))}; use any of "
            f"{', '.join(FIELD_METRICS)}, e.g. metrics=[lpips,fid]."
        )
    if "lpips" in names and cfg.lpips.net not in LPIPS_WEIGHTS:
        raise ConfigError(f"lpips.net={cfg.lpips.net!r}: use alex, vgg or squeeze.")
    if "fid" in names and cfg.fid.get("weights_path"):
        existing_file(
            "fid.weights_path",
            cfg.fid.weights_path,
            "Pass torch-fidelity's pt_inception-2015-12-05-6726825d.pth, or null to download it.",
        )


def _device(cfg: DictConfig) -> None:
    if cfg.get("device"):
        torch_device("device", str(cfg.device))


# The splits scripts/encode.py writes (split=NAME), or all of them (split=all).
SPLITS = ("train", "val", "test")


def encoded_splits(split: str) -> tuple[str, ...]:
    """The splits ``split=`` names for ``scripts/encode.py``."""
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is invalid; use one of {', '.join(SPLITS)} or all.")
    return (split,)


def _split(cfg: DictConfig) -> None:
    encoded_splits(str(cfg.get("split")))


JOB_CHECKS: dict[str, tuple[Callable[[DictConfig], None], ...]] = {
    "train": (
        _required_start,
        _score_start,
        _reestimate_bn,
        _seed,
        _training_paths,
        _data_paths,
        _accelerator,
        _built_without_weights,
    ),
    "pretrain": (
        _seed,
        _resumed_checkpoint,
        _data_paths,
        _accelerator,
        _built_data_and_callbacks,
    ),
    "evaluate": (_trained_run_paths, _data_paths, _device, _field_metrics),
    "encode": (_trained_run_paths, _data_paths, _device, _split, _export_path),
}


DEVICE_CHECKS = (_accelerator, _device)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    job = copy.deepcopy(cfg)
    with open_dict(job):
        job.pop("hydra", None)
    return job
