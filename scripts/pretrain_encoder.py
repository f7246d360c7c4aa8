"""Pretrain an encoder as a classifier: ``python scripts/pretrain_encoder.py [overrides ...]``.

Saves a state dict that ``scripts/train.py encoder=NAME encoder.weights=PATH`` loads.

The same as ``python -m autoencoder.pretrain``.
"""

from autoencoder.pretrain import main

if __name__ == "__main__":
    main()
