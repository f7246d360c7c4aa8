"""The search on Optuna's ask-and-tell API (autoencoder/search.py): the space of
conf/hparams_search/optuna.yaml, trials as ordinary training runs, a study kept in SQLite
and resumed, the best trial written; offline, on the smoke experiment."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from autoencoder.examples import smoke_overrides
from autoencoder.run_folder import RunFolder
from autoencoder.search import Dimension, SearchSpace, search

TINY = (*smoke_overrides(32, 16, 16, batch_size=16), "trainer.max_epochs=1", "logger=none")


def test_the_space_is_the_optuna_sweepers() -> None:
    space = SearchSpace.from_config(seed=42)  # the sampler's ${seed}: the run's
    assert space.direction == "maximize" and space.seed == 42
    assert space.dimensions == (
        Dimension("layout", choices=("depth2", "nopool_depth3", "depth3", "depth4")),
        Dimension("model.lr", low=1e-4, high=3e-3, log=True),
        Dimension("finetune.factor", low=1.5, high=4.0),
        Dimension("decoder.width", choices=(0.5, 1.0, 2.0)),
    )
    assert [d.key for d in SearchSpace.from_config(exclude=["layout"]).dimensions] == [
        "model.lr", "finetune.factor", "decoder.width",
    ]  # fmt: skip


def test_a_study_runs_trials_as_training_runs_and_resumes_from_its_storage(tmp_path: Path) -> None:
    storage, output = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "search"
    first = search(TINY, 2, output, storage=storage, study_name="tiny")
    assert first["trials"] == 2
    resumed = search(TINY, 1, output, storage=storage, study_name="tiny")
    assert resumed["trials"] == 3 and resumed["completed"] == 3
    study = optuna.load_study(study_name="tiny", storage=storage)
    psnr = {}
    for trial in study.trials:
        record = RunFolder(output / str(trial.number)).metrics()
        assert record is not None
        assert trial.value == pytest.approx(record.get("val/psnr"))
        psnr[trial.number] = trial.value
    best = json.loads((output / "best.json").read_text())
    assert best["best_value"] == max(psnr.values())
    assert best["best_params"] == study.trials[best["best_trial"]].params
    assert set(best["best_params"]) == {"layout", "model.lr", "finetune.factor", "decoder.width"}
