"""Train an autoencoder: ``python scripts/train.py [experiment=NAME] [overrides ...]``."""

import hydra
from omegaconf import DictConfig

from autoencoder.cli import exit_on_renamed_keys, run_job
from autoencoder.train import optimized_value, train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    summary = run_job(train, cfg)
    return optimized_value(summary, cfg.optimized_metric)


if __name__ == "__main__":
    exit_on_renamed_keys()
    main()
