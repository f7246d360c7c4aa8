"""Evaluate a checkpoint: ``python scripts/evaluate.py ckpt_path=CKPT [overrides ...]``.

Test MSE, MAE, PSNR and SSIM, reconstruction grids, the worst-reconstructed images and,
with ``classifier_weights=PATH``, a classifier's accuracy on reconstructions vs originals.
Checkpoints are loaded weights-only; the run config next to them must be trusted
(docs/untrusted-files.md).
"""

import hydra
from omegaconf import DictConfig

from autoencoder.cli import run_job
from autoencoder.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_job(evaluate, cfg)


if __name__ == "__main__":
    main()
