"""Encoding images to latent vectors with a trained checkpoint, and exporting its encoder.

``latents.npy`` holds one float32 row per image: the latent map flattened in C, H, W order
(``latents.json`` gives its shape); ``index.csv`` says where each row came from. The
exported encoder is the trained encoder and bottleneck alone, as a weights-only state dict
and a JSON sidecar; rebuild it with::

    from autoencoder.encode import load_encoder; encoder = load_encoder("encoder.pt")

Checkpoints are loaded weights-only (:mod:`autoencoder.checkpointing`).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from autoencoder.checkpointing import read_state_dict
from autoencoder.cli import hydra_main
from autoencoder.data import source_of
from autoencoder.errors import ConfigError
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.bottleneck import Bottleneck, LatentActivation
from autoencoder.models.encoders import Encoder
from autoencoder.models.shape import EncoderGeometry
from autoencoder.param_groups import ENCODER_PREFIX
from autoencoder.preflight import encoded_splits
from autoencoder.runs import LoadedRun, load_run, sequential_loader

log = logging.getLogger(__name__)

_EXPORTED = (ENCODER_PREFIX, "bottleneck.")


class LatentEncoder(nn.Module):
    """A trained autoencoder's encoder and bottleneck: [0, 1] images to latent maps.

    Its parameter names are the autoencoder's (``encoder.*``, ``bottleneck.*``), so an
    :class:`~autoencoder.models.autoencoder.Autoencoder` state dict restricted to those keys
    loads into it. The arguments are those of
    :class:`~autoencoder.models.encoders.Encoder` (without weights) and
    :class:`~autoencoder.models.bottleneck.Bottleneck`.
    """

    def __init__(
        self,
        name: str,
        depth: int,
        latent_channels: int,
        normalize: bool = True,
        bottleneck_kernel_size: int = 1,
        bottleneck_activation: LatentActivation = "none",
        stem_pool: bool = True,
        input_scale: int = 1,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(
            name,
            weights=None,
            depth=depth,
            normalize=normalize,
            stem_pool=stem_pool,
            input_scale=input_scale,
        )
        self.bottleneck = Bottleneck(
            self.encoder.out_channels[-1],
            latent_channels,
            kernel_size=bottleneck_kernel_size,
            activation=bottleneck_activation,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Latent maps ``(B, latent_channels, H / reduction, W / reduction)``."""
        return self.bottleneck(self.encoder(images))


def export_encoder(
    model: Autoencoder, path: Path, statistics: LatentStatistics | None = None
) -> Path:
    """Save the encoder and bottleneck of ``model`` to ``path``; return the JSON sidecar.

    The state dict holds plain contiguous CPU tensors (a weights-only load reads it); the
    sidecar ``path.with_suffix(".json")`` holds the arguments of :class:`LatentEncoder`,
    and the latents' statistics over the encoded images when given.
    """
    state_dict = {
        key: value.detach().cpu().contiguous()
        for key, value in model.state_dict().items()
        if key.startswith(_EXPORTED)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    sidecar = path.with_suffix(".json")
    shape = model.shape
    meta = {
        **shape.encoder.to_json(),
        "latent_channels": shape.latent_channels,
        "normalize": model.encoder.normalize,
        "bottleneck_kernel_size": shape.bottleneck_kernel_size,
        "bottleneck_activation": shape.bottleneck_activation,
        "reduction": model.encoder.reduction,
        "input": "RGB in [0, 1], shape (B, 3, H, W), H and W divisible by reduction",
        "rebuild": "from autoencoder.encode import load_encoder; "
        f"encoder = load_encoder({str(path.absolute())!r})",
        "latent_statistics": None if statistics is None else statistics.to_json(),
    }
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return sidecar


def load_encoder(path: str | Path) -> LatentEncoder:
    """Rebuild an exported encoder from its state dict and JSON sidecar, in eval mode."""
    path = Path(path).expanduser()
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise ConfigError(
            f"an exported encoder needs {path} and its sidecar {sidecar}; write both with "
            "scripts/encode.py ckpt_path=... export_encoder=PATH."
        )
    meta = json.loads(sidecar.read_text())
    # sidecars written before an option existed lack it: its default
    geometry = EncoderGeometry.from_json(meta)
    encoder = LatentEncoder(
        geometry.name,
        geometry.depth,
        meta["latent_channels"],
        normalize=meta["normalize"],
        bottleneck_kernel_size=meta.get("bottleneck_kernel_size", 1),
        bottleneck_activation=meta.get("bottleneck_activation", "none"),
        stem_pool=geometry.stem_pool,
        input_scale=geometry.input_scale,
    )
    encoder.load_state_dict(
        read_state_dict(
            path,
            option="load_encoder",
            hint="Pass the file written by scripts/encode.py ckpt_path=... export_encoder=PATH.",
        )
    )
    return encoder.eval()


@dataclass(frozen=True)
class LatentStatistics:
    """The latents' statistics over the encoded images, what a diffusion model trained on
    them needs: each channel's mean and standard deviation, and ``scale_factor``, which
    brings the latents to unit variance (latent-diffusion code multiplies by it before
    training and divides by it before decoding)."""

    images: int
    channel_mean: list[float]
    channel_std: list[float]
    std: float

    @property
    def scale_factor(self) -> float:
        return 1.0 / self.std if self.std > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "scale_factor": self.scale_factor}


class _Moments:
    """Per-channel sums of latent maps, batch by batch, in float64."""

    def __init__(self) -> None:
        self.images = 0
        self.values = 0
        self.sums: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, maps: torch.Tensor) -> None:
        maps = maps.double()
        sums, squares = maps.sum((0, 2, 3)), maps.square().sum((0, 2, 3))
        self.sums = sums if self.sums is None else self.sums + sums
        self.squares = squares if self.squares is None else self.squares + squares
        self.images += maps.shape[0]
        self.values += maps.shape[0] * maps.shape[2] * maps.shape[3]

    def statistics(self) -> LatentStatistics:
        assert self.sums is not None and self.squares is not None
        mean = self.sums / self.values
        variance = (self.squares / self.values - mean.square()).clamp_min(0)
        overall = float(self.sums.sum() / (self.values * len(mean)))
        overall_variance = float(self.squares.sum() / (self.values * len(mean))) - overall**2
        return LatentStatistics(
            self.images,
            [round(float(m), 6) for m in mean],
            [round(float(v.sqrt()), 6) for v in variance],
            round(max(overall_variance, 0.0) ** 0.5, 6),
        )


def encode(cfg: DictConfig) -> dict[str, Any]:
    """Encode a split (or all) of the run's data or ``cfg.data``; return ``latents.json``.

    Writes into ``cfg.paths.output_dir``: ``latents.npy`` (float32, images x latent floats),
    ``index.csv`` (``row,split,source,label``; label -1 when unlabelled) and
    ``latents.json`` (with the latents' :class:`LatentStatistics`); with
    ``export_encoder=PATH`` also the encoder, its sidecar recording the same statistics
    (see :func:`export_encoder`).
    """
    splits = encoded_splits(str(cfg.split))
    run = load_run(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    datasets = {split: getattr(run.datamodule, f"{split}_set") for split in splits}
    latent_shape = run.model.latent_shape(*run.datamodule.image_shape[-2:])
    rows, statistics = _write_latents(run, datasets, output_dir / "latents.npy", latent_shape)
    _write_index(output_dir / "index.csv", rows)
    export = Path(cfg.export_encoder).expanduser() if cfg.get("export_encoder") else None
    if export is not None:
        sidecar = export_encoder(run.model, export, statistics)
        log.info("encoder exported to %s (sidecar %s)", export, sidecar)
    summary = {
        "ckpt_path": str(run.ckpt_path.absolute()),
        "splits": list(splits),
        "num_images": len(rows),
        "latent_shape": list(latent_shape),
        "latent_floats": int(np.prod(latent_shape)),
        "latents": "latents.npy",
        "index": "index.csv",
        "statistics": statistics.to_json(),
        "export_encoder": None if export is None else str(export.absolute()),
    }
    (output_dir / "latents.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%d latents of %s written to %s", len(rows), latent_shape, output_dir)
    return summary


def _write_index(path: Path, rows: list[tuple[int, str, int | str, int]]) -> None:
    """``index.csv``: each latent's row, split, source and label."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["row", "split", "source", "label"])
        writer.writerows(rows)


def _write_latents(
    run: LoadedRun, datasets: dict[str, Dataset], file: Path, latent_shape: tuple[int, ...]
) -> tuple[list[tuple[int, str, int | str, int]], LatentStatistics]:
    """Encode ``datasets`` into ``file`` batch by batch (a large set never has to fit in
    memory); return each row's index entry and the latents' statistics."""
    total = sum(len(dataset) for dataset in datasets.values())
    latents = np.lib.format.open_memmap(
        file, mode="w+", dtype=np.float32, shape=(total, int(np.prod(latent_shape)))
    )
    rows: list[tuple[int, str, int | str, int]] = []
    moments = _Moments()
    with torch.inference_mode():
        for split, dataset in datasets.items():
            position = 0
            for images, labels in sequential_loader(dataset, run.datamodule):
                batch = images.to(run.device).contiguous(memory_format=run.model.memory_format)
                maps = run.model.encode(batch).float()
                moments.add(maps)
                # flatten follows the logical C, H, W order whatever the memory layout
                latents[len(rows) : len(rows) + len(images)] = maps.flatten(1).cpu().numpy()
                for label in labels.tolist():
                    rows.append((len(rows), split, source_of(dataset, position), label))
                    position += 1
    latents.flush()
    return rows, moments.statistics()


# python -m autoencoder.encode [overrides ...]: scripts/encode.py, from any folder
main = hydra_main(encode, "encode")

if __name__ == "__main__":
    main()
