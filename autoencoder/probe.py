"""The linear probe: how much class information a latent carries, read by a linear classifier.

The probe is an L2-regularised multinomial logistic regression on standardised features
(each feature centred and scaled by the training features' mean and standard deviation),
fitted full-batch with L-BFGS in torch. The regularisation strength is chosen among a few
values on a held-out tenth of the training features, then the probe is refitted on all of
them and scored on the test features. It is the feature-extraction use of a network: a
pretrained encoder's bottleneck should make it easy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autoencoder.errors import ConfigError

# L2 strengths tried (on the mean cross-entropy, per weight: lambda / 2 * ||W||^2)
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy of the probe, the L2 strength chosen, and the sizes it was fitted on."""

    accuracy: float
    weight_decay: float
    train_size: int
    features: int


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [((x - mean) / std).float() for x in (train, *others)]


def _fit(
    features: torch.Tensor, labels: torch.Tensor, classes: int, weight_decay: float, steps: int
) -> torch.nn.Linear:
    linear = torch.nn.Linear(features.shape[1], classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(features), labels)
        loss = loss + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return linear


def _accuracy(linear: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((linear(features).argmax(1) == labels).float().mean())


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    steps: int = 200,
    seed: int = 0,
) -> ProbeResult:
    """Fit the probe on ``train_features`` (N x D) and their labels, score it on the test
    ones. Labels are any integers; the test labels must all occur in training."""
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ConfigError("linear probe: features and labels differ in number.")
    if bool((train_labels < 0).any()) or bool((test_labels < 0).any()):
        raise ConfigError(
            "the linear probe needs a label for every image, but some are unlabelled (-1). "
            "Use labelled data or set probe=false."
        )
    classes, train_y = torch.unique(train_labels, return_inverse=True)
    if len(classes) < 2:
        raise ConfigError("the linear probe needs at least 2 classes in the training split.")
    unseen = sorted(set(test_labels.tolist()) - set(classes.tolist()))
    if unseen:
        raise ConfigError(f"the test split has labels {unseen} that training never shows.")
    test_y = torch.searchsorted(classes, test_labels)
    train_x, test_x = (x.flatten(1).double() for x in (train_features, test_features))

    # choose the L2 strength on a held-out tenth of the training features
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    held = order[: max(1, len(order) // 10)]
    kept = order[len(held) :]
    fit_x, held_x = _standardise(train_x[kept], train_x[held])
    scores = {
        decay: _accuracy(
            _fit(fit_x, train_y[kept], len(classes), decay, steps), held_x, train_y[held]
        )
        for decay in weight_decays
    }
    best = max(weight_decays, key=lambda decay: (scores[decay], decay))

    train_x, test_x = _standardise(train_x, test_x)
    linear = _fit(train_x, train_y, len(classes), best, steps)
    return ProbeResult(
        accuracy=_accuracy(linear, test_x, test_y),
        weight_decay=best,
        train_size=len(train_x),
        features=train_x.shape[1],
    )
