"""The linear probe: near 100% on separable latents, near chance on shuffled labels."""

from __future__ import annotations

import pytest
import torch

from autoencoder.errors import ConfigError
from autoencoder.probe import linear_probe


def blobs(count: int, classes: int, dims: int, spread: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(count) % classes
    features = centres[labels] + spread * torch.randn(count, dims, generator=generator)
    # scaled and shifted features: the probe standardises them
    return features * torch.linspace(0.01, 100, dims) + 5, labels + 3


def test_separable_latents_are_read_almost_perfectly() -> None:
    train = blobs(600, 5, 32, 0.5, seed=0)
    test = blobs(200, 5, 32, 0.5, seed=1)
    result = linear_probe(*train, *test)
    assert result.accuracy > 0.98
    assert result.train_size == 600 and result.features == 32


def test_shuffled_labels_give_chance() -> None:
    features, labels = blobs(1000, 5, 32, 0.5, seed=0)
    shuffled = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    test_features, test_labels = blobs(1000, 5, 32, 0.5, seed=2)
    result = linear_probe(features[:600], shuffled[:600], test_features, test_labels)
    assert abs(result.accuracy - 0.2) < 0.06


def test_image_shaped_latents_are_flattened() -> None:
    features, labels = blobs(300, 3, 16, 0.3, seed=0)
    result = linear_probe(features.view(300, 4, 2, 2), labels, features.view(300, 4, 2, 2), labels)
    assert result.features == 16 and result.accuracy > 0.95


def test_unlabelled_or_unseen_labels_are_refused() -> None:
    features, labels = blobs(100, 3, 8, 0.3, seed=0)
    with pytest.raises(ConfigError, match="unlabelled"):
        linear_probe(features, labels - 10, features, labels)
    with pytest.raises(ConfigError, match="never shows"):
        linear_probe(features, labels, features, labels + 1)
