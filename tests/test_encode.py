"""Encoding datasets and image folders to latents, and exporting the trained encoder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoencoder.encode import encode, load_encoder
from autoencoder.runs import load_autoencoder, load_run_config
from tests.conftest import (
    NUM_CLASSES,
    NUM_TEST,
    NUM_TRAIN,
    TrainedRun,
    compose_job,
    make_images,
    run_script,
)


def read_index(folder: Path) -> list[dict[str, str]]:
    with (folder / "index.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_script_encodes_every_split_and_exports_the_encoder(
    run: TrainedRun, tmp_path: Path
) -> None:
    out, exported = tmp_path / "encoded", tmp_path / "export" / "encoder.pt"
    result = run_script(
        "encode.py",
        f"ckpt_path={run.ckpt}",
        "split=all",
        f"export_encoder={exported}",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    latents = np.load(out / "latents.npy")
    assert latents.dtype == np.float32
    assert latents.shape == (NUM_TRAIN + NUM_TEST, run.metrics["latent_floats"])
    rows = read_index(out)
    assert [int(row["row"]) for row in rows] == list(range(len(latents)))
    by_split = {split: [r for r in rows if r["split"] == split] for split in ("train", "val")}
    test_rows = [row for row in rows if row["split"] == "test"]
    # train and val partition the rows of train.npz; test is test.npz in order
    train_val = [int(row["source"]) for row in by_split["train"] + by_split["val"]]
    assert sorted(train_val) == list(range(NUM_TRAIN)) and len(by_split["val"]) == 10
    assert [int(row["source"]) for row in test_rows] == list(range(NUM_TEST))
    assert all(int(row["label"]) == int(row["source"]) % NUM_CLASSES for row in rows)
    summary = json.loads((out / "latents.json").read_text())
    assert summary["latent_shape"] == [16, 4, 4] and summary["num_images"] == len(rows)

    # The export alone reproduces the model's latents, and latents.npy is them flattened.
    model = load_autoencoder(run.ckpt, load_run_config(run.ckpt))
    encoder = load_encoder(exported)
    images = torch.from_numpy(np.load(run.arrays_dir / "test.npz")["images"])
    images = images.permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = model.encode(images)
        torch.testing.assert_close(encoder(images), expected)
    first_test = int(test_rows[0]["row"])
    np.testing.assert_allclose(
        latents[first_test:], expected.flatten(1).numpy(), rtol=1e-4, atol=1e-5
    )
    meta = json.loads(exported.with_suffix(".json").read_text())
    assert (meta["name"], meta["depth"], meta["latent_channels"]) == ("resnet18", 3, 16)
    assert torch.load(exported, weights_only=True).keys() == encoder.state_dict().keys()

    # the latents' statistics, for a diffusion model trained on them: per channel over the
    # encoded images, and the factor that brings them to unit variance
    statistics = summary["statistics"]
    maps = latents.reshape(len(latents), 16, 4, 4).astype(np.float64)
    assert statistics["images"] == len(latents)
    np.testing.assert_allclose(statistics["channel_mean"], maps.mean((0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(statistics["channel_std"], maps.std((0, 2, 3)), rtol=1e-4)
    assert statistics["std"] == pytest.approx(maps.std(), rel=1e-4)
    assert statistics["scale_factor"] == pytest.approx(1 / maps.std(), rel=1e-4)
    assert np.std(latents * statistics["scale_factor"]) == pytest.approx(1.0, rel=1e-3)
    assert meta["latent_statistics"] == statistics  # the export records them


def test_an_image_folder_is_indexed_by_file_path(run: TrainedRun, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    files = []
    for index, image in enumerate(make_images(12, seed=5)):
        file = folder / ("nested" if index % 2 else "") / f"image{index:02d}.png"
        Image.fromarray(image).save(file)
        files.append(file)
    out = tmp_path / "encoded"
    summary = encode(
        compose_job(
            "encode",
            f"ckpt_path={run.ckpt}",
            "data=folder",
            f"data.path={folder}",
            "data.num_workers=0",
            "split=all",
            output_dir=out,
        )
    )
    rows = read_index(out)
    assert summary["num_images"] == 12 and np.load(out / "latents.npy").shape == (12, 256)
    assert sorted(row["source"] for row in rows) == sorted(map(str, files))
    assert {row["label"] for row in rows} == {"-1"}

    # each row is the latent of the file it names
    model = load_autoencoder(run.ckpt, load_run_config(run.ckpt))
    row = rows[-1]
    image = torch.from_numpy(np.asarray(Image.open(row["source"])).copy())
    with torch.no_grad():
        expected = model.encode(image.permute(2, 0, 1)[None].float() / 255).flatten(1)
    latents = np.load(out / "latents.npy")
    np.testing.assert_allclose(latents[int(row["row"])], expected[0].numpy(), rtol=1e-4, atol=1e-5)
