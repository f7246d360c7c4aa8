"""Evaluating a trained checkpoint: test metrics, classifier accuracy, reconstruction grids.

A checkpoint is rebuilt from the configuration of the training run that wrote it
(``<run>/.hydra/config.yaml``, found from ``<run>/checkpoints/*.ckpt``), so any encoder,
decoder or bottleneck a run used is evaluated without repeating its settings.

Checkpoints and classifier weights are read weights-only (:mod:`autoencoder.checkpointing`);
the run's ``.hydra/config.yaml`` names the classes that are built, so use run folders only
from sources you trust (or pass ``model_config=PATH``).
"""

from __future__ import annotations

import copy
import csv
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict
from torch.utils.data import Dataset, Subset
from torchmetrics.classification import MulticlassAccuracy

from autoencoder.checkpointing import read_state_dict
from autoencoder.cli import hydra_main
from autoencoder.data import ImageDataModule
from autoencoder.errors import ConfigError
from autoencoder.field_metrics import FieldMetrics
from autoencoder.grids import comparison_grid
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.classifier import Classifier
from autoencoder.models.weights import HEAD_PREFIXES, read_weights_info
from autoencoder.probe import linear_probe
from autoencoder.run_folder import RunFolder
from autoencoder.runs import (
    LoadedRun,
    data_config,
    load_run,
    prepare_datamodule,
    sequential_loader,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ the classifier
def load_classifier(path: str, name: str) -> Classifier:
    """A classifier from a ``scripts/pretrain_encoder.py`` weights file, head included.

    The number of classes is read from the head's weight (``fc.weight`` for ResNets, the
    last ``classifier.*.weight`` for VGGs); the input geometry from the file's description
    (:func:`~autoencoder.models.weights.read_weights_info`), when it has one.
    """
    file = Path(path).expanduser()
    info = read_weights_info(file)
    state = read_state_dict(
        path,
        option="classifier_weights",
        hint="Pass the encoder_weights.pt written by scripts/pretrain_encoder.py.",
    )
    heads = [
        value
        for key, value in (state.items() if isinstance(state, Mapping) else ())
        if key.startswith(HEAD_PREFIXES)
        and key.endswith(".weight")
        and isinstance(value, torch.Tensor)
        and value.ndim == 2
    ]
    if not heads:
        raise ConfigError(
            f"{file} has no classifier head (fc.weight or classifier.N.weight). Pass the "
            "encoder_weights.pt of scripts/pretrain_encoder.py, which keeps the head."
        )
    classifier = Classifier(
        name,
        num_classes=heads[-1].shape[0],
        stem_pool=info.get("stem_pool", True),
        input_scale=info.get("input_scale", 1),
    )
    try:
        classifier.net.load_state_dict(state)
    except RuntimeError:
        raise ConfigError(
            f"{file} is not a {name} classifier. Set classifier_name=NAME to the architecture "
            "it was trained as (the encoder=NAME of scripts/pretrain_encoder.py)."
        ) from None
    return classifier.eval()


def check_classifier_classes(path: str, classifier: Classifier, data: ImageDataModule) -> None:
    """Refuse a classifier of other classes than the data's, where both are known: its
    accuracy would not mean anything (a label of the data would name another class)."""
    theirs, ours = read_weights_info(path).get("classes"), data.class_names
    if theirs is not None and ours is not None and list(theirs) != list(ours):
        problem = f"was trained on classes {list(theirs)}, but the data has {list(ours)}"
    elif data.num_classes is not None and classifier.num_classes != data.num_classes:
        problem = f"has {classifier.num_classes} classes, but the data has {data.num_classes}"
    else:
        return
    raise ConfigError(
        f"classifier_weights={path} {problem}: pretrain one on this data's classes "
        "(scripts/pretrain_encoder.py with the same data and data.classes)."
    )


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if bool((labels < 0).any()):
        raise ConfigError(
            "classifier accuracy needs labelled test images, but this data has unlabelled ones "
            "(label -1). Use labelled data (data=arrays with a 'labels' array in test.npz, "
            "data=folder data.labels_from_subfolders=true, or a torchvision set), or leave out "
            "classifier_weights."
        )
    if bool((labels >= num_classes).any()):
        raise ConfigError(
            f"the test labels go up to {int(labels.max())}, but the classifier has "
            f"{num_classes} classes: it was trained on other data. Pass a classifier "
            "pretrained on this dataset."
        )


# ------------------------------------------------------------------------ the linear probe
def encode_split(
    model: Autoencoder, dataset: Dataset, datamodule: ImageDataModule, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents (N x floats, on the CPU) and labels of every image of ``dataset``."""
    latents, labels = [], []
    with torch.inference_mode():
        for images, batch_labels in sequential_loader(dataset, datamodule):
            batch = images.to(device).contiguous(memory_format=model.memory_format)
            latents.append(model.encode(batch).float().flatten(1).cpu())
            labels.append(batch_labels)
    return torch.cat(latents), torch.cat(labels)


def probe_latents(
    model: Autoencoder,
    data_cfg: DictConfig,
    test: ImageDataModule,
    train_images: int | None,
    device: torch.device,
) -> dict[str, float | int]:
    """Test accuracy of a linear probe (:func:`autoencoder.probe.linear_probe`) on the
    latents, fitted on the training split's: all of it, whatever ``train_subset`` the
    autoencoder trained on, or ``train_images`` of it drawn with the split seed. Empty when
    the data has no labels."""
    if test.num_classes is None:
        log.info("no probe: the data has no labels")
        return {}
    cfg = copy.deepcopy(data_cfg)
    with open_dict(cfg):  # every training image as it is: no augmentation, no subset
        cfg.train_subset = None
        cfg.random_crop = False
        cfg.horizontal_flip = False
    data = prepare_datamodule(cfg)
    train_set: Dataset = data.train_set
    if train_images is not None and train_images < len(train_set):
        generator = torch.Generator().manual_seed(data.split_seed)
        keep = torch.randperm(len(train_set), generator=generator)[:train_images]
        train_set = Subset(train_set, sorted(keep.tolist()))
    result = linear_probe(
        *encode_split(model, train_set, data, device),
        *encode_split(model, test.test_set, test, device),
    )
    return {
        "test/probe_acc": result.accuracy,
        "probe_weight_decay": result.weight_decay,
        "probe_train_images": result.train_size,
    }


# --------------------------------------------------------------------------- the outputs
def per_image_mse(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (reconstructions - images).pow(2).flatten(1).mean(dim=1)


def _write_csv(path: Path, summary: dict[str, Any]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["metric", "value"])
        for key, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.writerow([key, value])


@dataclass
class _TestPass:
    """What one pass over the test split gives."""

    metrics: dict[str, float]
    mse: torch.Tensor  # per image, in test-split order
    originals: torch.Tensor  # the first ``num_shown`` images
    reconstructions: torch.Tensor
    accuracy: dict[str, float]  # classifier accuracy on originals and reconstructions


def reconstruct(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """Float reconstructions in the default memory layout, which torchmetrics needs."""
    return model(images.contiguous(memory_format=model.memory_format)).float().contiguous()


def latent_noise_psnr(
    model: Autoencoder, datamodule: ImageDataModule, scales: list[float], device: torch.device
) -> dict[str, float]:
    """Test PSNR when Gaussian noise of ``scale`` times the latents' standard deviation
    (over the test set) is added to every latent value before decoding: how forgiving the
    latent space is to a generator's errors. ``test/psnr_latent_noise_<scale>`` per scale."""
    loader = sequential_loader(datamodule.test_set, datamodule)
    with torch.inference_mode():
        latents = [
            model.encode(x.to(device).contiguous(memory_format=model.memory_format))
            for x, _ in loader
        ]
        std = torch.cat([z.float().flatten() for z in latents]).std()
        generator = torch.Generator(device=device).manual_seed(0)
        scores = {}
        for scale in scales:
            squared, count = 0.0, 0
            for z, (images, _) in zip(latents, loader, strict=True):
                noise = torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype)
                decoded = model.decoder(z + scale * std * noise).float().clamp(0, 1)
                squared += float((decoded - images.to(device)).square().sum())
                count += images.numel()
            scores[f"test/psnr_latent_noise_{scale:g}"] = -10 * math.log10(
                max(squared / count, 1e-10)
            )
    return scores


def _test_pass(
    model: Autoencoder,
    datamodule: ImageDataModule,
    classifier: Classifier | None,
    num_shown: int,
    device: torch.device,
    field: FieldMetrics | None = None,
) -> _TestPass:
    metrics = model.test_metrics
    metrics.reset()
    accuracy = {
        kind: MulticlassAccuracy(classifier.num_classes, average="micro").to(device)
        for kind in (("original", "reconstruction") if classifier is not None else ())
    }
    errors: list[torch.Tensor] = []
    shown: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.inference_mode():
        for images, labels in sequential_loader(datamodule.test_set, datamodule):
            images = images.to(device)
            reconstructions = reconstruct(model, images)
            metrics.update(reconstructions, images)
            if field is not None:
                field.update(images, reconstructions)
            errors.append(per_image_mse(reconstructions, images).cpu())
            if sum(len(batch) for batch, _ in shown) < num_shown:
                shown.append((images.cpu(), reconstructions.cpu()))
            if classifier is not None:
                _check_labels(labels, classifier.num_classes)
                labels = labels.to(device)
                accuracy["original"].update(classifier(images), labels)
                accuracy["reconstruction"].update(classifier(reconstructions), labels)
    return _TestPass(
        metrics={key: float(value) for key, value in metrics.compute().items()},
        mse=torch.cat(errors),
        originals=torch.cat([batch for batch, _ in shown])[:num_shown],
        reconstructions=torch.cat([batch for _, batch in shown])[:num_shown],
        accuracy={f"test/acc_{kind}": float(metric.compute()) for kind, metric in accuracy.items()},
    )


def _save_worst(
    model: Autoencoder,
    datamodule: ImageDataModule,
    mse: torch.Tensor,
    count: int,
    output_dir: Path,
) -> list[dict[str, float]]:
    """``worst.png`` and ``worst.txt``: the ``count`` images with the highest MSE."""
    worst_mse, worst_index = torch.topk(mse, min(count, len(mse)))
    images = torch.stack([datamodule.test_set[i][0] for i in worst_index.tolist()])
    with torch.inference_mode():
        reconstructions = reconstruct(model, images.to(model.device)).cpu()
    psnr = (-10 * torch.log10(worst_mse.clamp_min(1e-10))).tolist()
    captions = [f"#{i} {p:.1f} dB" for i, p in zip(worst_index.tolist(), psnr, strict=True)]
    grid, _ = comparison_grid(images, reconstructions, captions=captions)
    grid.save(output_dir / "worst.png")
    worst = [
        {"index": int(index), "mse": float(value)}
        for index, value in zip(worst_index.tolist(), worst_mse.tolist(), strict=True)
    ]
    (output_dir / "worst.txt").write_text(
        "worst.png: each row of originals above its reconstructions, highest MSE first\n"
        + "".join(
            f"{position:2d}  test index {item['index']:6d}  mse {item['mse']:.6f}\n"
            for position, item in enumerate(worst)
        )
    )
    return worst


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the test split; return what is written to ``metrics.json``.

    Writes into ``cfg.paths.output_dir``: ``metrics.json``, ``metrics.csv`` (one
    ``metric,value`` row per number), ``reconstructions.png`` (the first ``num_shown`` test
    images, each row above its reconstructions), ``worst.png`` and ``worst.txt`` (the
    ``num_worst`` images with the highest per-image MSE, highest first, with their test
    index and MSE). With ``probe`` and labelled data, ``metrics.json`` also has the linear
    probe's test accuracy on the latents, ``test/probe_acc`` (see :func:`probe_latents`);
    with ``metrics=[lpips,fid]``, ``test/lpips`` and ``test/fid`` and their conventions
    (:class:`~autoencoder.field_metrics.FieldMetrics`); with ``latent_noise=[scales]``, the
    test PSNR under latent noise (:func:`latent_noise_psnr`).
    """
    run = load_run(cfg)
    model, datamodule, device = run.model, run.datamodule, run.device
    classifier = _classifier(cfg, run)
    field = _field_metrics(cfg, device)
    result = _test_pass(model, datamodule, classifier, int(cfg.num_shown), device, field)
    probe = (
        probe_latents(
            model,
            data_config(cfg.get("data"), run.config),
            datamodule,
            cfg.get("probe_train_images"),
            device,
        )
        if cfg.get("probe")
        else {}
    )
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    grid, _ = comparison_grid(result.originals, result.reconstructions)
    grid.save(output_dir / "reconstructions.png")
    worst = _save_worst(model, datamodule, result.mse, int(cfg.num_worst), output_dir)
    summary: dict[str, Any] = {
        "ckpt_path": str(run.ckpt_path.absolute()),
        "classifier_weights": cfg.get("classifier_weights"),
        "num_images": len(result.mse),
        **result.metrics,
        **(field.compute() if field is not None else {}),
        **latent_noise_psnr(model, datamodule, list(cfg.get("latent_noise") or []), device),
        **result.accuracy,
        **probe,
        "worst": worst,
        "metric_conventions": field.conventions() if field is not None else None,
        "images": {
            "reconstructions": "reconstructions.png",
            "worst": "worst.png",
            "worst_captions": "worst.txt",
        },
    }
    RunFolder(output_dir).write_metrics(summary)
    _write_csv(output_dir / "metrics.csv", summary)
    numbers = {k: v for k, v in summary.items() if isinstance(v, float)}
    log.info("%s", ", ".join(f"{key} {value:.4g}" for key, value in numbers.items()))
    log.info("evaluation written to %s", output_dir)
    return summary


def _classifier(cfg: DictConfig, run: LoadedRun) -> Classifier | None:
    """The classifier of ``classifier_weights``, checked against the data's classes."""
    if not cfg.get("classifier_weights"):
        return None
    name = (
        cfg.get("classifier_name")
        or read_weights_info(cfg.classifier_weights).get("name")
        or run.config.encoder.name
    )
    classifier = load_classifier(cfg.classifier_weights, name).to(run.device)
    check_classifier_classes(cfg.classifier_weights, classifier, run.datamodule)
    return classifier


def _field_metrics(cfg: DictConfig, device: torch.device) -> FieldMetrics | None:
    """LPIPS and rFID when ``metrics`` asks for them."""
    if not cfg.get("metrics"):
        return None
    return FieldMetrics(
        list(cfg.metrics),
        lpips_net=cfg.lpips.net,
        resize=int(cfg.lpips.resize),
        fid_weights_path=cfg.fid.weights_path,
        device=device,
    )


# python -m autoencoder.evaluate [overrides ...]: scripts/evaluate.py, from any folder
main = hydra_main(evaluate, "evaluate")

if __name__ == "__main__":
    main()
