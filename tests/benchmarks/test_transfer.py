"""The transfer study, third edition: its runs are the user's commands, its table's arithmetic
on run folders as the jobs leave them."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from autoencoder.benchmarks import transfer
from autoencoder.errors import ConfigError
from autoencoder.run_folder import RunFolder, RunMetrics


def source_run(folder: Path) -> Path:
    """A finished source run (what the study reads of it: its best checkpoint)."""
    ckpt = folder / "checkpoints" / "best-epoch004.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (folder / "metrics.json").write_text(json.dumps({"best_ckpt": str(ckpt)}))
    return ckpt


def fake_run(
    run: RunFolder, start: float | None, curve: list[float], test: float, best_epoch: int, probe
) -> None:
    """A finished study run as ``autoencoder.train`` and ``autoencoder.evaluate`` leave it."""
    run.csv_log.parent.mkdir(parents=True)
    with run.csv_log.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", "step", "val/psnr", "train/loss"])
        writer.writeheader()
        if start is not None:
            writer.writerow({"step": 0, "val/psnr": start})
        for epoch, value in enumerate(curve):
            writer.writerow({"epoch": epoch, "step": 10 * epoch, "train/loss": 0.1})
            writer.writerow({"epoch": epoch, "step": 10 * epoch + 9, "val/psnr": value})
    run.write_metrics(
        RunMetrics(
            test={"test/psnr": test, "test/ssim": 0.8},
            best_epoch=best_epoch,
            fit_seconds=10.0,
            start={"val/psnr": start} if start is not None else None,
        )
    )
    run.evaluation.path.mkdir(parents=True)
    run.evaluation.write_metrics({"test/psnr": test, "test/probe_acc": probe})


@pytest.fixture
def study(tmp_path: Path) -> transfer.Study:
    source_run(tmp_path / "source")
    return transfer.Study(
        source=tmp_path / "source",
        base=("data=arrays", "data.path=/d", "data.classes=[5,6]", "data.val_fraction=0.02"),
        runs=tmp_path / "runs",
        classifier="/c.pt",
    )


def test_each_strategy_is_one_train_command_from_its_start(study: transfer.Study) -> None:
    source = str((study.source / "checkpoints" / "best-epoch004.ckpt").resolve())
    expected = {
        "scratch": ["encoder.weights=null", "finetune=full"],
        "classifier_two_phase": ["encoder.weights=/c.pt", "finetune=two_phase"],
        "source_full": [f"init_from={source}", "finetune=full"],
        "source_adapt": ["experiment=adapt", f"init_from={source}"],
        "encoder_two_phase": [f"encoder.weights={source}", "finetune=two_phase"],
    }
    for strategy, overrides in expected.items():
        command = study.train_command(1000, 5, strategy, 2)
        assert command[:3] == [sys.executable, "-m", "autoencoder.train"]
        folder = study.runs / "transfer3" / "1000" / "5ep" / strategy / "seed2"
        assert command[3:] == [
            *study.base,
            *overrides,
            "data.train_subset=1000",
            "trainer.max_epochs=5",
            "seed=2",
            "score_start=true",
            f"hydra.run.dir={folder}",
        ]


def test_the_source_as_it_is_is_evaluated_on_the_target_data(study: transfer.Study) -> None:
    run = study.folder(1000, 5, "source", 0)
    assert run.path == study.runs / "transfer3" / "1000" / "source"
    command = study.evaluate_command(run, 1000)
    assert command[:3] == [sys.executable, "-m", "autoencoder.evaluate"]
    assert command[3].startswith("ckpt_path=") and command[3].endswith("best-epoch004.ckpt")
    assert command[4:9] == [*study.base, "data.train_subset=1000"]
    assert f"hydra.run.dir={run.evaluation.path}" in command


def test_the_regime_table_reads_start_slope_budget_probe_and_returned_starts(
    study: transfer.Study,
) -> None:
    for seed, shift in ((1, 0.0), (2, 0.2)):
        fake_run(
            study.folder(1000, 5, "scratch", seed),
            9.0,
            [15 + shift, 18 + shift, 20 + shift],
            20.0 + shift,
            3,
            0.40,
        )
        fake_run(
            study.folder(1000, 5, "source_full", seed),
            25.0,
            [24.0, 24.5, 25.5 + shift],
            25.6 + shift,
            3,
            0.50,
        )
        fake_run(
            study.folder(1000, 5, "source_frozen", seed), 25.0, [24.0, 24.2, 24.4], 25.1, 0, 0.60
        )
        fake_run(
            study.folder(1000, 20, "source_full", seed), 25.0, [25.0] * 4, 26.0 + shift, 4, 0.5
        )
    source = study.folder(1000, 5, "source", 0)
    source.evaluation.path.mkdir(parents=True)
    source.evaluation.write_metrics({"test/psnr": 25.0, "test/probe_acc": 0.55})

    regime = transfer.read_regime(study, 1000, 5, seeds=2)
    long = transfer.read_regime(study, 1000, 20, seeds=2)
    rows = {row["strategy"]: row for row in transfer.regime_table(regime, long).rows}
    assert list(rows) == ["scratch", "source", "source_frozen", "source_full"]
    assert rows["scratch"]["before step 1: val PSNR"] == "9.00 ± 0.00"
    assert rows["scratch"]["start: val PSNR epoch 1"] == "15.10 ± 0.14"
    # scratch's mean final val PSNR is 20.1: the source's start already reaches it
    assert rows["scratch"]["epochs to scratch's final"] == "-, 3"
    assert rows["source_full"]["epochs to scratch's final"] == "0, 0"
    assert rows["source_full"]["test PSNR, 5 epochs"] == "25.70 ± 0.14"
    assert rows["source_full"]["test PSNR, 20 epochs"] == "26.10 ± 0.14"
    assert rows["source_full"]["test SSIM"] == "0.8000 ± 0.0000"
    assert rows["source_full"]["test PSNR - source's"] == "0.700 ± 0.141"
    assert rows["source_frozen"]["returned the start"] == "2 of 2"
    assert rows["source_full"]["returned the start"] == "0 of 2"
    assert rows["source"]["test PSNR, 5 epochs"] == "25.00"
    assert rows["source"]["probe acc (%)"] == "55.0"
    assert rows["source"]["seeds"] == "-"


@pytest.mark.slow  # a source run, then every strategy's run and evaluation in a fresh process
def test_the_transfer_part_trains_evaluates_and_tabulates(tmp_path: Path) -> None:
    import numpy as np

    from tests.benchmarks.conftest import SMALL_MODEL
    from tests.conftest import make_images, run_script

    data = tmp_path / "labelled"
    data.mkdir()
    for split, count, seed in (("train", 160, 0), ("test", 40, 1)):
        labels = np.arange(count) % 4
        np.savez(data / f"{split}.npz", images=make_images(count, seed=seed), labels=labels)
    source = tmp_path / "source"
    trained = run_script(
        "train.py",
        "data=arrays",
        f"data.path={data}",
        "data.classes=[0,1]",
        "finetune=full",
        "trainer.max_epochs=2",
        "logger=csv",
        *SMALL_MODEL,
        f"hydra.run.dir={source}",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "tables"
    result = run_script(
        "benchmark.py",
        "--output",
        str(out),
        "--runs",
        str(tmp_path / "runs"),
        "transfer",
        "--data-dir",
        str(data),
        "--source",
        str(source),
        "--regimes",
        "24",
        "--epochs",
        "2",
        "--seeds",
        "1",
        "--strategies",
        "scratch",
        "source",
        "source_full",
        "encoder_two_phase",
        "--long-epochs",
        "3",
        "--long-regimes",
        "24",
        "--long-strategies",
        "source_full",
        "--target-classes",
        "2",
        "3",
        "--probe-train-images",
        "30",
        "data.val_fraction=0.25",
        *SMALL_MODEL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["strategy"]: row for row in csv.DictReader((out / "transfer3_24.csv").open())}
    assert list(rows) == ["scratch", "source", "source_full", "encoder_two_phase"]
    for name in ("scratch", "source_full", "encoder_two_phase"):
        assert float(rows[name]["before step 1: val PSNR"]) > 0, "every run scored its start"
        assert 0 <= float(rows[name]["probe acc (%)"]) <= 100
    assert float(rows["source_full"]["test PSNR, 3 epochs"]) > 0
    assert rows["scratch"]["test PSNR, 3 epochs"] == "-"  # not run at the longer budget
    assert (out / "transfer3_curves.png").stat().st_size > 0


def split_study(tmp_path: Path, name: str) -> transfer.Study:
    source_run(tmp_path / name / "source")
    strategies = {
        **transfer.STRATEGIES,
        "adabn_full": transfer.candidate(
            "adabn_full=init_from={source} finetune=full reestimate_bn=true"
        ),
    }
    return transfer.Study(
        source=tmp_path / name / "source",
        base=("data=arrays", "data.path=/d"),
        runs=tmp_path / "runs",
        split=name,
        strategies=strategies,
    )


def test_the_ranking_across_splits_takes_each_splits_own_start(tmp_path: Path) -> None:
    studies = [split_study(tmp_path, name) for name in ("k0", "k3")]
    assert studies[0].folder(1000, 5, "source_full", 1).path == (
        tmp_path / "runs" / "transfer3" / "k0" / "1000" / "5ep" / "source_full" / "seed1"
    )
    command = studies[1].train_command(1000, 5, "adabn_full", 1)
    assert "reestimate_bn=true" in command and "finetune=full" in command
    # the source scores 25 dB on k0's target, 20 dB on k3's; the runs' changes over it:
    # source_full +0.1/+0.3 on k0 and +0.2/+0.2 on k3; adabn_full +0.5/+0.5 and -0.1/+0.1
    changes = {
        "source_full": {"k0": (0.1, 0.3), "k3": (0.2, 0.2)},
        "adabn_full": {"k0": (0.5, 0.5), "k3": (-0.1, 0.1)},
    }
    for study, source_psnr in zip(studies, (25.0, 20.0), strict=True):
        source = study.folder(1000, 5, "source", 0)
        source.evaluation.path.mkdir(parents=True)
        source.evaluation.write_metrics({"test/psnr": source_psnr})
        for strategy, by_split in changes.items():
            for seed, change in enumerate(by_split[study.split], 1):
                best_epoch = 0 if change < 0 else 4
                run = study.folder(1000, 5, strategy, seed)
                curve = [source_psnr - 0.5, source_psnr + change]
                fake_run(run, source_psnr, curve, source_psnr + change, best_epoch, None)
    regimes = {study.split: transfer.read_regime(study, 1000, 5, seeds=2) for study in studies}
    table = transfer.splits_table(regimes)
    rows = {row["strategy"]: row for row in table.rows}
    assert list(rows) == ["adabn_full", "source_full"], "best mean first"
    assert rows["adabn_full"]["runs"] == 4
    assert rows["adabn_full"]["change over the start"] == "0.250 ± 0.300"
    assert rows["source_full"]["change over the start"] == "0.200 ± 0.082"
    assert rows["adabn_full"]["mean - source_full's"] == "+0.050"
    assert rows["adabn_full"]["worst split"] == "k3: +0.000"
    assert rows["source_full"]["worst split"] == "k3: +0.200"
    assert rows["adabn_full"]["split k0"] == "+0.500"
    assert rows["adabn_full"]["returned the start"] == "1 of 4"
    assert rows["source_full"]["epoch-1 dip (val)"] == "-0.500 ± 0.000"


def test_a_candidate_is_name_and_overrides() -> None:
    strategy = transfer.candidate("lr=init_from={source} model.lr=1e-4 'finetune=full'")
    assert strategy == transfer.Strategy(
        "lr", ("init_from={source}", "model.lr=1e-4", "finetune=full")
    )
    for entry in ("=a=b", "noequals", "source_full=finetune=full", "bad name=x=1"):
        with pytest.raises(ConfigError):
            transfer.candidate(entry)


@pytest.mark.slow  # two source runs, then each split's runs and evaluations in fresh processes
def test_the_transfer_part_ranks_candidates_across_splits(tmp_path: Path) -> None:
    import numpy as np

    from tests.benchmarks.conftest import SMALL_MODEL
    from tests.conftest import make_images, run_script

    data = tmp_path / "labelled"
    data.mkdir()
    for split, count, seed in (("train", 160, 0), ("test", 40, 1)):
        np.savez(
            data / f"{split}.npz", images=make_images(count, seed=seed), labels=np.arange(count) % 4
        )
    splits = []
    for name, source_classes, target in (("k0", "[0,1]", "2,3"), ("k2", "[2,3]", "0,1")):
        source = tmp_path / name
        trained = run_script(
            "train.py", "data=arrays", f"data.path={data}", f"data.classes={source_classes}",
            "finetune=full", "trainer.max_epochs=1", "logger=csv", *SMALL_MODEL,
            f"hydra.run.dir={source}",
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        splits += ["--split", f"{name}={source}:{target}"]
    out = tmp_path / "tables"
    result = run_script(
        "benchmark.py", "--output", str(out), "--runs", str(tmp_path / "runs"), "transfer",
        "--data-dir", str(data), *splits, "--regimes", "24", "--epochs", "1", "--seeds", "1",
        "--candidate", "adabn_full=init_from={source} finetune=full reestimate_bn=true",
        "--strategies", "source", "source_full", "adabn_full", "--probe-train-images", "0",
        "data.val_fraction=0.25", *SMALL_MODEL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {
        row["strategy"]: row for row in csv.DictReader((out / "transfer3_splits_24.csv").open())
    }
    assert set(rows) == {"source_full", "adabn_full"}
    for row in rows.values():
        assert row["runs"] == "2"
        assert row["worst split"].split(":")[0] in ("k0", "k2")
        assert row["split k0"] != "-" and row["split k2"] != "-"
    for name in ("k0", "k2"):
        assert (out / f"transfer3_{name}_24.md").is_file()
    assert (out / "transfer3_splits_24.png").stat().st_size > 0
    log = (
        tmp_path / "runs" / "transfer3" / "k2" / "24" / "1ep" / "adabn_full" / "seed1" / "train.log"
    )
    assert "reestimate_bn: the running statistics of" in log.read_text()
