"""Evaluating a checkpoint: metrics, grids, worst images, classifier accuracy, user errors.

The checkpoint is the session's trained run (``run`` in conftest.py).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from autoencoder.errors import ConfigError
from autoencoder.evaluate import evaluate, load_classifier
from autoencoder.grids import comparison_grid
from autoencoder.runs import checkpoint_file, data_config, load_autoencoder, load_run_config
from tests.conftest import (
    NUM_CLASSES,
    NUM_TEST,
    TrainedRun,
    compose_job,
    run_script,
    write_arrays,
)


def test_script_writes_metrics_grids_worst_images_and_classifier_accuracy(
    run: TrainedRun, tmp_path: Path
) -> None:
    out = tmp_path / "evaluation"
    result = run_script(
        "evaluate.py",
        f"ckpt_path={run.ckpt}",
        f"classifier_weights={run.classifier_weights}",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())

    # The run's data and best checkpoint: the training job's own test metrics, recomputed.
    assert metrics["num_images"] == NUM_TEST
    for key in ("test/mse", "test/mae", "test/psnr", "test/ssim"):
        assert math.isfinite(metrics[key])
        assert metrics[key] == pytest.approx(run.metrics[key], rel=1e-4), key

    # Accuracy on the originals is the classifier's own, computed here independently.
    net = torchvision.models.get_model("resnet18", num_classes=NUM_CLASSES)
    net.load_state_dict(torch.load(run.classifier_weights, weights_only=True))
    test = np.load(run.arrays_dir / "test.npz")
    images = torch.from_numpy(test["images"]).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model = load_autoencoder(run.ckpt, load_run_config(run.ckpt))
    with torch.no_grad():
        predicted = net.eval()((images - mean) / std).argmax(1).numpy()
        reconstructions = model(images).float()
        predicted_back = net((reconstructions - mean) / std).argmax(1).numpy()
    expected = float((predicted == test["labels"]).mean())
    assert metrics["test/acc_original"] == pytest.approx(expected, abs=1e-6)
    expected_back = float((predicted_back == test["labels"]).mean())
    assert metrics["test/acc_reconstruction"] == pytest.approx(expected_back, abs=1e-6)

    worst = metrics["worst"]
    assert len(worst) == 16 and len({item["index"] for item in worst}) == 16
    assert all(0 <= item["index"] < NUM_TEST for item in worst)
    errors = [item["mse"] for item in worst]
    assert errors == sorted(errors, reverse=True) and errors[-1] > 0
    assert errors[0] >= metrics["test/mse"]  # the worst image is worse than the average
    captions = (out / "worst.txt").read_text().splitlines()
    assert len(captions) == 17 and f"test index {worst[0]['index']:6d}" in captions[1]

    with (out / "metrics.csv").open() as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["metric", "value"]
    assert {name: float(value) for name, value in rows[1:]} == pytest.approx(
        {
            k: v
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and k != "schema_version"
        }
    )

    # 32 px images enlarged 3x, each row of 8 above its reconstructions
    test_images = torch.from_numpy(np.load(run.arrays_dir / "test.npz")["images"])
    test_images = test_images.permute(0, 3, 1, 2).float() / 255
    shown, _ = comparison_grid(test_images[:NUM_TEST], test_images[:NUM_TEST])
    worst_indices = [item["index"] for item in worst]
    worst_grid, worst_layout = comparison_grid(
        test_images[worst_indices],
        test_images[worst_indices],
        captions=[f"#{item['index']} {-10 * math.log10(item['mse']):.1f} dB" for item in worst],
    )
    for name, expected in {"reconstructions.png": shown, "worst.png": worst_grid}.items():
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size == expected.size
            grid = np.asarray(image.convert("RGB"))
        reference = np.asarray(expected)
        # the originals' tiles are the test images, pixel for pixel
        left, top = worst_layout.box(0, reconstruction=False)
        size = worst_layout.tile_height
        if name == "worst.png":
            np.testing.assert_array_equal(
                grid[top : top + size, left : left + size],
                reference[top : top + size, left : left + size],
            )
            # and the captions (index and PSNR) are the ones expected
            caption_top = worst_layout.box(0, reconstruction=True)[1] + size
            band = slice(caption_top, caption_top + worst_layout.caption_height)
            np.testing.assert_array_equal(grid[band], reference[band])


def test_missing_run_config_names_the_path_and_the_override(
    run: TrainedRun, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "checkpoints" / "model.ckpt"
    moved.parent.mkdir(parents=True)
    shutil.copy(run.ckpt, moved)
    expected = tmp_path / "elsewhere" / ".hydra" / "config.yaml"
    cfg = compose_job("evaluate", f"ckpt_path={moved}", output_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match=rf"{expected}.*model_config=PATH"):
        evaluate(cfg)
    given = load_run_config(moved, str(run.run_dir / ".hydra" / "config.yaml"))
    assert given.encoder.depth == 3 and given.model.latent_channels == 16

    with pytest.raises(ConfigError, match="ckpt_path is required"):
        checkpoint_file(None)


def test_data_is_the_runs_unless_replaced_or_edited(run: TrainedRun, tmp_path: Path) -> None:
    run_cfg = load_run_config(run.ckpt)
    ckpt = f"ckpt_path={run.ckpt}"
    default = data_config(compose_job("evaluate", ckpt, output_dir=tmp_path).get("data"), run_cfg)
    assert default == run_cfg.data

    edited = data_config(
        compose_job("evaluate", ckpt, "+data.batch_size=8", output_dir=tmp_path).data, run_cfg
    )
    assert edited.batch_size == 8 and edited.path == run_cfg.data.path

    replaced = data_config(
        compose_job("evaluate", ckpt, "data=cifar10", output_dir=tmp_path).data, run_cfg
    )
    assert replaced._target_.endswith("CIFAR10DataModule")
    assert replaced.root == "data"  # ${paths.data_dir} resolves in the evaluation config


def test_classifier_accuracy_needs_labels(run: TrainedRun, tmp_path: Path) -> None:
    unlabelled = write_arrays(tmp_path / "unlabelled", labelled=False)
    cfg = compose_job(
        "evaluate",
        f"ckpt_path={run.ckpt}",
        f"classifier_weights={run.classifier_weights}",
        "data=arrays",
        f"data.path={unlabelled}",
        "data.num_workers=0",
        output_dir=tmp_path / "out",
    )
    with pytest.raises(ConfigError, match="needs labelled test images"):
        evaluate(cfg)


def test_weights_without_a_head_are_refused(run: TrainedRun, tmp_path: Path) -> None:
    state = torch.load(run.classifier_weights, weights_only=True)
    assert load_classifier(str(run.classifier_weights), "resnet18").num_classes == NUM_CLASSES
    headless = tmp_path / "headless.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, headless)
    with pytest.raises(ConfigError, match="no classifier head"):
        load_classifier(str(headless), "resnet18")


def test_latent_noise_lowers_the_psnr_from_the_plain_reconstructions(
    run: TrainedRun, tmp_path: Path
) -> None:
    cfg = compose_job(
        "evaluate",
        f"ckpt_path={run.ckpt}",
        "latent_noise=[0,0.5,2]",
        "probe=false",
        output_dir=tmp_path / "noise",
    )
    summary = evaluate(cfg)
    noisy = [summary[f"test/psnr_latent_noise_{scale}"] for scale in ("0", "0.5", "2")]
    # no noise: the reconstructions' own PSNR; then lower with every larger scale
    assert noisy[0] == pytest.approx(summary["test/psnr"], abs=1e-3)
    assert noisy[0] > noisy[1] > noisy[2]
