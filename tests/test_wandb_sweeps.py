"""The shipped W&B sweep files (conf/wandb_sweep/): every value a trial can get, composed
through Hydra as the agent's command line composes it and checked as a run is checked, so
an unknown key or a bad value fails here rather than in a sweep. The agent itself needs a
W&B server and is not run."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoencoder.config import config_dir
from autoencoder.errors import ConfigError
from autoencoder.preflight import check_config
from tests.conftest import ROOT, compose_job

SWEEPS = sorted((config_dir() / "wandb_sweep").glob("*.yaml"))


def trial_values(parameter: dict[str, Any]) -> list[Any]:
    """The values of one parameter to check: its value, every listed value, or both ends
    of its distribution."""
    if "value" in parameter:
        return [parameter["value"]]
    if "values" in parameter:
        return list(parameter["values"])
    return [parameter["min"], parameter["max"]]


def trials(sweep: dict[str, Any]) -> list[list[str]]:
    """Every combination of the values to check, as the overrides ``${args_no_hyphens}``
    passes (``key=value``)."""
    keys = list(sweep["parameters"])
    grids = [trial_values(sweep["parameters"][key]) for key in keys]
    return [
        [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        for values in itertools.product(*grids)
    ]


def test_a_sweep_file_exists() -> None:
    assert [path.name for path in SWEEPS] == ["quickstart.yaml", "seeds.yaml"]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_trial_of_a_shipped_sweep_composes_and_passes_the_checks(
    path: Path, tmp_path
) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert (ROOT / sweep["program"]).is_file()
    # each trial is an ordinary Hydra run of the program, its values as overrides
    assert sweep["command"] == ["${env}", "python", "${program}", "${args_no_hyphens}"]
    assert sweep["metric"]["name"] in {"val/loss", "val/mse", "val/mae", "val/psnr", "val/ssim"}
    planned = trials(sweep)
    assert len(planned) >= 3
    for index, overrides in enumerate(planned):
        cfg = compose_job("train", *overrides, output_dir=tmp_path / str(index), hydra=True)
        check_config(cfg)


def test_a_bad_value_in_a_sweep_fails_the_check(tmp_path) -> None:
    sweep = yaml.safe_load(SWEEPS[0].read_text())
    sweep["parameters"]["model.lr"] = {"distribution": "uniform", "min": -1.0, "max": 1.0e-3}
    first = trials(sweep)[0]
    assert "model.lr=-1.0" in first
    with pytest.raises(ConfigError, match=r"model.lr must be > 0, got -1.0"):
        check_config(compose_job("train", *first, output_dir=tmp_path, hydra=True))
