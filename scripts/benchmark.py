"""The benchmark suite: tables as CSV and Markdown (and figures) under --output.

    python scripts/benchmark.py speed    --data-dir DIR [--steps 20 --warmup 5] [OVERRIDES ...]
    python scripts/benchmark.py transfer --data-dir DIR --encoder-weights PT [--regimes 1000 5000]
                                         [--epochs 15 --seeds 3] [--from] [OVERRIDES ...]
    python scripts/benchmark.py quality  --data-dir DIR [--floats 64 256 1024] [--epochs 20]
                                         [--config NAME=OVERRIDES ...] [--from] [OVERRIDES ...]

OVERRIDES are Hydra overrides of scripts/train.py (for example encoder.depth=2), applied to
every run of the part. --from summarises runs already under --output instead of training.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from autoencoder.benchmarks import quality, speed, transfer
from autoencoder.benchmarks.plots import speed_bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark"))
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

    transfer_part = parts.add_parser("transfer", help="scratch vs pretrained strategies")
    transfer_part.add_argument("--data-dir")
    transfer_part.add_argument("--encoder-weights", help="e.g. scripts/pretrain_encoder.py's")
    transfer_part.add_argument("--regimes", type=int, nargs="+", default=[1000, 5000])
    transfer_part.add_argument("--epochs", type=int, default=15)
    transfer_part.add_argument("--seeds", type=int, default=3)
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
    quality_part.add_argument("--from", dest="summarise_only", action="store_true")

    for part in (speed_part, transfer_part, quality_part):
        part.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()

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
        transfer.run(
            args.regimes,
            args.overrides,
            str(Path(args.data_dir).resolve()) if args.data_dir else None,
            args.encoder_weights and str(Path(args.encoder_weights).resolve()),
            args.epochs,
            args.seeds,
            args.output,
            train=not args.summarise_only,
        )
    else:
        named = dict(entry.split("=", 1) for entry in args.config) or {"default": ""}
        configs = {
            name: ["data=arrays", *data, *shlex.split(text), *args.overrides]
            for name, text in named.items()
        }
        quality.run(configs, args.floats, args.epochs, args.output, train=not args.summarise_only)


if __name__ == "__main__":
    main()
