"""The encoder table: a new backbone family is one entry, and everything else follows."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from autoencoder.config import compose_config
from autoencoder.errors import ConfigError
from autoencoder.examples import TWO_PHASES, smoke_overrides
from autoencoder.models.classifier import Classifier
from autoencoder.models.encoders import ENCODERS, Encoder, StageInfo, register_encoder
from autoencoder.train import train
from tests.conftest import ROOT, run_script


class ToyNet(nn.Module):
    """Three conv stages: full resolution, then two that halve it."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.second = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.third = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.MaxPool2d(2), nn.ReLU())


def toy_stages(net: ToyNet) -> OrderedDict[str, nn.Module]:
    return OrderedDict(first=net.first, second=net.second, third=net.third)


@pytest.fixture
def toynet() -> Iterator[str]:
    register_encoder("toynet", ToyNet, toy_stages)
    yield "toynet"
    del ENCODERS["toynet"]


def test_a_registered_family_gets_stages_channels_and_reductions(toynet: str) -> None:
    encoder = Encoder(toynet, weights=None)
    assert encoder.stage_names == ["first", "second", "third"]
    assert encoder.out_channels == [8, 16, 24]
    assert encoder.reductions == [1, 2, 4]
    assert encoder(torch.rand(2, 3, 16, 16)).shape == (2, 24, 4, 4)
    assert Encoder(toynet, weights=None, depth=2)(torch.rand(1, 3, 16, 16)).shape == (1, 16, 8, 8)


class ShortcutNet(nn.Module):
    """Two stages whose second downsamples only in a ``downsample`` module, which the convs
    and pools of the main path do not show: its geometry must be declared."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.second = nn.Sequential(nn.Module())
        self.second[0].downsample = nn.Conv2d(8, 16, 2, stride=2)

    @staticmethod
    def stages(net: ShortcutNet) -> OrderedDict[str, nn.Module]:
        return OrderedDict(first=net.first, second=net.second[0].downsample)


def test_a_family_can_declare_its_stage_geometry_and_a_wrong_declaration_is_refused() -> None:
    declared = [StageInfo(8, 1), StageInfo(16, 2)]
    register_encoder("shortcutnet", ShortcutNet, ShortcutNet.stages, stage_info=lambda _: declared)
    register_encoder("wrongnet", ShortcutNet, ShortcutNet.stages, stage_info=lambda _: declared[:1])
    register_encoder(
        "lyingnet", ShortcutNet, ShortcutNet.stages, stage_info=lambda _: [declared[0]] * 2
    )
    try:
        encoder = Encoder("shortcutnet", weights=None)
        assert (encoder.out_channels, encoder.reductions) == ([8, 16], [1, 2])
        with pytest.raises(ConfigError, match="downsampling of 1 stages but has 2"):
            Encoder("wrongnet", weights=None)
        with pytest.raises(
            ConfigError,
            match="stage second is declared to give 8 channels at 1x downsampling, but on a "
            "32 px image it gives 16 x 16 x 16",
        ):
            Encoder("lyingnet", weights=None)
    finally:
        for name in ("shortcutnet", "wrongnet", "lyingnet"):
            del ENCODERS[name]


def test_a_registered_family_loads_state_dicts_but_has_no_imagenet_weights(
    toynet: str, tmp_path: Path
) -> None:
    source = ToyNet()
    path = tmp_path / "toy.pt"
    torch.save(source.state_dict(), path)
    encoder = Encoder(toynet, weights=str(path))
    torch.testing.assert_close(encoder.stages["second"][0].weight, source.second[0].weight)
    with pytest.raises(ConfigError, match="toynet has no ImageNet weights"):
        Encoder(toynet, weights="imagenet")
    with pytest.raises(ConfigError, match="not a torchvision classifier"):
        Classifier(toynet)
    with pytest.raises(ConfigError, match="already registered"):
        register_encoder(toynet, ToyNet, toy_stages)


def test_a_registered_family_trains_through_both_phases(toynet: str, compose_cfg) -> None:
    """``encoder.name=toynet`` on the command line is all a user adds: the decoder, one
    parameter group per stage and two-phase fine-tuning follow from the table entry."""
    cfg = compose_cfg(
        *smoke_overrides(32, 16, 16),
        *TWO_PHASES,
        f"encoder.name={toynet}",
        "encoder.depth=3",
        "model.latent_channels=4",
        "data.image_size=16",
        "finetune.warmup_steps=0",
    )
    summary, _ = train(cfg)
    assert summary["latent_floats"] == 4 * 4 * 4
    assert summary["transition_epoch"] == 0
    checkpoint = torch.load(summary["best_ckpt"], weights_only=True)
    rates = {group["name"] for group in checkpoint["optimizer_states"][0]["param_groups"]}
    assert rates == {"decoder", "encoder.first", "encoder.second", "encoder.third"}


USER_MODULE = """
from collections import OrderedDict

from torch import nn

from autoencoder.models.encoders import register_encoder


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.second = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())


register_encoder(
    "tinynet",
    build=TinyNet,
    stages=lambda net: OrderedDict(first=net.first, second=net.second),
)
"""


def test_an_encoder_registered_in_the_users_module_trains_through_the_script(
    tmp_path: Path,
) -> None:
    """What docs/encoders.md shows: a module of the user's that calls ``register_encoder``,
    named by ``imports=[...]``, makes ``encoder.name`` accept the new encoder."""
    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "my_encoders.py").write_text(USER_MODULE)
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py",
        *smoke_overrides(32, 16, 16, batch_size=16),
        "imports=[my_package.my_encoders]",
        "encoder.name=tinynet",
        "encoder.depth=null",
        "model.latent_channels=4",
        "trainer.max_epochs=2",
        "finetune.patience=null",
        "finetune.warmup_steps=0",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["latent_floats"] == 4 * 8 * 8 and metrics["transition_epoch"] == 0
    checkpoint = torch.load(metrics["best_ckpt"], weights_only=True)
    groups = {group["name"] for group in checkpoint["optimizer_states"][0]["param_groups"]}
    assert groups == {"decoder", "encoder.first", "encoder.second"}


@pytest.mark.parametrize("config", ["train", "evaluate", "encode", "pretrain"])
def test_every_entry_point_that_builds_models_takes_imports(config: str) -> None:
    assert compose_config(config, "imports=[json]").imports == ["json"]
