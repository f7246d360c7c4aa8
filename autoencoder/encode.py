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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

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
from autoencoder.runs import load_run, sequential_loader

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


def export_encoder(model: Autoencoder, path: Path) -> Path:
    """Save the encoder and bottleneck of ``model`` to ``path``; return the JSON sidecar.

    The state dict holds plain contiguous CPU tensors (a weights-only load reads it); the
    sidecar ``path.with_suffix(".json")`` holds the arguments of :class:`LatentEncoder`.
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


def encode(cfg: DictConfig) -> dict[str, Any]:
    """Encode a split (or all) of the run's data or ``cfg.data``; return ``latents.json``.

    Writes into ``cfg.paths.output_dir``: ``latents.npy`` (float32, images x latent floats),
    ``index.csv`` (``row,split,source,label``; label -1 when unlabelled) and
    ``latents.json``; with ``export_encoder=PATH`` also the encoder (see
    :func:`export_encoder`).
    """
    splits = encoded_splits(str(cfg.split))
    run = load_run(cfg)
    model, datamodule = run.model, run.datamodule
    export = None
    if cfg.get("export_encoder"):
        export = Path(cfg.export_encoder).expanduser()
        log.info("encoder exported to %s (sidecar %s)", export, export_encoder(model, export))
    latent_shape = model.latent_shape(*datamodule.image_shape[-2:])
    latent_floats = int(np.prod(latent_shape))
    datasets = {split: getattr(datamodule, f"{split}_set") for split in splits}

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    total = sum(len(dataset) for dataset in datasets.values())
    # Written batch by batch, so a large dataset never has to fit in memory.
    latents = np.lib.format.open_memmap(
        output_dir / "latents.npy", mode="w+", dtype=np.float32, shape=(total, latent_floats)
    )
    rows: list[tuple[int, str, int | str, int]] = []
    with torch.inference_mode():
        for split, dataset in datasets.items():
            position = 0
            for images, labels in sequential_loader(dataset, datamodule):
                batch = images.to(run.device).contiguous(memory_format=model.memory_format)
                # flatten follows the logical C, H, W order whatever the memory layout
                start = len(rows)
                latents[start : start + len(images)] = (
                    model.encode(batch).float().flatten(1).cpu().numpy()
                )
                for label in labels.tolist():
                    rows.append((len(rows), split, source_of(dataset, position), label))
                    position += 1
    latents.flush()
    del latents

    with (output_dir / "index.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["row", "split", "source", "label"])
        writer.writerows(rows)
    summary = {
        "ckpt_path": str(run.ckpt_path.absolute()),
        "splits": list(splits),
        "num_images": total,
        "latent_shape": list(latent_shape),
        "latent_floats": latent_floats,
        "latents": "latents.npy",
        "index": "index.csv",
        "export_encoder": None if export is None else str(export.absolute()),
    }
    (output_dir / "latents.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%d latents of %d floats written to %s", total, latent_floats, output_dir)
    return summary


# python -m autoencoder.encode [overrides ...]: scripts/encode.py, from any folder
main = hydra_main(encode, "encode")

if __name__ == "__main__":
    main()
