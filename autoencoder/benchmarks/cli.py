"""The benchmark suite: tables as CSV and Markdown (and figures) under --output.

    python -m autoencoder.benchmarks speed    --data-dir DIR [--steps 20 --warmup 5]
                                              [--device cpu|cuda] [--overhead]
                                              [--rounds N [--name ratio]] [OVERRIDES ...]
    python -m autoencoder.benchmarks transfer --data-dir DIR --source RUN_DIR
                                              | --split NAME=RUN_DIR:CLASSES [...]
                                              [--classifier-weights PT]
                                              [--candidate NAME=OVERRIDES ...]
                                              [--regimes 100 1000 5000] [--epochs 5]
                                              [--seeds 3 5000=2] [--strategies ...]
                                              [--long-epochs 20 --long-regimes 1000
                                               --long-strategies ...]
                                              [--target-classes 5 6 7 8 9]
                                              [--probe-train-images 10000] [--from]
                                              [OVERRIDES ...]
    python -m autoencoder.benchmarks quality  --data-dir DIR [--floats 64 256 1024]
                                              [--epochs 20] [--config NAME=OVERRIDES ...]
                                              [--full] [--from] [OVERRIDES ...]

    python -m autoencoder.benchmarks rank --baseline NAME --sweep NAME=DIR[:OVERRIDES] [...]
                                          [--metric test/psnr] [--name ranking]

(``python scripts/benchmark.py`` is the same.) OVERRIDES are Hydra overrides of
``python -m autoencoder.train`` (for example encoder.depth=2), applied to every run of the
part; after an option that takes a list (--regimes, --strategies, --floats, ...) they
follow ``--``, or argparse reads them as more of its values. Training runs go under
--runs, tables and figures under --output; --from summarises runs already under --runs
instead of training.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from autoencoder.benchmarks import quality, ranking, ratio, speed, transfer
from autoencoder.benchmarks.plots import speed_bars
from autoencoder.benchmarks.transfer import finished_source
from autoencoder.cli import exit_with_message
from autoencoder.errors import AutoencoderError, ConfigError
from autoencoder.inputs import existing_file, existing_folder, torch_device


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, check its arguments, then run the part it names; a mistake
    in the arguments or a failed step ends it with one ``error:`` line and status 1."""
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        RUNNERS[args.part](args)
    except AutoencoderError as error:
        exit_with_message(error)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark suite's arguments: the shared ones, then one sub-parser per part."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/benchmark"), help="tables and figures"
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("outputs/benchmark"), help="the training runs"
    )
    parts = parser.add_subparsers(dest="part", required=True)
    speed_part = parts.add_parser("speed", help="pipeline vs bare loop, loader, step costs")
    _add_speed_arguments(speed_part)
    transfer_part = parts.add_parser("transfer", help="pretrained vs scratch, per geometry")
    _add_transfer_arguments(transfer_part)
    quality_part = parts.add_parser("quality", help="test PSNR at fixed latent sizes vs PCA")
    _add_quality_arguments(quality_part)
    rank_part = parts.add_parser("rank", help="candidate sweeps against a baseline, by seeds")
    _add_rank_arguments(rank_part)
    for part in (speed_part, transfer_part, quality_part):
        part.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """What the arguments alone decide, before anything is launched: the data folder holds
    train.npz and test.npz, the files and devices named exist."""
    if getattr(args, "data_dir", None):
        args.data_dir = existing_folder(
            "--data-dir",
            args.data_dir,
            "Pass a folder with train.npz and test.npz (CIFAR-10 as arrays, docs/results.md).",
            ("train.npz", "test.npz"),
        ).resolve()
    if args.part == "speed" and args.device:
        torch_device("--device", args.device)
    if args.part == "transfer":
        _check_splits(args)
        if args.classifier_weights:
            existing_file(
                "--classifier-weights",
                args.classifier_weights,
                "Pass the encoder_weights.pt written by scripts/pretrain_encoder.py.",
            )
        if not args.splits:
            finished_source(args.source)
        for name, (source, _) in args.splits.items():
            finished_source(source, f"--split {name}:")


def _check_splits(args: argparse.Namespace) -> None:
    """``--source`` (with ``--target-classes``), or ``--split`` once per split, not both;
    the splits parsed into ``args.splits`` (name: source run folder, target classes)."""
    if bool(args.source) == bool(args.split):
        raise ConfigError(
            "transfer: give --source RUN_DIR (one split: the source run, and --target-classes), "
            "or --split NAME=RUN_DIR:CLASSES once per split (e.g. --split "
            "k0=outputs/k0/source:5,6,7,8,9), not both."
        )
    if args.split and args.target_classes:
        raise ConfigError(
            "transfer: --target-classes is for --source; each --split names its own "
            "(NAME=RUN_DIR:5,6,7,8,9)."
        )
    args.splits = {}
    for entry in args.split or []:
        name, _, rest = entry.partition("=")
        folder, _, classes = rest.rpartition(":")
        try:
            labels = [int(label) for label in classes.split(",")]
        except ValueError:
            labels = []
        if not name or not folder or not labels or name in args.splits:
            raise ConfigError(
                f"--split {entry!r}: write NAME=RUN_DIR:CLASSES with a new NAME, e.g. "
                "--split k0=outputs/k0/source:5,6,7,8,9 (the source run, the target labels)."
            )
        args.splits[name] = (Path(folder), labels)
    args.candidates = [transfer.candidate(entry) for entry in args.candidate]
    known = {*transfer.STRATEGIES, *(c.name for c in args.candidates)}
    unknown = [s for s in (*args.strategies, *args.long_strategies) if s not in known]
    if unknown:
        raise ConfigError(
            f"--strategies {' '.join(unknown)}: not a strategy; the strategies are "
            f"{', '.join(sorted(known))} (add one with --candidate NAME=OVERRIDES)."
        )


def _data(args: argparse.Namespace) -> list[str]:
    return ["data=arrays", f"data.path={args.data_dir}"]


# -------------------------------------------------------------------- the speed part
def _add_speed_arguments(speed_part: argparse.ArgumentParser) -> None:
    speed_part.add_argument("--data-dir", required=True, help="train.npz and test.npz")
    speed_part.add_argument("--steps", type=int, default=20)
    speed_part.add_argument("--warmup", type=int, default=5)
    speed_part.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=(*speed.VARIANTS[2:], "bare-bf16", "bare-fp32", *speed.PIPELINE_PRECISIONS),
        help="leave out a variant (repeatable), e.g. --skip bare-compile",
    )
    speed_part.add_argument(
        "--device", choices=("cpu", "cuda"), help="default: cuda when there is one"
    )
    speed_part.add_argument(
        "--overhead",
        action="store_true",
        help="the fixed cost per step, part by part, on a tiny model (overhead.csv/.md)",
    )
    speed_part.add_argument(
        "--rounds",
        type=int,
        help="the bare loop and the pipeline alternated this many times for each data path: "
        "median ratio and fixed cost with their spread (ratio.csv/.md; --name)",
    )
    speed_part.add_argument("--name", default="ratio", help="the --rounds table's file name")


def _run_speed(args: argparse.Namespace) -> None:
    overrides = [*_data(args), *args.overrides]
    if args.rounds:
        ratio.alternate(
            overrides,
            args.output,
            args.rounds,
            args.steps,
            args.warmup,
            device_name=args.device,
            name=args.name,
        )
        return
    if args.overhead:
        speed.overhead(overrides, args.output, args.steps, args.warmup, device_name=args.device)
        return
    speed.run(
        overrides,
        args.output,
        args.steps,
        args.warmup,
        tuple(args.skip),
        device_name=args.device,
    )
    speed_bars(json.loads((args.output / "speed.json").read_text()), args.output / "speed.png")


# ------------------------------------------------------------------ the quality part
def _add_quality_arguments(quality_part: argparse.ArgumentParser) -> None:
    quality_part.add_argument("--data-dir", required=True)
    quality_part.add_argument("--floats", type=int, nargs="+", default=[64, 256, 1024])
    quality_part.add_argument(
        "--epochs",
        type=int,
        help="the budget of every run (default: 20, or the config's own trainer.max_epochs "
        "for configs with the {floats} placeholder, the per-size recipes)",
    )
    quality_part.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help='a named config to compare, e.g. --config "old=encoder.depth=4" (repeatable); '
        'with {floats} in its overrides (--config "recipe=experiment=quality_{floats}") '
        "they are formatted per size and set the latent size themselves",
    )
    quality_part.add_argument(
        "--full",
        action="store_true",
        help="one resumable run per size on the whole training split, with learning curves",
    )
    quality_part.add_argument("--from", dest="summarise_only", action="store_true")


def _run_quality(args: argparse.Namespace) -> None:
    named = dict(entry.split("=", 1) for entry in args.config) or {"default": ""}
    configs = {
        name: [*_data(args), *shlex.split(text), *args.overrides] for name, text in named.items()
    }
    quality.run(
        configs,
        args.floats,
        args.epochs,
        args.runs,
        args.output,
        full=args.full,
        train=not args.summarise_only,
    )


# --------------------------------------------------------------------- the rank part
def _add_rank_arguments(rank_part: argparse.ArgumentParser) -> None:
    rank_part.add_argument(
        "--sweep",
        action="append",
        required=True,
        metavar="NAME=DIR[:OVERRIDES]",
        help="a finished (or running) multirun folder with summary.csv, and what it varies",
    )
    rank_part.add_argument("--baseline", required=True)
    rank_part.add_argument("--metric", default="test/psnr")
    rank_part.add_argument("--name", default="ranking", help="the table's file name")
    rank_part.add_argument("--digits", type=int, default=2, help="decimals of the values")


def _run_rank(args: argparse.Namespace) -> None:
    sweeps = {}
    for entry in args.sweep:
        name, _, rest = entry.partition("=")
        folder, _, varied = rest.partition(":")
        sweeps[name] = (Path(folder), varied)  # a sweep not started yet is "not finished"
    if args.baseline not in sweeps:
        raise ConfigError(
            f"--baseline {args.baseline}: no --sweep of that name; the sweeps are "
            f"{', '.join(sweeps)}."
        )
    ranking.run(sweeps, args.baseline, args.metric, args.output, args.name, args.digits)


# ----------------------------------------------------------------- the transfer part
def _add_transfer_arguments(transfer_part: argparse.ArgumentParser) -> None:
    transfer_part.add_argument("--data-dir", required=True)
    transfer_part.add_argument("--source", type=Path, help="the source autoencoder's run folder")
    transfer_part.add_argument(
        "--split",
        action="append",
        metavar="NAME=RUN_DIR:CLASSES",
        help="a source/target split: the source run trained on the other classes, the target's "
        "labels (repeatable; instead of --source): a ranking across the splits",
    )
    transfer_part.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help='a strategy of your own, e.g. "adabn_full=init_from={source} finetune=full '
        'reestimate_bn=true" (repeatable), then named in --strategies',
    )
    transfer_part.add_argument(
        "--classifier-weights", help="a classifier proxy, for the classifier_* strategies"
    )
    transfer_part.add_argument("--regimes", type=int, nargs="+", default=[100, 1000, 5000])
    transfer_part.add_argument("--epochs", type=int, default=5)
    transfer_part.add_argument(
        "--seeds",
        nargs="+",
        default=["3"],
        metavar="N|IMAGES=N",
        help="seeds 1 .. N for every regime, or per regime (5000=2)",
    )
    transfer_part.add_argument(
        "--strategies",
        nargs="+",
        default=list(transfer.STRATEGIES),
        help=f"of {', '.join(transfer.STRATEGIES)} and the --candidate names",
    )
    transfer_part.add_argument(
        "--long-epochs", type=int, help="a longer budget, for the asymptote (e.g. 20)"
    )
    transfer_part.add_argument("--long-regimes", type=int, nargs="+", default=[1000])
    transfer_part.add_argument("--long-strategies", nargs="+", default=[])
    transfer_part.add_argument(
        "--target-classes", type=int, nargs="+", help="the labels the targets train on"
    )
    transfer_part.add_argument(
        "--probe-train-images", type=int, default=10000, help="0: no latent probe"
    )
    transfer_part.add_argument("--from", dest="summarise_only", action="store_true")


def _seeds(entries: Sequence[str], regimes: Sequence[int]) -> dict[int, int]:
    """``["3", "5000=2"]``: 3 seeds in every regime but 5,000 images, which has 2."""
    default = next((int(entry) for entry in entries if "=" not in entry), 1)
    seeds = dict.fromkeys(regimes, default)
    for entry in entries:
        if "=" in entry:
            images, count = entry.split("=", 1)
            seeds[int(images)] = int(count)
    return seeds


def _run_transfer(args: argparse.Namespace) -> None:
    def classes(labels: Sequence[int] | None) -> list[str]:
        return [f"data.classes=[{','.join(map(str, labels))}]"] if labels else []

    splits = args.splits or {None: (args.source, args.target_classes)}
    strategies = {**transfer.STRATEGIES, **{c.name: c for c in args.candidates}}
    studies = [
        transfer.Study(
            source=source.resolve(),
            base=(
                *_data(args),
                *classes(labels),
                "logger=csv",
                "trainer.enable_progress_bar=false",
                *args.overrides,
            ),
            runs=args.runs,
            classifier=args.classifier_weights and str(Path(args.classifier_weights).resolve()),
            probe_train_images=args.probe_train_images,
            split=name,
            strategies=strategies,
        )
        for name, (source, labels) in splits.items()
    ]
    transfer.run(
        studies,
        args.regimes,
        args.epochs,
        _seeds(args.seeds, args.regimes),
        args.strategies,
        args.long_epochs,
        args.long_regimes,
        args.long_strategies,
        args.output,
        train=not args.summarise_only,
    )


RUNNERS = {
    "speed": _run_speed,
    "transfer": _run_transfer,
    "quality": _run_quality,
    "rank": _run_rank,
}
