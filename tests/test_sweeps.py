"""Multiruns through scripts/train.py: job folders, the sweep summary, failures, Optuna, DDP."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from autoencoder.examples import smoke_overrides
from autoencoder.sweeps import NOT_RESULTS, write_summary
from tests.conftest import CONFIG_DIR, DDP_ENV, DDP_ON_CPU, compose_job, run_script

QUICK = (*smoke_overrides(), "trainer.max_epochs=1", "logger=csv")


def run_sweep(
    cwd: Path, *overrides: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python scripts/train.py -m ...`` run from ``cwd``, so stray folders would show there."""
    return run_script("train.py", "-m", *overrides, cwd=cwd, env=env, timeout=timeout)


def read_summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_basic_sweep_gives_each_job_a_folder_and_writes_a_summary(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_sweep(tmp_path, *QUICK, "finetune.factor=2.0,2.6", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert math.isfinite(metrics["test/psnr"])
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    rows = read_summary(sweep)
    assert [(r["job"], r["status"], r["finetune.factor"]) for r in rows] == [
        ("0", "COMPLETED", "2.0"),
        ("1", "COMPLETED", "2.6"),
    ]
    for row, job in zip(rows, jobs, strict=True):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert "best_ckpt" not in row  # a path, not a result
        for key, value in metrics.items():
            if key not in NOT_RESULTS:
                assert row[key] == ("" if value is None else str(value)), key
        assert row["output_dir"] == str(sweep / job) and row["error"] == ""
    assert not (tmp_path / "outputs").exists()


def test_a_failing_job_is_recorded_and_the_other_jobs_finish_intact(tmp_path) -> None:
    """A job that fails while it trains (its loss diverges: no check before the sweep can
    know that) does not stop the others. A value the checks can refuse stops the sweep
    before its first job (tests/test_preflight.py)."""
    sweep = tmp_path / "sweep"
    result = run_sweep(tmp_path, *QUICK, "model.lr=1e-3,1e30,2e-3", f"hydra.sweep.dir={sweep}")
    # Hydra runs every job, then exits with status 1 because one failed
    assert result.returncode == 1
    assert "non-finite training loss" in result.stderr
    rows = read_summary(sweep)
    assert [(r["model.lr"], r["status"]) for r in rows] == [
        ("0.001", "COMPLETED"),
        ("1e+30", "FAILED"),
        ("0.002", "COMPLETED"),
    ]
    assert rows[1]["error"].startswith("NonFiniteLossError: non-finite training loss")
    assert rows[1]["test/psnr"] == "" and not (sweep / "1" / "metrics.json").exists()
    for job in ("0", "2"):  # the outputs of the finished jobs are complete
        assert (sweep / job / "metrics.json").is_file()
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()


def test_summary_lists_a_job_that_never_finished(tmp_path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- seed=3\n")
    (tmp_path / "1").mkdir()  # not a job folder: ignored
    path = write_summary(tmp_path)
    assert path is not None
    rows = read_summary(tmp_path)
    assert [(r["job"], r["status"], r["seed"]) for r in rows] == [("0", "INCOMPLETE", "3")]


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_optuna_sweep_runs_two_trials_and_reports_the_best(tmp_path, storage) -> None:
    sweep = tmp_path / "optuna"
    database = f"sqlite:///{tmp_path / 'optuna.db'}"
    kept = [f"hydra.sweeper.storage={database}", "hydra.sweeper.study_name=s"]
    result = run_sweep(
        tmp_path,
        "hparams_search=optuna",
        *QUICK,
        "hydra.sweeper.n_trials=2",
        *(kept if storage == "sqlite" else []),
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_summary(sweep)
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    for row in rows:  # each trial sampled the search space of conf/hparams_search/optuna.yaml
        assert 1e-4 <= float(row["model.lr"]) <= 3e-3
        assert 1.5 <= float(row["finetune.factor"]) <= 4.0
        assert row["layout"] in optuna_choices("layout")
        assert row["decoder.width"] in {"0.5", "1.0", "2.0"}
    # every trial kept the smoke experiment's latent size, 16 x 4 x 4 floats
    assert [r["latent_floats"] for r in rows] == ["256", "256"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(float(r["val/psnr"]) for r in rows)
    assert results["best_value"] == pytest.approx(best)
    if storage == "sqlite":  # the study outlives the process, to be resumed or inspected
        study = optuna.load_study(study_name="s", storage=database)
        assert len(study.trials) == 2 and study.best_value == pytest.approx(best)


@pytest.mark.slow
def test_ddp_multirun_launches_the_ranks_of_each_job_in_its_folder(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_sweep(
        tmp_path,
        *QUICK,
        *DDP_ON_CPU,
        "trainer.max_epochs=2",
        "finetune.patience=null",
        "finetune.warmup_steps=2",
        "logger=wandb",
        "seed=1,2",
        "+callbacks.rank_probe._target_=tests.probes.RankProbe",
        "+callbacks.rank_probe.folder=${paths.output_dir}/probe",
        f"hydra.sweep.dir={sweep}",
        env=DDP_ENV,
        timeout=300,  # about 40 s; past that it hangs, and fails with every process's stack
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["seed"], r["status"]) for r in read_summary(sweep)] == [
        ("1", "COMPLETED"),
        ("2", "COMPLETED"),
    ]
    sums = []
    for job in ("0", "1"):
        ranks = [json.loads((sweep / job / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["world_size"] == 2 and ranks[0] == ranks[1]  # one group per job
        assert ranks[0]["phase"] == 2
        sums.append(ranks[0]["encoder_sum"])
        # one W&B run per job, written by rank 0 only
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1
        assert (sweep / job / "metrics.json").is_file()
    assert sums[0] != sums[1]  # the jobs trained with their own seeds
    # ranks > 0 ran their job as a single run in the job's folder: no sweep of their own
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (tmp_path / "outputs").exists()


def optuna_choices(key: str) -> list[str]:
    """The values ``hparams_search=optuna`` chooses ``key`` from."""
    params = compose_job("train", "hparams_search=optuna", hydra=True).hydra.sweeper.params
    (override,) = OverridesParser.create().parse_overrides([f"{key}={params[key]}"])
    return list(override.value().list)


def uses_a_layout(experiment: str) -> bool:
    choices = compose_job("train", f"experiment={experiment}", hydra=True).hydra.runtime.choices
    return choices.get("layout") is not None


# The experiments whose latent comes from the layout group (the others, as quickstart, set
# their own and leave the layout out of a search: ~hydra.sweeper.params.layout).
LAYOUT_EXPERIMENTS = sorted(
    path.stem
    for path in (CONFIG_DIR / "experiment").glob("*.yaml")
    if not path.stem.startswith("_") and uses_a_layout(path.stem)
)


def test_the_experiments_that_train_cifar10_use_a_layout() -> None:
    assert {"cifar10_resnet18", "cifar10_lowdata", "stl10_resnet50"} <= set(LAYOUT_EXPERIMENTS)
    assert "quickstart" not in LAYOUT_EXPERIMENTS


@pytest.mark.parametrize("experiment", LAYOUT_EXPERIMENTS)
def test_the_optuna_search_keeps_the_latent_size_of_the_experiment(experiment: str) -> None:
    """Every layout the study can choose gives the experiment's own latent floats per image,
    so trials differ in how they spend that size, never in the size."""

    def cut_and_latent_floats(*overrides: str) -> tuple[tuple[int, bool], int]:
        cfg = compose_job("train", f"experiment={experiment}", *overrides)
        size = cfg.data.get("image_size") or (96 if "STL10" in cfg.data._target_ else 32)
        reduction = instantiate(cfg.encoder, weights=None).reduction
        cut = (cfg.encoder.depth, cfg.encoder.stem_pool)
        return cut, cfg.model.latent_channels * (size // reduction) ** 2

    layouts = optuna_choices("layout")
    _, expected = cut_and_latent_floats()
    results = [cut_and_latent_floats(f"layout={layout}") for layout in layouts]
    assert len({cut for cut, _ in results}) == len(layouts) > 1  # each cuts differently
    assert [floats for _, floats in results] == [expected] * len(layouts)
