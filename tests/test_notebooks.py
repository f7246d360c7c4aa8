"""The notebooks run top to bottom in a fresh kernel (the venv's, via ipykernel)."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import NUM_TEST, NUM_TRAIN, ROOT, TrainedRun

NOTEBOOKS = ROOT / "notebooks"


def execute(name: str) -> tuple[list[dict], str]:
    """Run a notebook; return its outputs and their text (stdout and results)."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "not cleared"
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    outputs = [output for cell in code for output in cell.outputs]
    text = "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "") for output in outputs
    )
    return outputs, text


def figures(outputs: list[dict]) -> int:
    return sum("image/png" in output.get("data", {}) for output in outputs)


@pytest.mark.slow
def test_notebooks_explore_a_trained_run(run: TrainedRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOENCODER_RUN_DIR", str(run.run_dir))

    outputs, text = execute("reconstruction_explorer")
    assert figures(outputs) == 3  # grid, error histograms, worst images
    mse = float(re.search(r"test images: test/mse ([0-9.]+)", text).group(1))
    assert mse == pytest.approx(run.metrics["test/mse"], abs=2e-6)

    outputs, text = execute("learning_rates")
    assert figures(outputs) == 1
    # 86 training images in batches of 32: 3 steps per epoch, phase 2 from the second epoch
    assert "phase 2 begins at step 3 (transition_epoch 0)" in text
    assert "groups: decoder, encoder.stem, encoder.layer1, encoder.layer2" in text

    outputs, text = execute("latent_space")
    assert figures(outputs) == 1
    assert f"latents: {NUM_TRAIN + NUM_TEST} x {run.metrics['latent_floats']}" in text


@pytest.mark.slow
def test_a_notebook_trains_its_own_tiny_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOENCODER_RUN_DIR", raising=False)
    outputs, text = execute("learning_rates")
    assert figures(outputs) == 1
    # 64 synthetic training images in batches of 16: phase 2 from step 4
    assert "phase 2 begins at step 4 (transition_epoch 0)" in text
