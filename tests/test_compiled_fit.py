"""A compiled model (``model.compile=true``) through the two-phase transition and a resume
from its ``last.ckpt``, on the CPU: the same run as the uncompiled one with the same seed.

Phase 1 runs the encoder under ``no_grad``, phase 2 with gradients, and validation in eval
mode: each compiles a graph of its own, and the resumed run (a new model, the same graphs)
reuses or rebuilds them. About 40 s on 2 CPU cores, most of it compiling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch._dynamo.utils import counters as dynamo_counters

from autoencoder.examples import TWO_PHASES, smoke_overrides
from autoencoder.train import train
from tests.conftest import compose_job

# experiment=smoke cut after layer1 (layout=depth2: 4 x 8 x 8 latent floats) to halve what
# compiles; 4 steps an epoch, phase 2 from the second epoch; the final weights tested (a
# resumed run in a new folder tracks a best checkpoint of its own); no image grids (their
# 16 images would compile the forward once more, for dynamic shapes).
SMOKE = (
    *smoke_overrides(num_train=64, num_val=32, num_test=32, batch_size=16),
    *TWO_PHASES,
    "layout=depth2",
    "callbacks.model_checkpoint.save_top_k=0",
    "~callbacks.reconstructions",
)
# Compiled against eager, measured on 2 cores of an AMD EPYC (torch 2.14, CPU inductor):
# after the fit 0.0003 dB of PSNR, 7e-5 relative MSE, 4e-6 SSIM; after the resume 0.0009 dB,
# 2e-4, 7e-5 (fused kernels round differently, and the difference grows with the steps).
# The tolerances leave about ten times that.
PSNR_DB, MSE_RELATIVE, SSIM_ABSOLUTE = 0.01, 2e-3, 1e-3


def fit_and_resume(folder: Path, compiled: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two epochs (one per phase), then the same run resumed from its last.ckpt to three."""
    flag = f"model.compile={str(compiled).lower()}"
    first, _ = train(compose_job("train", *SMOKE, flag, output_dir=folder / "first"))
    last = folder / "first" / "checkpoints" / "last.ckpt"
    resumed, _ = train(
        compose_job(
            "train",
            *SMOKE,
            flag,
            "trainer.max_epochs=3",
            f"ckpt_path={last}",
            output_dir=folder / "resumed",
        )
    )
    return first, resumed


@pytest.mark.slow
def test_a_compiled_fit_and_its_resume_match_the_uncompiled_run(tmp_path: Path) -> None:
    eager = fit_and_resume(tmp_path / "eager", compiled=False)
    dynamo_counters.clear()
    compiled = fit_and_resume(tmp_path / "compiled", compiled=True)
    # phase 1 (encoder under no_grad), phase 2 and evaluation: graphs of their own
    assert dynamo_counters["stats"]["unique_graphs"] >= 2
    for stage, with_compile, without in zip(("fit", "resume"), compiled, eager, strict=True):
        assert with_compile["transition_epoch"] == without["transition_epoch"] == 0, stage
        assert with_compile["test/psnr"] == pytest.approx(without["test/psnr"], abs=PSNR_DB)
        assert with_compile["test/mse"] == pytest.approx(without["test/mse"], rel=MSE_RELATIVE)
        assert with_compile["test/ssim"] == pytest.approx(without["test/ssim"], abs=SSIM_ABSOLUTE)
