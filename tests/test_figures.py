"""The README's figures: drawn from the model and from a run's csv log."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from autoencoder import figures
from autoencoder.config import compose_config, instantiate
from autoencoder.examples import train_tiny_run
from autoencoder.figures import architecture, phases, trace
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.runs import build_model


def test_the_trace_follows_an_image_through_encoder_latent_and_decoder() -> None:
    model = Autoencoder(Encoder("resnet18", weights=None, depth=2), latent_channels=4)
    tensors = [(t.label, t.part, t.shape) for t in trace(model)]
    assert tensors[:4] == [
        ("image", "image", (3, 32, 32)),
        ("stem", "encoder", (64, 8, 8)),
        ("layer1", "encoder", (64, 8, 8)),
        ("bottleneck (1x1 conv)", "latent", (4, 8, 8)),
    ]
    assert tensors[-2][0] == "mirrors stem (4x up)"
    assert tensors[-1] == ("output conv, sigmoid", "image", (3, 32, 32))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The figure each drawing function saves, kept open to read what it drew."""
    kept: dict[str, Any] = {}
    save = figures.save_figure

    def keep(figure: Any, path: Path, **kwargs: Any) -> Path:
        kept["figure"] = figure  # closed by pyplot, still readable
        return save(figure, path, **kwargs)

    monkeypatch.setattr(figures, "save_figure", keep)
    return kept


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_the_architecture_figure_draws_a_box_per_tensor_of_the_model(
    tmp_path: Path, drawn: dict[str, Any]
) -> None:
    """One box per tensor of the default experiment's model, its height the tensor's side
    (a 32 px image: 2.2 units), the latent's shape and floats (4 x 8 x 8 = 256) written under
    it; 12 x 3.6 in at 150 dpi."""
    path = architecture(tmp_path / "architecture.png")
    assert png_size(path) == (1800, 540)
    cfg = compose_config("train", *figures.ARCHITECTURE_MODEL)
    model = build_model(cfg, instantiate(cfg.encoder))
    tensors = trace(model)
    (ax,) = drawn["figure"].axes
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == pytest.approx([t.shape[1] * 2.2 / 32 for t in tensors])
    assert heights[0] == pytest.approx(2.2) and tensors[0].shape == (3, 32, 32)
    (latent,) = [t for t in tensors if t.part == "latent"]
    channels, height, width = latent.shape
    floats = model.bottleneck_summary(32, 32)["latent_floats"]
    assert (channels, height, width, floats) == (4, 8, 8, 256)  # the default experiment's
    texts = [text.get_text() for text in ax.texts]
    assert f"{channels}x{height}x{width}\n= {floats} floats" in texts


def logged(run: Path, column: str) -> tuple[list[float], list[float]]:
    with (run / "csv" / "metrics.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get(column)]
    return [float(row["step"]) for row in rows], [float(row[column]) for row in rows]


def test_the_phases_figure_draws_the_runs_logged_rates_and_psnr(
    tmp_path: Path, drawn: dict[str, Any]
) -> None:
    """The lines are the run's csv columns (the decoder's rate, each stage's, the validation
    PSNR) and phase 1 is shaded up to the step where the log's phase turns 2, the end of
    the tiny run's one frozen epoch; 9 x 5.4 in at 150 dpi."""
    run = train_tiny_run(tmp_path / "run")
    path = phases(run, tmp_path / "phases.png", "command")
    assert png_size(path) == (1350, 810)
    top, bottom = drawn["figure"].axes
    with (run / "csv" / "metrics.csv").open(newline="") as file:
        columns = next(csv.reader(file))
    rates = {c.split("/", 1)[1]: logged(run, c) for c in columns if c.startswith("lr-")}
    assert set(rates) == {"decoder", "encoder.stem", "encoder.layer1", "encoder.layer2"}
    *plotted, marker = top.get_lines()  # the rates, then the transition's vertical line
    lines = {line.get_label(): line for line in plotted}
    assert set(lines) == {
        "decoder (and bottleneck)",
        "encoder.stem",
        "encoder.layer1",
        "encoder.layer2",
    }
    for name, (steps, values) in rates.items():
        line = lines["decoder (and bottleneck)" if name == "decoder" else name]
        assert list(line.get_xdata()) == steps and list(line.get_ydata()) == values
    psnr, bottom_marker = bottom.get_lines()
    assert (list(psnr.get_xdata()), list(psnr.get_ydata())) == logged(run, "val/psnr")
    phase_steps, phase_values = logged(run, "finetune/phase")
    transition = next(s for s, v in zip(phase_steps, phase_values, strict=True) if v == 2)
    assert transition == 4  # 4 steps per epoch (64 images, batch 16), one frozen epoch
    assert list(marker.get_xdata()) == list(bottom_marker.get_xdata()) == [transition] * 2
    (shaded,) = top.patches  # phase 1, from step 0 to the transition
    assert shaded.get_x() == 0 and shaded.get_width() == pytest.approx(transition)
