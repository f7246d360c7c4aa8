"""timm encoders (``encoder.name=timm/MODEL``): timm's features models cut into stages, on two
families: ResNet-D and ConvNeXt. What every family shares (declared stages, depth cut,
freezing, BatchNorm modes, parameter groups) is the encoder contract
(tests/models/test_encoder_contract.py); here, what is timm's own: its feature maps and
normalisation, the stem pool, its state dicts and hub, two-phase fine-tuning. Random weights,
generated data, offline; skipped without the timm extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from autoencoder.config import instantiate
from autoencoder.data import SyntheticDataModule
from autoencoder.errors import ConfigError, ResourceUnavailableError
from autoencoder.finetuning import TwoPhaseFinetuning
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.runs import build_model
from tests.conftest import ROOT, compose_job
from tests.models.families import TIMM_FAMILIES

timm = pytest.importorskip("timm")

# timm's feature maps of each family: channels and downsampling per stage.
FAMILIES = {
    family.name.removeprefix("timm/"): (list(family.channels), list(family.reductions))
    for family in TIMM_FAMILIES
}


def features_model(family: str, **kwargs) -> nn.Module:
    return timm.create_model(family, features_only=True, **kwargs)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_stages_compute_timms_feature_maps_and_hold_every_parameter_once(
    family: str, tmp_path: Path
) -> None:
    features = features_model(family)
    path = tmp_path / "features.pt"
    torch.save(features.state_dict(), path)
    encoder = Encoder(f"timm/{family}", weights=str(path), normalize=False)
    channels, reductions = FAMILIES[family]
    assert encoder.stage_names == [f"stage{i + 1}" for i in range(len(channels))]
    assert encoder.out_channels == channels == features.feature_info.channels()
    assert encoder.reductions == reductions == features.feature_info.reduction()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        theirs = features.eval()(images)
        ours = encoder.eval().stage_outputs(images)
    for our_map, their_map in zip(ours, theirs, strict=True):
        torch.testing.assert_close(our_map, their_map)
    stage_parameters = [p for stage in encoder.stages.values() for p in stage.parameters()]
    assert len({id(p) for p in stage_parameters}) == len(stage_parameters)
    assert sum(p.numel() for p in stage_parameters) == parameter_count(features)
    mean = features.pretrained_cfg["mean"]
    torch.testing.assert_close(encoder.mean.flatten(), torch.tensor(mean))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_depth_cut_is_timms_features_model_to_that_map_and_beyond_it_is_refused(
    family: str,
) -> None:
    encoder = Encoder(f"timm/{family}", weights=None, depth=2)
    assert parameter_count(encoder) == parameter_count(features_model(family, out_indices=(0, 1)))
    stages = len(FAMILIES[family][0])
    with pytest.raises(
        ConfigError, match=rf"encoder.depth=6 is out of range for timm/{family}.*Use 1 .. {stages}"
    ):
        Encoder(f"timm/{family}", weights=None, depth=6)


def test_stem_pool_false_drops_the_resnet_max_pool_and_convnext_has_none() -> None:
    encoder = Encoder("timm/resnet18d", weights=None, depth=3, stem_pool=False)
    assert isinstance(encoder.stages["stage2"].maxpool, nn.Identity)
    assert encoder.reductions == [2, 2, 4]
    assert encoder(torch.rand(1, 3, 32, 32)).shape == (1, 128, 8, 8)
    assert not any(isinstance(m, nn.MaxPool2d) for m in encoder.modules())
    with pytest.raises(ConfigError, match="timm/convnext_atto has no max-pool in its stem"):
        Encoder("timm/convnext_atto", weights=None, stem_pool=False)


def test_a_weights_tag_chooses_the_normalisation_those_weights_were_trained_with() -> None:
    tagged = Encoder("timm/resnet18d.ra4_e3600_r224_in1k", weights=None, depth=1)
    assert tagged.mean.flatten().tolist() == tagged.std.flatten().tolist() == [0.5, 0.5, 0.5]
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = tagged.stages["stage1"].eval()((images - 0.5) / 0.5)
        torch.testing.assert_close(tagged.eval()(images), expected)
    default = Encoder("timm/resnet18d", weights=None, depth=1)  # ra2_in1k: ImageNet's
    torch.testing.assert_close(default.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_input_scale_divides_the_reductions() -> None:
    encoder = Encoder("timm/convnext_atto", weights=None, depth=2, input_scale=2)
    assert encoder.reductions == [2, 4]
    assert encoder(torch.rand(1, 3, 32, 32)).shape == (1, 80, 8, 8)


class RateRecorder(pl.Callback):
    """Each step's rate per parameter group, and the encoder's weights after each epoch."""

    def __init__(self) -> None:
        self.rates: list[dict[str, float]] = []
        self.encoder_after_epoch: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.rates.append({group["name"]: group["lr"] for group in groups})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        state = pl_module.encoder.state_dict()
        self.encoder_after_epoch.append({k: v.detach().clone() for k, v in state.items()})


@pytest.mark.parametrize("family", FAMILIES)
def test_a_timm_encoder_trains_through_both_phases_with_a_rate_per_stage(family: str) -> None:
    pl.seed_everything(0)
    model = Autoencoder(Encoder(f"timm/{family}", weights=None, depth=2), latent_channels=4)
    initial = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    finetuning = TwoPhaseFinetuning(
        patience=None,
        min_frozen_epochs=1,
        max_frozen_epochs=1,
        encoder_lr=1e-3,
        factor=2.6,
        warmup_steps=0,
    )
    recorder = RateRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[finetuning, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = SyntheticDataModule(num_train=32, num_val=16, num_test=16, batch_size=16)
    trainer.fit(model, datamodule=data)
    assert finetuning.transition_epoch == 0
    frozen = {"decoder": 1e-3, "encoder.stage1": 0.0, "encoder.stage2": 0.0}
    assert recorder.rates[:2] == [frozen, frozen]
    for rates in recorder.rates[2:]:
        assert rates == pytest.approx(
            {"decoder": 1e-3, "encoder.stage1": 1e-3 / 2.6, "encoder.stage2": 1e-3}
        )
    after_frozen, after_unfrozen = recorder.encoder_after_epoch
    assert all(torch.equal(after_frozen[k], initial[k]) for k in initial)  # BN stats too
    assert all(not torch.equal(after_unfrozen[k], initial[k]) for k in initial if "weight" in k)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_timm_classifiers_state_dict_loads_without_its_head(family: str, tmp_path: Path) -> None:
    classifier = timm.create_model(family, num_classes=7)
    path = tmp_path / "classifier.pt"
    torch.save({"state_dict": classifier.state_dict()}, path)
    encoder = Encoder(f"timm/{family}", weights=str(path))
    ours = dict(encoder.stages.named_parameters())
    theirs = dict(classifier.named_parameters())
    if family == "resnet18d":
        pairs = {"stage1.conv1.0.weight": "conv1.0.weight", "stage5.layer4.1.bn2.bias": None}
    else:  # the features model flattens ConvNeXt's Sequential containers
        pairs = {"stage1.stem_0.weight": "stem.0.weight", "stage4.stages_3.blocks.1.gamma": None}
    for our_key, their_key in pairs.items():
        # the stage's name, then the classifier's key (flattened for ConvNeXt)
        their_key = their_key or our_key.split(".", 1)[1].replace("stages_3", "stages.3")
        torch.testing.assert_close(ours[our_key], theirs[their_key])
    head = sum(p.numel() for k, p in theirs.items() if k.startswith(("fc.", "head.")))
    assert parameter_count(encoder) == parameter_count(classifier) - head


def test_a_state_dict_of_another_architecture_is_refused_naming_the_keys(tmp_path: Path) -> None:
    state = timm.create_model("resnet18d").state_dict()
    state["layer1.2.conv1.weight"] = state.pop("layer1.1.conv1.weight")
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError) as error:
        Encoder("timm/resnet18d", weights=str(path))
    message = str(error.value)
    assert "does not fit encoder timm/resnet18d" in message
    assert "1 missing keys: layer1.1.conv1.weight" in message
    assert "1 unexpected keys: layer1.2.conv1.weight" in message


def test_offline_imagenet_weights_fail_with_one_actionable_line(monkeypatch) -> None:
    """What a failed hub download raises (the cache empty, the network unreachable),
    without touching the network."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs.get("filename", args[1] if len(args) > 1 else None))
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we cannot find "
            "the requested files in the local cache. Please check your connection and try again."
        )

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(ResourceUnavailableError) as error:
        Encoder("timm/resnet18d", weights="imagenet")
    assert calls
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "could not download the pretrained weights of timm/resnet18d "
        "(timm/resnet18d.ra2_in1k on the Hugging Face hub): An error happened while trying"
    )
    assert message.endswith(
        "Either connect once so timm caches them (HF_HUB_OFFLINE=1 then reads the cache "
        "without the network), pass a local state dict with encoder.weights=PATH, or train "
        "from scratch with encoder.weights=null."
    )


def test_without_the_extra_a_timm_name_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"timm encoders need the timm extra: pip install -e"):
        Encoder("timm/resnet18d", weights=None)


def test_importing_the_encoder_table_does_not_import_timm() -> None:
    probe = "import sys, autoencoder.models.encoders; print('timm' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("timm/resnet18e", r"unknown timm model 'resnet18e'.*timm.list_models"),
        ("timm/resnet18d.nope", r"Invalid pretrained tag \(nope\).*timm.list_pretrained"),
        # a transformer tapped inside its modules (vision transformers: test_vit_encoders.py)
        (
            "timm/eva02_tiny_patch14_224",
            r"eva family cannot be cut into sequential stages: its feature maps are taken inside "
            r"modules \(blocks.9, blocks.10, blocks.11\).*or a ViT of timm's vision_transformer",
        ),
        # timm says its first feature map is bn1's output, but takes it after act1
        ("timm/mobilenetv3_small_050", r"stage1 does not give timm's feature map"),
    ],
)
def test_names_and_families_that_cannot_be_encoders_are_refused(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Encoder(name, weights=None)


@pytest.mark.parametrize(
    ("overrides", "name", "stages"),
    [
        ((), "timm/resnet18d", ["stage1", "stage2", "stage3"]),
        (
            ("encoder.name=timm/convnext_atto", "layout=depth2", "encoder.input_scale=2"),
            "timm/convnext_atto",
            ["stage1", "stage2"],
        ),
    ],
)
def test_the_timm_experiment_gives_the_default_latent_grid(
    overrides: tuple[str, ...], name: str, stages: list[str]
) -> None:
    """experiment=cifar10_timm, and its ConvNeXt variant of the experiment's comment: a
    4 x 8 x 8 latent per 32 px image, as the default experiment."""
    cfg = compose_job("train", "experiment=cifar10_timm", "encoder.weights=null", *overrides)
    encoder = instantiate(cfg.encoder)
    assert (encoder.name, encoder.stage_names, encoder.reduction) == (name, stages, 4)
    assert build_model(cfg, encoder).latent_shape(32, 32) == (4, 8, 8)
