"""Encode images to latents: ``python scripts/encode.py ckpt_path=CKPT [overrides ...]``.

Writes latents.npy and index.csv for a split of the run's data (or ``data=...``), and with
``export_encoder=PATH`` the trained encoder + bottleneck for downstream use.
Checkpoints are loaded weights-only; the run config next to them must be trusted
(docs/untrusted-files.md).

The same as ``python -m autoencoder.encode``.
"""

from autoencoder.encode import main

if __name__ == "__main__":
    main()
