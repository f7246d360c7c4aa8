"""The benchmark suite: each part on generated data, and the arithmetic of its tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autoencoder.benchmarks import baselines, plots, quality
from autoencoder.benchmarks.tables import Table
from autoencoder.errors import ConfigError
from autoencoder.plotting import pyplot
from tests.conftest import make_images, run_script

# A from-scratch ResNet-18 to layer1 with the stem's max-pool, without the weights' average
# (the first three, which the transfer test replaces by its --config), on small batches.
SMALL_MODEL = (
    "encoder.weights=null",
    "layout=depth2",
    "callbacks=default",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("arrays")
    for split, count, seed in (("train", 96, 0), ("test", 32, 1)):
        np.savez(folder / f"{split}.npz", images=make_images(count, seed=seed))
    return folder


def benchmark(out: Path, part: str, arrays: Path, *args: str):
    """``scripts/benchmark.py --output OUT --runs OUT PART --data-dir ARRAYS ARGS...``"""
    return run_script(
        "benchmark.py",
        "--output",
        str(out),
        "--runs",
        str(out),
        part,
        "--data-dir",
        str(arrays),
        *args,
    )


# ------------------------------------------------------------------------------ tables


def test_a_table_prints_and_writes_the_same_rows(tmp_path: Path) -> None:
    table = Table("t", ("name", "psnr"), formats={"psnr": 2})
    table.add(name="pca", psnr=26.4512)
    table.add(name="ours", psnr=None)
    with pytest.raises(ValueError, match="unknown columns"):
        table.add(name="x", ssim=1.0)
    csv_path, md_path = table.write(tmp_path, "t")
    assert list(csv.DictReader(csv_path.open())) == [
        {"name": "pca", "psnr": "26.4512"},
        {"name": "ours", "psnr": ""},
    ]
    assert md_path.read_text().splitlines()[2:] == ["| pca | 26.45 |", "| ours | - |"]


# ------------------------------------------------------------------------------- speed


def test_the_speed_part_measures_every_variant_and_writes_its_figures(
    arrays: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = benchmark(
        out,
        "speed",
        arrays,
        "--steps",
        "2",
        "--warmup",
        "1",
        "--skip",
        "bare-compile",
        *SMALL_MODEL,
        "finetune=full",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "speed.json").read_text())
    assert set(figures["variants"]) == {
        "pipeline",
        "bare",
        "bare-frozen",
        "bare-contiguous",
        "bare-bf16",
        "pipeline-bf16",
    }
    for variant in figures["variants"].values():
        assert variant["seconds"] > 0
        assert variant["images_per_second"] == pytest.approx(16 / variant["seconds"])
    bare, pipeline = figures["variants"]["bare"], figures["variants"]["pipeline"]
    ratio = figures["ratios"]["pipeline / bare loop throughput"]
    assert ratio == pytest.approx(bare["seconds"] / pipeline["seconds"])
    rows = list(csv.DictReader((out / "speed.csv").open()))
    loaders = ["loader (per-image)", "loader (on-device)"]
    assert [row["variant"] for row in rows] == [*figures["variants"], *loaders]
    # the training loader alone, both ways, side by side
    assert list(figures["loaders"]) == loaders and min(figures["loaders"].values()) > 0
    assert figures["loader_images_per_second"] == figures["loaders"]["loader (per-image)"]
    for row in rows[-2:]:
        rate = figures["loaders"][row["variant"]]
        assert float(row["images/s"]) == pytest.approx(rate)
        assert float(row["ms/step"]) == pytest.approx(1000 * 16 / rate)
    assert figures["ratios"]["on-device / per-image loader throughput"] == pytest.approx(
        figures["loaders"]["loader (on-device)"] / figures["loaders"]["loader (per-image)"]
    )
    assert (out / "speed.png").stat().st_size > 0 and (out / "speed.md").is_file()


def test_the_overhead_part_costs_each_part_of_the_pipeline(arrays: Path, tmp_path: Path) -> None:
    out = tmp_path / "overhead"
    result = benchmark(
        out, "speed", arrays, "--overhead", "--steps", "3", "--warmup", "1", *SMALL_MODEL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["part"].strip(): row for row in csv.DictReader((out / "overhead.csv").open())}
    bare = float(rows["bare loop (forward, loss, backward, AdamW step)"]["ms/step"])
    pipeline = rows["pipeline (scripts/train.py)"]
    assert float(pipeline["cost (ms/step)"]) == pytest.approx(float(pipeline["ms/step"]) - bare)
    switched = [name for name in rows if name.endswith(": off")]
    # SMALL_MODEL trains without the average: there is no weight average to switch off
    assert len(switched) == 5 and not any("weight average" in name for name in switched)
    for name in switched:
        cost = float(pipeline["ms/step"]) - float(rows[name]["ms/step"])
        assert float(rows[name]["cost (ms/step)"]) == pytest.approx(cost, abs=0.01)
    loop = rows["the loop itself (every part above off)"]
    assert float(loop["cost (ms/step)"]) == pytest.approx(float(loop["ms/step"]) - bare, abs=0.01)


# ----------------------------------------------------------------------------- quality


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
    assert quality.Layout(8, 8).channels(256) == 4 and quality.Layout(8, 8).channels(1000) is None
    assert baselines.extrapolation_cell(315.2, 10) == 315.2
    assert baselines.extrapolation_cell(2.5e8, 10) == "> 1000"
    assert baselines.extrapolation_cell(None, 10) is None


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
        assert float(row["PSNR (dB)"]) == pytest.approx(-10 * math.log10(float(row["test MSE"])))
        assert float(row["PSNR - PCA (dB)"]) == pytest.approx(
            float(row["PSNR (dB)"]) - float(row["PCA PSNR (dB)"])
        )
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
    planned = quality.plan({"sized": sized}, [64, 256], tmp_path, quality.QUICK)
    assert [(run.floats, run.overrides[len(base) :]) for run in planned] == [
        (64, ("encoder.depth=5", "encoder.stem_pool=true", "model.latent_channels=64")),
        (256, ("encoder.depth=5", "encoder.stem_pool=true", "model.latent_channels=256")),
    ]  # formatted per size, and no model.latent_channels of the benchmark's own
    assert planned[1].folder.path == tmp_path / "quality" / "sized" / "256"
    command = quality.train_command(planned[1], 3)
    assert command[1:3] == ["-m", "autoencoder.train"] and "trainer.max_epochs=3" in command
    # without a budget of its own, a recipe keeps its planned length (and its schedule)
    assert not any(
        a.startswith("trainer.max_epochs") for a in quality.train_command(planned[1], None)
    )
    assert quality.needs_training(planned[1].folder, None)
    assert planned[1].recipe and planned[1].budget(None) is None and planned[1].budget(3) == 3
    (plain,) = quality.plan({"plain": (*base, "layout=depth2")}, [256], tmp_path, quality.QUICK)
    assert not plain.recipe and plain.budget(None) == quality.DEFAULT_EPOCHS

    unsized = (*base, "layout=depth2", "model.latent_channels={floats}")
    with pytest.raises(ConfigError, match=r"gives 64 x 8 x 8 = 4096 latent floats, not 64") as info:
        quality.plan({"unsized": unsized}, [64], tmp_path, quality.QUICK)
    assert "make it set model.latent_channels=1 (its latent grid is 8 x 8)" in str(info.value)


def test_pcas_note_names_the_split_it_was_fitted_on(arrays: Path, tmp_path: Path) -> None:
    base = ("data=arrays", f"data.path={arrays}", "encoder.weights=null", "layout=depth2")
    same = quality.plan(
        {"a": base, "b": (*base, "data.batch_size=8", "data.horizontal_flip=true")},
        [256],
        tmp_path,
        quality.FULL,
    )
    assert quality.pca_note(same) == (
        "PCA: fitted on the training split of a, as many components as latent floats; every "
        "config trains on the same split."
    )
    fewer = quality.plan(
        {"a": base, "b": (*base, "data.train_subset=40")}, [256], tmp_path, quality.FULL
    )
    assert "Other configs set other data (b: data.train_subset=40)" in quality.pca_note(fewer)


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


# ----------------------------------------------------------------------------- ranking


def fake_sweep(folder: Path, values: list[float | None]) -> Path:
    folder.mkdir(parents=True)
    with (folder / "summary.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["job", "status", "seed", "test/psnr"])
        writer.writeheader()
        for job, value in enumerate(values):
            failed = value is None
            writer.writerow(
                {
                    "job": job,
                    "status": "FAILED" if failed else "COMPLETED",
                    "seed": job + 1,
                    "test/psnr": "" if failed else value,
                }
            )
    return folder


def test_a_candidate_is_adopted_only_when_its_gain_exceeds_both_spreads(tmp_path: Path) -> None:
    sweeps = {
        "base": (fake_sweep(tmp_path / "base", [25.0, 25.2]), ""),
        "clear": (fake_sweep(tmp_path / "clear", [25.6, 25.7]), "callbacks=ema"),
        "noisy": (fake_sweep(tmp_path / "noisy", [24.6, 26.0]), "model.lr=3e-3"),
        "failed": (fake_sweep(tmp_path / "failed", [None, 25.05]), "data.batch_size=32"),
        "running": (tmp_path / "running", "decoder.width=1.5"),
    }
    result = run_script(
        "benchmark.py",
        "--output",
        str(tmp_path / "out"),
        "rank",
        "--baseline",
        "base",
        *(f"--sweep={n}={folder}:{varied}" for n, (folder, varied) in sweeps.items()),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "out" / "ranking.csv").open()))
    assert [row["candidate"] for row in rows] == ["base", "clear", "noisy", "failed"]
    by_name = {row["candidate"]: row for row in rows}
    assert by_name["clear"]["adopt"] == "yes"  # +0.55 dB, spreads 0.1 and 0.2
    assert float(by_name["clear"]["gain"]) == pytest.approx(0.55)
    assert by_name["noisy"]["adopt"] == "no"  # +0.2 dB mean, but a 1.4 dB spread
    assert by_name["failed"]["seeds"] == "1" and by_name["failed"]["test/psnr"] == "25.05"
    assert by_name["clear"]["overrides"] == "callbacks=ema"
    assert "not finished yet: running" in (tmp_path / "out" / "ranking.md").read_text()
