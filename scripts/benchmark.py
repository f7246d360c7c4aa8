"""Training-step cost of the autoencoder, measured side by side in one process.

    python scripts/benchmark.py [--encoder resnet18] [--depth 4] [--batch-size 128]
                                [--image-size 32] [--steps 20] [--warmup 3]

Prints seconds per step and images per second for: the encoder frozen (phase 1) and
unfrozen (phase 2), each in channels-last and in the default memory format, plus the
ratios the README quotes. Random weights and random images: only speed is measured.
"""

from __future__ import annotations

import argparse
import time

import torch

from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder


def seconds_per_step(
    name: str,
    depth: int,
    batch_size: int,
    image_size: int,
    steps: int,
    warmup: int,
    frozen: bool,
    channels_last: bool,
) -> float:
    torch.manual_seed(0)
    model = Autoencoder(
        Encoder(name, weights=None, depth=depth), latent_channels=64, channels_last=channels_last
    )
    model.encoder.set_trainable(
        0 if frozen else depth, frozen_bn_eval=True, trainable_bn_eval=False
    )
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.rand(batch_size, 3, image_size, image_size).contiguous(
        memory_format=memory_format
    )
    timings = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = model.loss(model(images), images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            timings.append(time.perf_counter() - start)
    timings.sort()
    return timings[len(timings) // 2]  # median: robust to a busy machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{args.encoder} depth {args.depth}, batch {args.batch_size}, {args.image_size} px, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.steps}"
    )
    results = {}
    for channels_last in (True, False):
        for frozen in (True, False):
            seconds = seconds_per_step(
                args.encoder,
                args.depth,
                args.batch_size,
                args.image_size,
                args.steps,
                args.warmup,
                frozen,
                channels_last,
            )
            results[frozen, channels_last] = seconds
            phase = "frozen" if frozen else "unfrozen"
            layout = "channels_last" if channels_last else "contiguous"
            label = f"{phase:9s} {layout:14s}"
            print(f"{label} {seconds * 1000:8.1f} ms/step {args.batch_size / seconds:8.0f} img/s")
    for channels_last in (True, False):
        ratio = results[False, channels_last] / results[True, channels_last]
        layout = "channels_last" if channels_last else "contiguous"
        print(f"unfrozen / frozen step time ({layout}): {ratio:.2f}x")
    for frozen in (True, False):
        ratio = results[frozen, False] / results[frozen, True]
        print(f"contiguous / channels_last ({'frozen' if frozen else 'unfrozen'}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
