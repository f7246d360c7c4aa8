"""The README's and docs' figures, drawn from the model and from real training runs.

    python -m autoencoder.figures [--output docs/figures] [--runs outputs/figures] [NAME ...]

(``python scripts/figures.py`` is the same.) NAME: ``architecture``, ``phases``,
``quickstart`` (default: all three). ``architecture`` traces one image through the default
experiment's model and draws every tensor it passes; ``phases`` trains a short two-phase run
on generated pictures with csv logs and plots each parameter group's learning rate per step;
``quickstart`` trains ``experiment=quickstart`` and keeps its grid of test reconstructions
(about a minute each on 2 CPU cores). Runs go through ``python -m autoencoder.train`` as a
user runs it, into a new folder under ``--runs``.

matplotlib comes with the ``dev`` extra; :mod:`autoencoder.plotting` imports it when a
figure is drawn.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from autoencoder.cli import job_command, launch
from autoencoder.config import compose_config, instantiate
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.plotting import pyplot, save_figure
from autoencoder.run_folder import RunFolder
from autoencoder.runs import build_model

# The model drawn: the default experiment's, built without downloading weights.
ARCHITECTURE_MODEL = ("experiment=cifar10_resnet18", "encoder.weights=null")
# Three encoder stages (stem, layer1, layer2) make the discriminative spread visible; 24 steps
# per epoch: phase 1 is the first epoch, the warm-up of at least 100 steps ends in the
# sixth. The encoder is random: the rates do not depend on its weights.
PHASES_RUN = (
    "experiment=smoke",
    "data.num_train=384",
    "data.batch_size=16",
    "trainer.max_epochs=8",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
)
QUICKSTART_RUN = ("experiment=quickstart", "trainer.enable_progress_bar=false")
FIGURES = ("architecture", "phases", "quickstart")


def train_run(overrides: Sequence[str], runs: Path, name: str) -> Path:
    """Run ``python -m autoencoder.train`` with ``overrides`` into a new folder
    ``runs/<name>-<time>``."""
    run_dir = runs / f"{name}-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    launch(job_command("train", *overrides, f"hydra.run.dir={run_dir}"))
    return run_dir


# -- architecture --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One tensor on the way through the model: where it comes from, and its shape."""

    label: str
    part: str  # "image", "encoder", "latent" or "decoder"
    shape: tuple[int, int, int]


def trace(model: Autoencoder, size: int = 32) -> list[Tensor]:
    """The tensors one ``size`` x ``size`` image passes: the output of every encoder stage,
    the latent, and the output of every decoder block."""
    model.eval()
    kernel = model.bottleneck.kernel_size[0]
    named: list[tuple[str, str, torch.nn.Module]] = [
        *((name, "encoder", stage) for name, stage in model.encoder.stages.items()),
        (f"bottleneck ({kernel}x{kernel} conv)", "latent", model.bottleneck),
        ("input conv", "decoder", model.decoder.input),
        *(
            (f"mirrors {stage}", "decoder", block)
            for stage, block in zip(
                reversed(model.encoder.stage_names), model.decoder.blocks, strict=True
            )
        ),
        ("output conv, sigmoid", "image", model.decoder.output),
    ]
    found: list[Tensor] = [Tensor("image", "image", (3, size, size))]
    # a vision transformer's stages pass tokens: their feature map is what is drawn
    as_map = model.encoder.feature_map
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, label=label, part=part: found.append(
                Tensor(label, part, tuple((as_map(out) if part == "encoder" else out).shape[1:]))
            )
        )
        for label, part, module in named
    ]
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    for index, (before, after) in enumerate(pairwise(found)):
        scale = after.shape[1] // before.shape[1]
        if scale > 1:
            found[index + 1] = Tensor(f"{after.label} ({scale}x up)", after.part, after.shape)
    return found


PART_COLOURS = {
    "image": "#d9d9d9",
    "encoder": "#9ecae1",
    "latent": "#fdae6b",
    "decoder": "#a1d99b",
}


def architecture(path: Path, overrides: Sequence[str] = ARCHITECTURE_MODEL) -> Path:
    """Boxes for the tensors of :func:`trace` (height: resolution, width: channels)."""
    cfg = compose_config("train", *overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "unused"
    model = build_model(cfg, instantiate(cfg.encoder))
    tensors = trace(model)
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(12, 3.6))
    centres, right = _tensor_boxes(plt, ax, tensors)
    _part_captions(ax, tensors, centres)
    cut = f"{cfg.encoder.name} cut after {model.encoder.stage_names[-1]}"
    if not model.encoder.stem_pool:
        cut += " without its first max-pool"
    ax.set_title(
        f"{cut} ({' '.join(overrides[:1])}): no skip connections, everything passes the latent",
        fontsize=10,
    )
    figure.text(
        0.99,
        0.02,
        "box height: image side; box width: log2 of channels",
        ha="right",
        fontsize=7,
        color="0.4",
    )
    ax.set_xlim(-0.3, right)
    ax.set_ylim(-3.1, 2.6)
    ax.axis("off")
    return save_figure(figure, path, dpi=150)


def _tensor_boxes(plt: Any, ax: Any, tensors: Sequence[Tensor]) -> tuple[list[float], float]:
    """One box per tensor, left to right, each labelled with its name and shape and joined
    to the one before by an arrow; the boxes' centres, and the right end of the last gap."""
    x, gap, scale = 0.0, 0.55, 2.2 / 32
    centres: list[float] = []
    previous_right = 0.0
    for tensor in tensors:
        channels, height, width = tensor.shape
        box_width = 0.25 + 0.12 * channels.bit_length()
        box_height = height * scale
        ax.add_patch(
            plt.Rectangle(
                (x, -box_height / 2),
                box_width,
                box_height,
                facecolor=PART_COLOURS[tensor.part],
                edgecolor="black",
                linewidth=0.8,
            )
        )
        centre = x + box_width / 2
        ax.text(centre, 1.3, tensor.label, ha="center", va="bottom", fontsize=8, rotation=25)
        shape = f"{channels}x{height}x{width}"
        if tensor.part == "latent":
            shape += f"\n= {channels * height * width} floats"
        elif tensor.part == "image":
            shape += "\npixels in [0, 1]"
        ax.text(centre, -1.25, shape, ha="center", va="top", fontsize=8)
        if centres:
            ax.annotate(
                "",
                xy=(x - 0.04, 0),
                xytext=(previous_right + 0.04, 0),
                arrowprops={"arrowstyle": "->", "linewidth": 0.8},
            )
        centres.append(centre)
        previous_right = x + box_width
        x += box_width + gap
    return centres, x


def _part_captions(ax: Any, tensors: Sequence[Tensor], centres: Sequence[float]) -> None:
    """A caption under the encoder's boxes and one under the bottleneck's and decoder's."""
    for part, text in (
        (
            "encoder",
            "encoder: pretrained stages, one parameter group each\n"
            "(frozen in phase 1, discriminative rates in phase 2)",
        ),
        ("decoder", "bottleneck and decoder: trained here,\nparameter group 'decoder'"),
    ):
        xs = [c for c, t in zip(centres, tensors, strict=True) if t.part == part]
        if part == "decoder":
            xs += [c for c, t in zip(centres, tensors, strict=True) if t.part == "latent"]
        ax.text(
            (min(xs) + max(xs)) / 2, -2.2, text, ha="center", va="top", fontsize=8.5, color="0.2"
        )


# -- phases --------------------------------------------------------------------------------


def read_csv_log(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of a run's ``csv/metrics.csv`` (``logger=csv``)."""
    with RunFolder(run_dir).csv_log.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def series(rows: list[dict[str, str]], column: str) -> tuple[list[float], list[float]]:
    """Steps and values of the rows where ``column`` was logged."""
    points = [(float(row["step"]), float(row[column])) for row in rows if row.get(column)]
    return [step for step, _ in points], [value for _, value in points]


def phases(run_dir: Path, path: Path, command: str = "") -> Path:
    """Every parameter group's learning rate per step (``lr-<optimiser>/<group>`` of
    Lightning's ``LearningRateMonitor``) above the validation PSNR, phase 1 shaded."""
    columns, rows = read_csv_log(run_dir)
    rate_columns = [c for c in columns if c.startswith("lr-")]
    decoder = [c for c in rate_columns if c.endswith("/decoder")]
    # lowest stage first: with discriminative rates, the lowest final rate
    encoder = sorted(
        (c for c in rate_columns if c not in decoder), key=lambda c: (series(rows, c)[1][-1], c)
    )
    phase_steps, phase_values = series(rows, "finetune/phase")
    transition = next((s for s, v in zip(phase_steps, phase_values, strict=True) if v >= 2), None)
    plt = pyplot()
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.4), sharex=True, height_ratios=[2.2, 1]
    )
    colours = plt.cm.Blues(
        [0.45 + 0.55 * i / max(1, len(encoder) - 1) for i in range(len(encoder))]
    )
    for column, colour in zip(encoder, colours, strict=True):
        steps, values = series(rows, column)
        top.plot(steps, values, drawstyle="steps-post", color=colour, label=column.split("/", 1)[1])
    for column in decoder:
        steps, values = series(rows, column)
        top.plot(
            steps,
            values,
            drawstyle="steps-post",
            color="tab:green",
            linestyle="--",
            linewidth=2,
            label="decoder (and bottleneck)",
        )
    top.set_ylabel("learning rate")
    top.legend(fontsize=8, loc="center right")
    steps, psnr = series(rows, "val/psnr")
    bottom.plot(steps, psnr, "o-", color="tab:orange", markersize=4)
    bottom.set_ylabel("val PSNR (dB)")
    bottom.set_xlabel("training step")
    if transition is not None:
        _mark_phases(top, bottom, transition)
    top.set_title("learning rate per parameter group, from the csv log of a real run", fontsize=10)
    if command:
        figure.text(0.01, 0.005, command, fontsize=6.5, color="0.35", family="monospace")
    return save_figure(figure, path, dpi=150, rect=(0, 0.03, 1, 1))


def _mark_phases(top: Any, bottom: Any, transition: float) -> None:
    """Shade phase 1 on both axes up to the step of the ``transition``, and name both
    phases on the top one."""
    for ax in (top, bottom):
        ax.axvspan(0, transition, color="0.92", zorder=0)
        ax.axvline(transition, color="k", linestyle=":", linewidth=1)
    top.text(
        transition / 2,
        top.get_ylim()[1] * 0.5,
        "phase 1: encoder frozen",
        ha="center",
        va="center",
        rotation=90,
        fontsize=8,
    )
    top.text(
        transition + 4,
        top.get_ylim()[1] * 0.9,
        "phase 2: unfrozen, warmed up to rates divided\nby the factor at each stage below",
        ha="left",
        va="top",
        fontsize=8,
    )


# -- quickstart ----------------------------------------------------------------------------


def quickstart(run_dir: Path, path: Path) -> Path:
    """The run's grid of test images (top rows) and their reconstructions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "reconstructions" / "test.png", path)
    return path


def make(names: Sequence[str], output: Path, runs: Path) -> list[Path]:
    """Draw the figures ``names`` into ``output``, training their runs under ``runs``."""
    written = []
    if "architecture" in names:
        written.append(architecture(output / "architecture.png"))
    if "phases" in names:
        run_dir = train_run(PHASES_RUN, runs, "phases")
        command = "python scripts/train.py " + " ".join(PHASES_RUN)
        written.append(phases(run_dir, output / "two_phases.png", command))
    if "quickstart" in names:
        run_dir = train_run(QUICKSTART_RUN, runs, "quickstart")
        written.append(quickstart(run_dir, output / "quickstart_reconstructions.png"))
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m autoencoder.figures [--output DIR] [--runs DIR] [NAME ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(FIGURES)}")
    parser.add_argument("--output", type=Path, default=Path("docs/figures"))
    parser.add_argument("--runs", type=Path, default=Path("outputs/figures"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    for path in make(args.names or FIGURES, args.output, args.runs):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
