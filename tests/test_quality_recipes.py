"""The reconstruction-quality recipes (experiment=quality_<floats>): one command per latent
size, whose learning rate follows one cosine planned over the run's whole length, so the
same command resumed from its last checkpoint gives the same run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from omegaconf import open_dict

from autoencoder.train import train
from tests.conftest import compose_job

# floats per 32 px image -> (channels, height, width) of the latent
RECIPES = {64: (4, 4, 4), 128: (2, 8, 8), 256: (4, 8, 8), 512: (2, 16, 16)}


def _rates(run: Path) -> list[float]:
    """The encoder's learning rate at each logged step (the LearningRateMonitor's column)."""
    with open(run / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    column = next(name for name in rows[0] if name.startswith("lr-") and "encoder" in name)
    return [float(row[column]) for row in rows if row.get(column)]


@pytest.mark.parametrize("floats", sorted(RECIPES))
def test_a_quality_recipe_has_its_size_and_one_cosine_over_its_run(floats, tmp_path) -> None:
    """A fit of one batch per epoch (8 images, batch 8) for the experiment's own number of
    epochs: the latent has the size's floats, and the rate starts at the peak and follows
    one cosine to the last step of trainer.max_epochs (not restarted, not cut short)."""
    cfg = compose_job(
        "train",
        f"experiment=quality_{floats}",
        "data=synthetic",
        "data.num_train=8",
        "data.num_val=4",
        "data.num_test=4",
        "data.batch_size=8",
        "trainer.log_every_n_steps=1",
        "trainer.precision=32-true",
        "trainer.accelerator=cpu",
        "~callbacks.reconstructions",
        "test=false",
        output_dir=tmp_path / "run",
    )
    with open_dict(cfg):
        cfg.encoder.weights = None
    epochs = cfg.trainer.max_epochs
    record, _ = train(cfg)

    channels, height, width = RECIPES[floats]
    assert record["latent_floats"] == channels * height * width == floats
    rates = _rates(tmp_path / "run")
    assert len(rates) == epochs  # one step per epoch, every step logged
    peak = cfg.model.lr
    expected = [peak * 0.5 * (1 + math.cos(math.pi * step / epochs)) for step in range(epochs)]
    assert rates == pytest.approx(expected, rel=1e-4)
