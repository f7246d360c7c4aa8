"""The quality part (``scripts/benchmark.py quality``): each latent size trained and stood next
to PCA, its plan of runs, its notes and curves; the PCA baseline and the epochs to reach it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autoencoder.benchmarks import baselines, plots, quality_plan, quality_table
from autoencoder.errors import ConfigError
from autoencoder.plotting import pyplot
from tests.benchmarks.conftest import SMALL_MODEL, benchmark
from tests.conftest import run_script


def test_pca_with_every_component_reconstructs_exactly_and_fewer_lose() -> None:
    torch.manual_seed(0)
    train = torch.rand(256, 3, 8, 8)
    test = torch.rand(8, 3, 8, 8)
    results = baselines.pca_baseline(train, test, [4, 192])
    assert results[192]["mse"] == pytest.approx(0.0, abs=1e-10)
    assert results[192]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert results[4]["mse"] > 0.01
    assert results[4]["psnr"] == pytest.approx(10 * math.log10(1 / results[4]["mse"]))


def test_reaching_a_target_is_read_or_extrapolated_on_log_epochs() -> None:
    assert baselines.epochs_to_reach([20, 21, 22.5, 23], 22) == 3
    # 20 + 2 ln(epoch): reaches 26 dB at e^3 epochs
    curve = [20 + 2 * math.log(e) for e in range(1, 11)]
    assert baselines.epochs_to_reach(curve, 26) == pytest.approx(math.e**3)
    assert baselines.epochs_to_reach([20, 19, 18, 17], 26) is None
    assert (
        quality_plan.LatentGrid(8, 8).channels(256) == 4
        and quality_plan.LatentGrid(8, 8).channels(1000) is None
    )
    assert baselines.extrapolation_cell(315.2, 10) == 315.2
    assert baselines.extrapolation_cell(2.5e8, 10) == "> 1000"
    assert baselines.extrapolation_cell(None, 10) is None


def pca_psnr(train: torch.Tensor, test: torch.Tensor, components: int) -> float:
    """The test PSNR of PCA with ``components`` components fitted on ``train`` (numpy's SVD),
    its reconstructions clipped to [0, 1]."""
    fitted = train.flatten(1).double().numpy()
    mean = fitted.mean(0)
    _, _, directions = np.linalg.svd(fitted - mean, full_matrices=False)
    basis = directions[:components].T
    images = test.flatten(1).double().numpy()
    reconstruction = np.clip((images - mean) @ basis @ basis.T + mean, 0, 1)
    return 10 * math.log10(1 / float(np.mean((reconstruction - images) ** 2)))


def test_the_quality_part_trains_each_size_and_stands_it_next_to_pca(
    arrays: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = benchmark(
        out,
        "quality",
        arrays,
        "--floats",
        "64",
        "256",
        "1000",
        "--epochs",
        "1",
        "--config",
        "small=" + " ".join(SMALL_MODEL),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "quality.csv").open()))
    assert [(row["config"], row["floats"]) for row in rows] == [
        ("small", "64"),
        ("small", "256"),
        ("public report (ResNet-34)", "1000"),  # 1000 is not a whole 8 x 8 layout
    ]
    for row in rows[:2]:  # one run per size, in <runs>/quality/<config>/<floats>/
        metrics = json.loads(
            (out / "quality" / "small" / row["floats"] / "metrics.json").read_text()
        )
        assert metrics["latent_floats"] == int(row["floats"]) and metrics["epochs"] == 1
        assert row["latent"] == f"{int(row['floats']) // 64} x 8 x 8"
        # the run's own test figures, as its job wrote them
        assert float(row["test MSE"]) == pytest.approx(metrics["test/mse"], rel=1e-6)
        assert float(row["PSNR (dB)"]) == pytest.approx(metrics["test/psnr"], abs=1e-6)
    # PCA of 64 components, fitted here with numpy's SVD on the run's training split (86
    # images: 256 components would be more than the images determine)
    pca = pca_psnr(*baselines.split_images(("data=arrays", f"data.path={arrays}")), 64)
    assert float(rows[0]["PCA PSNR (dB)"]) == pytest.approx(pca, abs=1e-3)
    small = json.loads((out / "quality" / "small" / "64" / "metrics.json").read_text())
    assert float(rows[0]["PSNR - PCA (dB)"]) == pytest.approx(small["test/psnr"] - pca, abs=1e-3)
    assert float(rows[2]["PSNR (dB)"]) == pytest.approx(23.62, abs=0.01)
    notes = (out / "quality.md").read_text()
    assert "PCA: fitted on the training split of small" in notes
    assert "21.5 / 23.9 / 26.8 / 28.9 dB at 64 / 128 / 256 / 384 latent floats" in notes


def test_a_config_with_the_floats_placeholder_sets_each_size_itself(
    arrays: Path, tmp_path: Path
) -> None:
    base = ("data=arrays", f"data.path={arrays}", "encoder.weights=null")
    # ResNet-18 to layer4 with the stem's max-pool: 32x downsampling, a 1 x 1 latent grid
    sized = (*base, "encoder.depth=5", "encoder.stem_pool=true", "model.latent_channels={floats}")
    planned = quality_plan.plan({"sized": sized}, [64, 256], tmp_path / quality_table.QUICK.name)
    assert [(run.floats, run.overrides[len(base) :]) for run in planned] == [
        (64, ("encoder.depth=5", "encoder.stem_pool=true", "model.latent_channels=64")),
        (256, ("encoder.depth=5", "encoder.stem_pool=true", "model.latent_channels=256")),
    ]  # formatted per size, and no model.latent_channels of the benchmark's own
    assert planned[1].folder.path == tmp_path / "quality" / "sized" / "256"
    command = quality_plan.train_command(planned[1], 3)
    assert command[1:3] == ["-m", "autoencoder.train"] and "trainer.max_epochs=3" in command
    # without a budget of its own, a recipe keeps its planned length (and its schedule)
    assert not any(
        a.startswith("trainer.max_epochs") for a in quality_plan.train_command(planned[1], None)
    )
    assert quality_plan.needs_training(planned[1].folder, None)
    assert planned[1].recipe and planned[1].budget(None) is None and planned[1].budget(3) == 3
    (plain,) = quality_plan.plan(
        {"plain": (*base, "layout=depth2")}, [256], tmp_path / quality_table.QUICK.name
    )
    assert not plain.recipe and plain.budget(None) == quality_plan.DEFAULT_EPOCHS

    unsized = (*base, "layout=depth2", "model.latent_channels={floats}")
    with pytest.raises(ConfigError, match=r"gives 64 x 8 x 8 = 4096 latent floats, not 64") as info:
        quality_plan.plan({"unsized": unsized}, [64], tmp_path / quality_table.QUICK.name)
    assert "make it set model.latent_channels=1 (its latent grid is 8 x 8)" in str(info.value)


def test_pcas_note_names_the_split_it_was_fitted_on(arrays: Path, tmp_path: Path) -> None:
    base = ("data=arrays", f"data.path={arrays}", "encoder.weights=null", "layout=depth2")
    same = quality_plan.plan(
        {"a": base, "b": (*base, "data.batch_size=8", "data.horizontal_flip=true")},
        [256],
        tmp_path / quality_table.FULL.name,
    )
    assert quality_table.pca_note(same) == (
        "PCA: fitted on the training split of a, as many components as latent floats; every "
        "config trains on the same split."
    )
    fewer = quality_plan.plan(
        {"a": base, "b": (*base, "data.train_subset=40")}, [256], tmp_path / quality_table.FULL.name
    )
    assert "Other configs set other data (b: data.train_subset=40)" in quality_table.pca_note(fewer)


def test_the_curves_draw_pca_dashed_and_the_uva_reference_dotted_where_it_has_a_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = {}
    monkeypatch.setattr(
        plots, "save_figure", lambda figure, path, **_: drawn.setdefault("f", figure)
    )
    curves = {64: {"small": [18.0, 19.0]}, 1024: {"small": [25.0, 26.0]}}
    reference = {baselines.UVA_LABEL: baselines.UVA_REFERENCE}
    plots.quality_curves(curves, {64: 20.9, 1024: 30.0}, tmp_path / "c.png", None, reference)
    for ax, uva in zip(drawn["f"].axes, (21.5, None), strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert lines["PCA (test)"].get_linestyle() == "--"
        if uva is None:
            assert baselines.UVA_LABEL not in lines  # the tutorial has no 1024-float model
        else:
            assert lines[baselines.UVA_LABEL].get_linestyle() == ":"
            assert list(lines[baselines.UVA_LABEL].get_ydata()) == [uva, uva]
    pyplot().close(drawn["f"])


@pytest.mark.slow  # three trainings and an evaluation, a fresh interpreter each
def test_the_full_data_mode_resumes_reads_stopped_runs_and_draws_curves(
    arrays: Path, tmp_path: Path
) -> None:
    out, runs = tmp_path / "tables", tmp_path / "runs"

    def quality_full(*args: str):
        result = run_script(
            "benchmark.py",
            "--output",
            str(out),
            "--runs",
            str(runs),
            "quality",
            "--data-dir",
            str(arrays),
            "--full",
            "--floats",
            "64",
            "--config",
            "small=" + " ".join(SMALL_MODEL),
            *args,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return list(csv.DictReader((out / "quality_full.csv").open()))

    (row,) = quality_full("--epochs", "1")
    assert (row["floats"], row["epochs"], row["status"]) == ("64", "1", "finished")
    assert row["train images"] == "86"  # 96 minus the validation tenth
    batch = int(row["batch"])
    steps_per_epoch = int(row["steps"])
    assert steps_per_epoch == math.ceil(86 / batch)  # read from last.ckpt
    assert float(row["wall time (h)"]) > 0 and "torch" in row["machine"]

    run = runs / "quality_full" / "small" / "64"
    (run / "metrics.json").unlink()  # as if the session had ended during the run
    (row,) = quality_full("--epochs", "1", "--from")
    assert (row["epochs"], row["status"]) == ("1", "stopped (last.ckpt)")
    evaluated = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert float(row["PSNR (dB)"]) == pytest.approx(evaluated["test/psnr"], abs=1e-3)

    (row,) = quality_full("--epochs", "2")  # resumes from last.ckpt
    assert (row["epochs"], row["status"]) == ("2", "finished")
    assert int(row["steps"]) == 2 * steps_per_epoch
    assert "ckpt_path=" in (run / ".hydra" / "overrides.yaml").read_text()
    (row,) = quality_full("--epochs", "3")  # a finished run, extended by one epoch
    assert (row["epochs"], row["status"]) == ("3", "finished")
    written = (run / "metrics.json").stat().st_mtime_ns
    (row,) = quality_full("--epochs", "3")  # done: read, not trained again
    assert row["epochs"] == "3" and (run / "metrics.json").stat().st_mtime_ns == written
    assert (out / "quality_full_curves.png").stat().st_size > 0

    # a run started from the finished run's weights: its own epochs, and a note
    source = run / "checkpoints" / "last.ckpt"
    grown = " ".join(SMALL_MODEL) + f" model.lr=1e-4 init_from={source}"
    result = run_script(
        "benchmark.py",
        *("--output", str(out), "--runs", str(runs), "quality", "--data-dir", str(arrays)),
        *("--full", "--floats", "64", "--epochs", "1"),
        *("--config", "small=" + " ".join(SMALL_MODEL), "--config", f"grown={grown}"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["config"]: r for r in csv.DictReader((out / "quality_full.csv").open())}
    assert (rows["small"]["epochs"], rows["grown"]["epochs"]) == ("3", "1")
    assert int(rows["grown"]["steps"]) == steps_per_epoch
    assert (
        f"started from the weights of {source} (3 epochs; init_from)"
        in (out / "quality_full.md").read_text()
    )
