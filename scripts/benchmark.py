"""The benchmark suite: tables as CSV and Markdown (and figures) under --output.

    python scripts/benchmark.py speed    --data-dir DIR [--steps 20 --warmup 5] [OVERRIDES ...]
    python scripts/benchmark.py transfer --data-dir DIR --config NAME=OVERRIDES [--config ...]
                                         [--regimes 1000 5000] [--epochs 5] [--seeds 1]
                                         [--strategies scratch full two_phase frozen]
                                         [--target-classes 5 6 7 8 9] [--classifier-weights PT]
                                         [--probe-train-images 10000] [--from] [OVERRIDES ...]
    python scripts/benchmark.py quality  --data-dir DIR [--floats 64 256 1024] [--epochs 20]
                                         [--config NAME=OVERRIDES ...] [--full] [--from]
                                         [OVERRIDES ...]

    python scripts/benchmark.py rank --baseline NAME --sweep NAME=DIR[:OVERRIDES] [...]
                                     [--metric test/psnr] [--name ranking]

OVERRIDES are Hydra overrides of scripts/train.py (for example encoder.depth=2), applied to
every run of the part. Training runs go under --runs, tables and figures under --output;
--from summarises runs already under --runs instead of training.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from autoencoder.benchmarks import quality, ranking, speed, transfer
from autoencoder.benchmarks.plots import speed_bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/benchmark"), help="tables and figures"
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("outputs/benchmark"), help="the training runs"
    )
    parts = parser.add_subparsers(dest="part", required=True)

    speed_part = parts.add_parser("speed", help="pipeline vs bare loop, loader, step costs")
    speed_part.add_argument("--data-dir", required=True, help="train.npz and test.npz")
    speed_part.add_argument("--steps", type=int, default=20)
    speed_part.add_argument("--warmup", type=int, default=5)
    speed_part.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=(*speed.VARIANTS[2:], "bare-bf16", "bare-fp32"),
        help="leave out a variant (repeatable), e.g. --skip bare-compile",
    )

    transfer_part = parts.add_parser("transfer", help="pretrained vs scratch, per geometry")
    transfer_part.add_argument("--data-dir")
    transfer_part.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="an encoder geometry and its pretrained weights (repeatable), e.g. "
        '"nopool_layer2=encoder.depth=3 encoder.stem_pool=false encoder.weights=PT"',
    )
    transfer_part.add_argument("--regimes", type=int, nargs="+", default=[1000, 5000])
    transfer_part.add_argument("--epochs", type=int, default=5)
    transfer_part.add_argument("--seeds", type=int, default=1, help="seeds 1 .. N")
    transfer_part.add_argument(
        "--strategies",
        nargs="+",
        default=["scratch", "full", "two_phase", "frozen"],
        choices=transfer.STRATEGIES,
    )
    transfer_part.add_argument(
        "--target-classes", type=int, nargs="+", help="the labels the autoencoders train on"
    )
    transfer_part.add_argument("--classifier-weights", help="a classifier of the target classes")
    transfer_part.add_argument("--probe-train-images", type=int, default=10000)
    transfer_part.add_argument("--from", dest="summarise_only", action="store_true")

    quality_part = parts.add_parser("quality", help="test PSNR at fixed latent sizes vs PCA")
    quality_part.add_argument("--data-dir", required=True)
    quality_part.add_argument("--floats", type=int, nargs="+", default=[64, 256, 1024])
    quality_part.add_argument("--epochs", type=int, default=20)
    quality_part.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help='a named config to compare, e.g. --config "old=encoder.depth=4" (repeatable)',
    )
    quality_part.add_argument(
        "--full",
        action="store_true",
        help="one resumable run per size on the whole training split, with learning curves",
    )
    quality_part.add_argument("--from", dest="summarise_only", action="store_true")

    rank_part = parts.add_parser("rank", help="candidate sweeps against a baseline, by seeds")
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

    for part in (speed_part, transfer_part, quality_part):
        part.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()

    if args.part == "rank":
        sweeps = {}
        for entry in args.sweep:
            name, _, rest = entry.partition("=")
            folder, _, varied = rest.partition(":")
            sweeps[name] = (Path(folder), varied)
        ranking.run(sweeps, args.baseline, args.metric, args.output, args.name)
        return
    data = [f"data.path={Path(args.data_dir).resolve()}"] if args.data_dir else []
    if args.part == "speed":
        speed.run(
            ["data=arrays", *data, *args.overrides],
            args.output,
            args.steps,
            args.warmup,
            tuple(args.skip),
        )
        speed_bars(json.loads((args.output / "speed.json").read_text()), args.output / "speed.png")
    elif args.part == "transfer":
        if not args.config:
            raise SystemExit("the transfer study needs at least one --config NAME=OVERRIDES")
        configs = [
            transfer.StudyConfig(name, tuple(shlex.split(text)))
            for name, text in (entry.split("=", 1) for entry in args.config)
        ]
        classes = (
            [f"data.classes=[{','.join(map(str, args.target_classes))}]"]
            if args.target_classes
            else []
        )
        base = [
            "data=arrays",
            *data,
            *classes,
            "logger=csv",
            f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            *args.overrides,
        ]
        transfer.run(
            args.regimes,
            configs,
            base,
            args.strategies,
            args.seeds,
            args.classifier_weights and str(Path(args.classifier_weights).resolve()),
            args.probe_train_images,
            args.runs,
            args.output,
            train=not args.summarise_only,
        )
    else:
        named = dict(entry.split("=", 1) for entry in args.config) or {"default": ""}
        configs = {
            name: ["data=arrays", *data, *shlex.split(text), *args.overrides]
            for name, text in named.items()
        }
        part = quality.run_full if args.full else quality.run
        part(
            configs,
            args.floats,
            args.epochs,
            args.runs,
            args.output,
            train=not args.summarise_only,
        )


if __name__ == "__main__":
    main()
