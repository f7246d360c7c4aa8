"""The encoder contract, run by every family (tests/models/families.py): the stages and
channels it declares, their downsampling, the depth cut, freezing with ``set_trainable``, the
BatchNorm modes, one parameter group per stage. Every encoder here is built with random
weights while any network connection raises, so ``weights=None`` builds offline.

What is particular to one family (timm's feature maps, torchvision's state dicts, the stem's
max-pool) is tested beside it: tests/models/test_timm_encoders.py, tests/models/test_autoencoder.py,
tests/models/test_encoder_geometry.py."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.models.torchvision_encoders import TORCHVISION_ENCODERS
from tests.models.families import FAMILIES, TORCHVISION_FAMILIES, Family

SIZE = 32  # pixels: every family's deepest stage keeps at least one pixel
CUT = 2  # the depth cut: a frozen lower stage and a trainable upper one

WITHOUT_TIMM = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="needs the timm extra"
)
PARAMS = [
    pytest.param(family, id=family.name, marks=[WITHOUT_TIMM] if family.needs_timm else [])
    for family in FAMILIES
]


@contextmanager
def no_network() -> Iterator[None]:
    """Every socket connection raises inside: a download fails at once."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("a network connection during an offline build")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        yield


def build(family: Family, depth: int | None = None) -> Encoder:
    if family.name.startswith("timm/vit_test"):
        import tests.models.tiny_vits  # noqa: F401  (registers the tiny ViTs in timm)
    with no_network():
        return Encoder(family.name, weights=None, depth=depth)


def grad_of(output: torch.Tensor | tuple) -> bool:
    """Whether a stage's output has a graph: a ViT's stages pass (tokens, grid)."""
    return (output[0] if isinstance(output, tuple) else output).requires_grad


def batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_every_torchvision_encoder_runs_the_contract() -> None:
    assert [family.name for family in TORCHVISION_FAMILIES] == list(TORCHVISION_ENCODERS)


def test_no_network_refuses_a_connection() -> None:
    with no_network(), pytest.raises(OSError, match="offline build"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


@pytest.mark.parametrize("family", PARAMS)
class TestEncoderContract:
    def test_stages_channels_and_reductions_are_the_declared_ones(self, family: Family) -> None:
        encoder = build(family).eval()
        assert encoder.stage_names == list(family.stages)
        assert encoder.out_channels == list(family.channels)
        assert encoder.reductions == list(family.reductions)
        assert encoder.reduction == family.reductions[-1]
        images = torch.rand(2, 3, SIZE, SIZE)
        with torch.no_grad():
            outputs = encoder.stage_outputs(images)
            features = encoder(images)
        assert [tuple(output.shape) for output in outputs] == [
            (2, channels, SIZE // reduction, SIZE // reduction)
            for channels, reduction in zip(family.channels, family.reductions, strict=True)
        ]
        torch.testing.assert_close(features, outputs[-1])

    def test_a_depth_cut_keeps_the_lowest_stages_and_exactly_their_weights(
        self, family: Family
    ) -> None:
        full, cut = build(family), build(family, depth=CUT)
        assert cut.stage_names == list(family.stages[:CUT])
        assert cut.out_channels == list(family.channels[:CUT])
        assert cut.reductions == list(family.reductions[:CUT])
        kept = {
            key: value.shape
            for key, value in full.state_dict().items()
            if key.split(".")[1] in family.stages[:CUT]
        }
        assert {key: value.shape for key, value in cut.state_dict().items()} == kept
        side = SIZE // family.reductions[CUT - 1]
        with torch.no_grad():
            features = cut.eval()(torch.rand(1, 3, SIZE, SIZE))
        assert features.shape == (1, family.channels[CUT - 1], side, side)

    @pytest.mark.parametrize("depth", [CUT, None], ids=["cut", "full"])
    def test_the_autoencoder_gives_back_images_and_reports_its_bottleneck(
        self, family: Family, depth: int | None
    ) -> None:
        model = Autoencoder(build(family, depth), latent_channels=8).eval()
        images = torch.rand(2, 3, SIZE, SIZE)
        with torch.no_grad():
            latent = model.encode(images)
            reconstruction = model(images)
        side = SIZE // model.encoder.reduction
        assert latent.shape == (2, 8, side, side) == (2, *model.latent_shape(SIZE, SIZE))
        assert reconstruction.shape == images.shape
        assert reconstruction.min() >= 0 and reconstruction.max() <= 1
        assert model.bottleneck_summary(SIZE, SIZE) == {
            "latent_floats": 8 * side * side,
            "compression_ratio": pytest.approx(3 * SIZE * SIZE / (8 * side * side)),
        }

    def test_frozen_stages_run_without_a_graph_and_get_no_gradients(self, family: Family) -> None:
        model = Autoencoder(build(family, CUT), latent_channels=4)
        frozen, trainable = (model.encoder.stages[name] for name in family.stages[:CUT])
        graph: dict[str, bool] = {}
        frozen.register_forward_hook(lambda *args: graph.update(frozen=grad_of(args[2])))
        trainable.register_forward_hook(lambda *args: graph.update(trainable=grad_of(args[2])))
        model.encoder.set_trainable(1, frozen_bn="eval", unfrozen_bn="train")
        model.train()
        model(torch.rand(2, 3, SIZE, SIZE)).mean().backward()
        assert graph == {"frozen": False, "trainable": True}
        assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
        assert all(p.grad is not None for p in trainable.parameters())
        assert all(p.grad is not None for p in model.decoder.parameters())

        for trainable_stages, learns in ((0, False), (CUT, True)):
            model.zero_grad(set_to_none=True)
            model.encoder.set_trainable(trainable_stages, frozen_bn="eval", unfrozen_bn="train")
            model(torch.rand(2, 3, SIZE, SIZE)).mean().backward()
            assert all((p.grad is not None) == learns for p in model.encoder.parameters())
            assert all(p.grad is not None for p in model.decoder.parameters())

    def test_batchnorm_modes_follow_set_trainable_through_the_models_train(
        self, family: Family
    ) -> None:
        model = Autoencoder(build(family, CUT), latent_channels=4)
        frozen, trainable = (batchnorms(model.encoder.stages[name]) for name in family.stages[:CUT])
        assert bool(frozen) == bool(trainable) == family.batchnorm
        for frozen_bn, unfrozen_bn in (("eval", "train"), ("train", "eval")):
            model.encoder.set_trainable(1, frozen_bn=frozen_bn, unfrozen_bn=unfrozen_bn)
            model.train()  # switches every module, then the encoder applies its modes again
            assert all(bn.training == (frozen_bn == "train") for bn in frozen)
            assert all(bn.training == (unfrozen_bn == "train") for bn in trainable)
            assert all(bn.training for bn in batchnorms(model.decoder))
        model.eval()
        assert not any(bn.training for bn in frozen + trainable)

    def test_one_parameter_group_per_stage_holds_each_parameter_once(self, family: Family) -> None:
        model = Autoencoder(build(family, CUT), latent_channels=4)
        groups = model.parameter_groups()
        assert [group["name"] for group in groups] == [
            "decoder",
            *(f"encoder.{name}" for name in family.stages[:CUT]),
        ]
        for group, stage in zip(groups[1:], model.encoder.stages.values(), strict=True):
            assert [id(p) for p in group["params"]] == [id(p) for p in stage.parameters()]
        grouped = [id(p) for group in groups for p in group["params"]]
        assert len(grouped) == len(set(grouped))
        assert set(grouped) == {id(p) for p in model.parameters()}
