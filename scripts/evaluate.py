"""Evaluate a checkpoint: ``python scripts/evaluate.py ckpt_path=CKPT [overrides ...]``.

Test MSE, MAE, PSNR and SSIM, reconstruction grids, the worst-reconstructed images and,
with ``classifier_weights=PATH``, a classifier's accuracy on reconstructions vs originals.
Checkpoints are loaded weights-only; the run config next to them must be trusted
(docs/untrusted-files.md).

The same as ``python -m autoencoder.evaluate``.
"""

from autoencoder.evaluate import main

if __name__ == "__main__":
    main()
