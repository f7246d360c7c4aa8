"""What the quality benchmark stands its runs next to: PCA fitted on the training split (the
best a linear autoencoder of the same size can do), two published autoencoders, and when a
run's validation curve reaches PCA."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from autoencoder.config import compose_config, instantiate

# henriwoodcock, "Applying Modern Best Practices to Autoencoders": a pretrained ResNet-34
# encoder on CIFAR-10, 1,000 latent floats, 15 epochs.
PUBLIC_REPORT = {"floats": 1000, "epochs": 15, "mse": 0.004345}
# The UvA deep-learning course's tutorial 9: a plain Lightning conv autoencoder on CIFAR-10,
# trained for up to 500 epochs; its test PSNR (dB) by latent floats, read from its plot.
UVA_REFERENCE = {64: 21.5, 128: 23.9, 256: 26.8, 384: 28.9}
UVA_LABEL = "UvA tutorial 9 (test)"


def psnr(mse: float) -> float:
    """PSNR in dB of [0, 1] pixels with mean squared error ``mse`` (infinite when exact)."""
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


@torch.no_grad()
def pca_baseline(
    train: torch.Tensor, test: torch.Tensor, components: Sequence[int]
) -> dict[int, dict[str, float]]:
    """Test MSE, PSNR and SSIM of PCA with each number of ``components``, fitted on ``train``
    (images N x 3 x H x W in [0, 1]); one eigendecomposition serves every size."""
    flat = train.flatten(1).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    test_flat = test.flatten(1).double() - mean
    results = {}
    for k in components:
        basis = vectors[:, -k:]
        reconstruction = ((test_flat @ basis) @ basis.T + mean).float().view_as(test)
        reconstruction = reconstruction.clamp(0, 1)
        mse = float(torch.mean((reconstruction - test) ** 2))
        ssim = float(
            torch.stack(
                [
                    structural_similarity_index_measure(r, t, data_range=1.0) * len(t)
                    for r, t in zip(reconstruction.split(500), test.split(500), strict=True)
                ]
            ).sum()
            / len(test)
        )
        results[k] = {"mse": mse, "psnr": psnr(mse), "ssim": ssim}
    return results


def split_images(overrides: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split (without the validation images) and the test split of a config's
    data, as the autoencoder sees them (no augmentation)."""
    cfg = compose_config(
        "train", *overrides, "data.horizontal_flip=false", "data.random_crop=false"
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")

    def stack(dataset: torch.utils.data.Dataset) -> torch.Tensor:
        return torch.stack([dataset[i][0] for i in range(len(dataset))])

    return stack(datamodule.train_set), stack(datamodule.test_set)


def epochs_to_reach(curve: Sequence[float], target: float) -> float | None:
    """When a validation curve reaches ``target`` dB: the epoch it did, or, extrapolated, the
    epoch a straight line through PSNR against log(epoch) over its second half reaches it
    (``None`` if that line does not rise)."""
    reached = next((e for e, value in enumerate(curve, 1) if value >= target), None)
    if reached is not None or len(curve) < 4:
        return reached
    epochs = range(len(curve) // 2 + 1, len(curve) + 1)
    xs, ys = [math.log(e) for e in epochs], list(curve[len(curve) // 2 :])
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    if slope <= 0:
        return None
    return math.exp(mean_x + (target - mean_y) / slope)


def extrapolation_cell(epochs: float | None, budget: int, horizon: int = 100) -> float | str | None:
    """An extrapolated epoch count, or ``> horizon x budget`` where a straight line that far
    out says nothing."""
    if epochs is not None and epochs > horizon * budget:
        return f"> {horizon * budget}"
    return epochs


def uva_note() -> str:
    """:data:`UVA_REFERENCE` as a table note."""
    sizes = sorted(UVA_REFERENCE)
    values = " / ".join(str(UVA_REFERENCE[size]) for size in sizes)
    return (
        "UvA deep-learning tutorial 9 (a plain Lightning conv autoencoder on CIFAR-10, up to "
        f"500 epochs), test PSNR read from its plot: {values} dB at "
        f"{' / '.join(map(str, sizes))} latent floats."
    )
