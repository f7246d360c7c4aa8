"""Checks before work: a sweep's jobs checked before the first starts, ``check=true``, the
benchmark CLI's arguments, group choices an experiment sets back, and the path and device
helpers every option goes through. The single-run mistakes are in test_bad_inputs.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from autoencoder import inputs
from autoencoder.benchmarks import cli as benchmark_cli
from autoencoder.cli import job_command, launch, run_job
from autoencoder.errors import ConfigError, StepFailed
from autoencoder.group_choices import check_group_choices
from autoencoder.inputs import checkpoint_inside, existing_file, existing_folder, torch_device
from autoencoder.train import train
from tests.conftest import compose_job, make_images, run_script

SMOKE_SWEEP = ("experiment=smoke", "logger=none")


# ------------------------------------------------------------------------------ sweeps
def test_a_sweep_reports_a_bad_value_of_a_later_job_before_the_first_job_runs(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    started = time.perf_counter()
    result = run_script(
        "train.py", "-m", *SMOKE_SWEEP, "model.lr=1e-3,-1", "seed=1,2", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: job 2 (experiment=smoke logger=none model.lr=-1 seed=1): model.lr must be > 0, "
        "got -1.",
        "error: job 3 (experiment=smoke logger=none model.lr=-1 seed=2): model.lr must be > 0, "
        "got -1.",
        "error: 4 planned jobs checked; nothing was run. Fix the values above (check=true "
        "checks a sweep without running it).",
    ]
    assert not any(path.is_dir() for path in sweep.glob("*")), "no job started"
    assert time.perf_counter() - started < 60  # the first job alone trains for ~50 s


def test_check_true_checks_every_value_of_an_optuna_search_and_runs_nothing(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_script(
        "train.py",
        "hparams_search=optuna",
        *SMOKE_SWEEP,
        "check=true",
        "hydra.sweeper.n_trials=20",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # the first value of each key, then each other value once: 4 layouts, 2 ends of each of
    # 2 intervals, 3 widths
    assert "check: 8 planned jobs checked; nothing was run." in result.stdout
    assert not any(path.is_dir() for path in sweep.glob("*"))


def test_an_unknown_option_in_a_sweep_is_one_line_per_job(tmp_path) -> None:
    result = run_script(
        "train.py",
        "-m",
        *SMOKE_SWEEP,
        "encoder=resnet18,resnet19",
        "check=true",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(
        "error: job 1 (experiment=smoke logger=none encoder=resnet19 check=True): In 'train': "
        "Could not find 'encoder/resnet19' Available options in 'encoder': _base resnet101"
    )
    assert "Config search path" not in result.stderr and len(errors) == 2


def test_check_true_stops_a_single_run_after_its_checks(tmp_path, capsys) -> None:
    cfg = compose_job("train", *SMOKE_SWEEP, "check=true", output_dir=tmp_path / "run")
    assert run_job(train, cfg) is None
    assert capsys.readouterr().out == "check: train config OK; nothing was run (check=true).\n"
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- group choices set back
def test_an_experiment_that_tunes_a_chosen_groups_values_is_reported_not_refused() -> None:
    cfg = compose_job("train", "experiment=cifar10_gpu", "data=synthetic", hydra=True)
    with pytest.warns(
        UserWarning,
        match=r"^data=synthetic: experiment=cifar10_gpu sets data.batch_size=256, "
        r"data.num_workers=4 over its values\.$",
    ):
        check_group_choices(cfg)


def test_a_key_set_on_the_command_line_after_the_choice_is_the_users_own() -> None:
    cfg = compose_job(
        "train", "experiment=quality_256", "layout=depth2", "encoder.depth=2", hydra=True
    )
    check_group_choices(cfg)  # depth2's other key, 4 channels, is what the recipe sets too
    cfg = compose_job("train", "experiment=quality_128", "layout=depth2", hydra=True)
    with pytest.raises(ConfigError, match=r"encoder.depth=3, model.latent_channels=2\. Set"):
        check_group_choices(cfg)


# ---------------------------------------------------------------------- benchmark CLI
@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    folder = tmp_path_factory.mktemp("arrays")
    for split, count, seed in (("train", 32, 0), ("test", 16, 1)):
        np.savez(folder / f"{split}.npz", images=make_images(count, seed=seed))
    return folder


def benchmark_says(capsys: pytest.CaptureFixture, *argv: str) -> list[str]:
    """The ``error:`` lines of ``scripts/benchmark.py ARGV`` run in this process, which must
    exit with status 1 and print no traceback."""
    with pytest.raises(SystemExit) as exit:
        benchmark_cli.main(list(argv))
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()


def test_the_benchmarks_refuse_a_data_folder_without_the_arrays(tmp_path, capsys) -> None:
    fix = "Pass a folder with train.npz and test.npz (CIFAR-10 as arrays, docs/results.md)."
    for part in ("speed", "quality", "transfer --source x"):
        assert benchmark_says(capsys, *part.split(), "--data-dir", str(tmp_path / "no")) == [
            f"error: --data-dir {tmp_path / 'no'}: no such folder. {fix}"
        ]
    assert benchmark_says(capsys, "quality", "--data-dir", str(tmp_path)) == [
        f"error: --data-dir {tmp_path} has no train.npz and no test.npz. {fix}"
    ]


def test_a_transfer_source_whose_checkpoint_is_gone_is_refused(arrays, tmp_path, capsys) -> None:
    from autoencoder.run_folder import RunFolder, RunMetrics

    source = tmp_path / "source"
    source.mkdir()
    RunFolder(source).write_metrics(RunMetrics(best_ckpt=str(source / "gone.ckpt")))
    assert benchmark_says(
        capsys,
        "--runs",
        str(tmp_path),
        "transfer",
        "--data-dir",
        str(arrays),
        "--source",
        str(source),
    ) == [
        f"error: --source {source}: its best checkpoint {source / 'gone.ckpt'}: no such file. "
        "Restore it, or train the source again."
    ]


def test_transfer_takes_one_source_or_named_splits_each_checked(
    arrays, tmp_path, capsys
) -> None:
    transfer = ("--runs", str(tmp_path), "transfer", "--data-dir", str(arrays))
    both = benchmark_says(capsys, *transfer, "--source", "s", "--split", "k0=s:1,2")
    assert both[0].startswith("error: transfer: give --source RUN_DIR (one split")
    assert benchmark_says(capsys, *transfer, "--split", "k0=nowhere") == [
        "error: --split 'k0=nowhere': write NAME=RUN_DIR:CLASSES with a new NAME, e.g. --split "
        "k0=outputs/k0/source:5,6,7,8,9 (the source run, the target labels)."
    ]
    said = benchmark_says(capsys, *transfer, "--split", f"k0={tmp_path / 'gone'}:5,6")
    assert said[0].startswith(f"error: --split k0: {tmp_path / 'gone'}: no such folder.")
    unknown = benchmark_says(capsys, *transfer, "--split", "k0=s:1", "--strategies", "adabn")
    assert unknown[0].startswith("error: --strategies adabn: not a strategy; the strategies are")
    assert unknown[0].endswith("(add one with --candidate NAME=OVERRIDES).")
    assert not (tmp_path / "transfer3").exists(), "nothing launched"


def quality(runs: Path, arrays: Path, *floats: str) -> tuple[str, ...]:
    """The quality part's arguments up to its overrides."""
    return ("--runs", str(runs), "quality", "--data-dir", str(arrays), "--floats", *floats)


def test_quality_names_the_sizes_its_configs_can_reach(arrays, tmp_path, capsys) -> None:
    said = benchmark_says(
        capsys, *quality(tmp_path, arrays, "64", "100"), "--", "encoder.weights=null",
        "layout=depth2",
    )  # fmt: skip
    assert said == [
        "error: --floats 100: no config reaches this latent size; --config default's latent "
        "grid is 8 x 8: multiples of 64 (64, 128, 256, ...). Pick sizes among those, or add a "
        "--config with another grid (e.g. encoder.depth=N)."
    ]
    assert not (tmp_path / "quality").exists(), "nothing launched"


def test_quality_speaks_of_from_only_with_from(arrays, tmp_path, capsys) -> None:
    assert benchmark_says(
        capsys, *quality(tmp_path, arrays, "64"), "--from", "--", "layout=depth2"
    ) == [f"error: no runs under {tmp_path / 'quality'}: train them (without --from)."]


def test_an_override_the_benchmark_sets_itself_is_refused_with_every_bad_value(
    arrays, tmp_path, capsys
) -> None:
    said = benchmark_says(
        capsys, *quality(tmp_path, arrays, "64"), "--", "layout=depth2", "trainer.max_epochs=1",
        "model.lr=-1",
    )  # fmt: skip
    assert len(said) == 2
    assert said[0].endswith(
        "trainer.max_epochs is set twice (trainer.max_epochs=1, then trainer.max_epochs=20): "
        "the benchmark sets it itself, so the override would be ignored; use the benchmark's "
        "own option for it (e.g. --epochs for trainer.max_epochs) or leave it out."
    )
    assert said[1].startswith("error: python -m autoencoder.train data=arrays")
    assert said[1].endswith(": model.lr must be > 0, got -1.")


def test_a_failed_step_names_its_command_status_and_log(tmp_path) -> None:
    folder = tmp_path / "run"
    command = job_command(
        "train", "experiment=smoke", "data.num_train=-1", f"hydra.run.dir={folder}"
    )
    with pytest.raises(StepFailed) as failed:
        launch(command)
    assert str(failed.value) == (
        "a step failed with exit status 1: python -m autoencoder.train experiment=smoke "
        f"data.num_train=-1 hydra.run.dir={folder}; its log: {folder}/train.log. Fix what its "
        "error says and run the same command again: finished steps are not repeated."
    )


# --------------------------------------------------------------------- paths, devices
def test_a_folder_for_a_checkpoint_names_the_one_inside(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert checkpoint_inside(run) is None
    for name in ("best-epoch002.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"")
    assert checkpoint_inside(run) == run / "checkpoints" / "last.ckpt"
    assert checkpoint_inside(run / "checkpoints") == run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as error:
        existing_file("init_from", run, "FIX")
    assert str(error.value) == (
        f"init_from='{run}' is a folder, not a file. Pass the file inside it: "
        f"init_from='{run}/checkpoints/last.ckpt'"
    )
    with pytest.raises(ConfigError, match=r"^--x .*last.ckpt is a file, not a folder\. FIX$"):
        existing_folder("--x", run / "checkpoints" / "last.ckpt", "FIX")


def test_a_device_is_refused_unless_this_machine_has_it(monkeypatch) -> None:
    assert torch_device("device", "cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device("device", "cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError) as error:
        torch_device("device", "cuda:2")
    assert (
        str(error.value) == "device='cuda:2': this machine has 2 CUDA device(s), cuda:0 .. cuda:1."
    )
    with pytest.raises(
        ConfigError, match=r"^--device tpu is not a device; use cpu, cuda or cuda:N \(leave"
    ):
        torch_device("--device", "tpu")
    assert inputs.pick_device("device", None) == torch.device("cuda")
