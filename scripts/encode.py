"""Encode images to latents: ``python scripts/encode.py ckpt_path=CKPT [overrides ...]``.

Writes latents.npy and index.csv for a split of the run's data (or ``data=...``), and with
``export_encoder=PATH`` the trained encoder + bottleneck for downstream use.
Checkpoints are loaded weights-only; the run config next to them must be trusted
(docs/untrusted-files.md).
"""

import hydra
from omegaconf import DictConfig

from autoencoder.cli import run_job
from autoencoder.encode import encode


@hydra.main(version_base="1.3", config_path="../conf", config_name="encode")
def main(cfg: DictConfig) -> None:
    run_job(encode, cfg)


if __name__ == "__main__":
    main()
