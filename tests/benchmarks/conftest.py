"""What the benchmark tests share: generated arrays and the benchmark script."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
