"""A training run's model and data: built from its composed config, or loaded from its
checkpoint, for the jobs that use a trained run (evaluate, encode, notebooks).

Checkpoints are read weights-only (:mod:`autoencoder.checkpointing`), which refuses to
unpickle anything but tensors and plain values. The run's ``.hydra/config.yaml`` is another
matter: it names the classes that are built (``_target_``), so load run folders only from
sources you trust, or pass a config of your own with ``model_config=PATH``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, Dataset

from autoencoder.checkpointing import read_checkpoint
from autoencoder.config import instantiate
from autoencoder.data import ImageDataModule
from autoencoder.errors import ConfigError
from autoencoder.inputs import existing_file, pick_device
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.run_folder import RunFolder

RUN_CONFIG = RunFolder.config_file
_MODEL_SECTIONS = ("encoder", "decoder", "model", "optimizer", "data")


def checkpoint_file(ckpt_path: str | Path | None) -> Path:
    """The checkpoint to load; a :class:`ConfigError` when it is not given, missing or a
    folder."""
    if not ckpt_path:
        raise ConfigError(
            "ckpt_path is required: ckpt_path=outputs/train/runs/<run>/checkpoints/"
            "best-epochNNN.ckpt (or last.ckpt)."
        )
    return existing_file("ckpt_path", ckpt_path, "Pass a training run's .ckpt.")


def load_run_config(ckpt_path: Path, model_config: str | None = None) -> DictConfig:
    """The composed config of the run that wrote ``ckpt_path`` (or ``model_config``)."""
    if model_config:
        path = existing_file(
            "model_config", model_config, f"Pass the {RUN_CONFIG} of the run that wrote ckpt_path."
        )
    else:
        path = RunFolder.of_checkpoint(ckpt_path).config_file
    if not path.is_file():
        raise ConfigError(
            f"no training config at {path}: the checkpoint is rebuilt from the config of the "
            f"run that wrote it (<run>/{RUN_CONFIG}, next to <run>/checkpoints/). Pass it with "
            f"model_config=PATH (the run's {RUN_CONFIG})."
        )
    cfg = OmegaConf.load(path)
    missing = [s for s in _MODEL_SECTIONS if not isinstance(cfg, DictConfig) or s not in cfg]
    if missing:
        raise ConfigError(
            f"{path} is not a training run's config (no {', '.join(missing)}). Pass "
            f"model_config=PATH to the {RUN_CONFIG} of the run that wrote the checkpoint."
        )
    return cfg


def build_model(cfg: DictConfig, encoder: Encoder | None = None) -> Autoencoder:
    """The autoencoder of a training config, as ``autoencoder.train.train`` builds it.

    ``encoder`` defaults to ``cfg.encoder`` instantiated (which may download weights).
    """
    return instantiate(
        cfg.model,
        encoder=encoder if encoder is not None else instantiate(cfg.encoder),
        decoder=instantiate(cfg.decoder),
        optimizer=instantiate(cfg.optimizer),
    )


def start_from_checkpoint(model: Autoencoder, path: str | Path) -> list[str]:
    """``init_from=PATH``: start ``model`` from the weights of another run's checkpoint.

    Weights only: the optimiser, the schedule, the epoch count and the fine-tuning phase
    start anew (``ckpt_path`` resumes all of them). The checkpoint's ``state_dict`` is read:
    with EMA, the average, which is what that run validated and tested. The model may have
    grown (:meth:`Autoencoder.load_grown`); the names of its weights that start from their
    initialisation are returned.
    """
    state_dict = read_checkpoint(path, option="init_from")["state_dict"]
    return model.load_grown(state_dict, source=f"init_from={path}")


def load_autoencoder(ckpt_path: Path, run_cfg: DictConfig) -> Autoencoder:
    """Rebuild the run's autoencoder and load the checkpoint's weights, in eval mode.

    The encoder is built with ``weights=None``: the checkpoint holds its weights, so nothing
    is downloaded or read from the run's ``encoder.weights``.
    """
    cfg = copy.deepcopy(run_cfg)
    with open_dict(cfg):
        cfg.encoder.weights = None
    model = build_model(cfg)
    checkpoint = read_checkpoint(ckpt_path)
    problem = model.checkpoint_mismatch(checkpoint, optimizer=False)
    if problem:
        raise ConfigError(
            f"{ckpt_path} {problem}. Pass model_config=PATH to the .hydra/config.yaml of the "
            "run that wrote it."
        )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


# ------------------------------------------------------------------ the run's data
def data_config(override: DictConfig | None, run_cfg: DictConfig) -> DictConfig:
    """The run's ``data`` section, unless the job's ``data`` section (``override``) gives one.

    ``data=NAME`` replaces it; ``+data.KEY=VALUE`` alone changes one setting of the run's.
    The result stays inside a copy of the run's config, so interpolations such as
    ``${paths.data_dir}`` keep resolving.
    """
    if override is not None and "_target_" in override:
        return override
    merged = copy.deepcopy(run_cfg)
    if override is not None:
        with open_dict(merged):
            merged.data = OmegaConf.merge(merged.data, override)
    return merged.data


def prepare_datamodule(data_cfg: DictConfig) -> ImageDataModule:
    """Instantiate the datamodule, download what it needs and build its splits."""
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def sequential_loader(dataset: Dataset, datamodule: ImageDataModule) -> DataLoader:
    """Batches of ``dataset`` in order (the datamodule's train loader shuffles)."""
    return DataLoader(
        dataset,
        batch_size=datamodule.batch_size,
        shuffle=False,
        num_workers=datamodule.num_workers,
        pin_memory=datamodule.pin_memory,
    )


# ------------------------------------------------------------------ a trained run, opened
@dataclass(frozen=True)
class LoadedRun:
    """What a job that uses a trained run works with (evaluate, encode, notebooks)."""

    ckpt_path: Path
    config: DictConfig  # the training run's composed config
    model: Autoencoder  # in eval mode, on ``device``
    datamodule: ImageDataModule  # set up, with every image as it is (no augmentation)
    device: torch.device


def load_run(job: Mapping[str, Any]) -> LoadedRun:
    """Open the run whose checkpoint a job names: its model with the checkpoint's weights,
    and its data with the splits built.

    ``job`` holds the keys of ``conf/evaluate.yaml`` and ``conf/encode.yaml`` that say
    which run and how: ``ckpt_path``; optionally ``model_config`` (the run's config, when
    it is not beside the checkpoint), ``device`` (default: CUDA when available) and
    ``data`` (see :func:`data_config`). Training augmentation is off, so every image is
    read as it is; a :class:`ConfigError` says when the images do not fit the encoder.
    """
    ckpt_path = checkpoint_file(job.get("ckpt_path"))
    run_cfg = load_run_config(ckpt_path, job.get("model_config"))
    device = pick_device("device", job.get("device"))
    model = load_autoencoder(ckpt_path, run_cfg).to(device)
    data = data_config(job.get("data"), run_cfg)
    with open_dict(data):
        data.random_crop = False
        data.horizontal_flip = False
    datamodule = prepare_datamodule(data)
    model.latent_shape(*datamodule.image_shape[-2:])
    return LoadedRun(ckpt_path, run_cfg, model, datamodule, device)
