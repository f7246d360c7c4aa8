"""Pretrain an encoder as a classifier: ``python scripts/pretrain_encoder.py [overrides ...]``.

Saves a state dict that ``scripts/train.py encoder=NAME encoder.weights=PATH`` loads.
"""

import hydra
from omegaconf import DictConfig

from autoencoder.cli import run_job
from autoencoder.pretrain import VAL_METRIC, pretrain
from autoencoder.train import optimized_value


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
def main(cfg: DictConfig) -> float:
    summary = run_job(pretrain, cfg)
    return optimized_value(summary, VAL_METRIC)


if __name__ == "__main__":
    main()
