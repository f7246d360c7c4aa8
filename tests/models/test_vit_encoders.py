"""Vision transformers as encoders (``encoder=vit``, ``encoder.name=timm/vit_*``): timm's
VisionTransformer cut into an embedding stage and groups of blocks, its tokens laid out on
their grid without the class and register tokens. Two tiny families of timm's own code
(tests/models/tiny_vits.py: DINOv2 with registers, plain ViT/16) with random weights on
tiny generated images, offline; skipped without the timm extra."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from autoencoder.checkpointing import read_checkpoint
from autoencoder.data import SyntheticDataModule
from autoencoder.errors import ConfigError, ResourceUnavailableError
from autoencoder.figures import trace
from autoencoder.finetuning import TwoPhaseFinetuning
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.train import train
from tests.conftest import DDP_ENV, DDP_ON_CPU, compose_job, run_script

timm = pytest.importorskip("timm")

from autoencoder.models.timm_encoders import timm_encoder_spec  # noqa: E402
from autoencoder.models.vit_encoders import block_groups  # noqa: E402
from tests.models.test_timm_encoders import RateRecorder  # noqa: E402
from tests.models.tiny_vits import DINOV2, PLAIN, TINY  # noqa: E402

# each tiny family: its patch size, the input scale and image size the tests use
# (a 4 x 4 grid of tokens), and its prefix tokens (class, registers)
SETTINGS = {
    DINOV2: {"patch": 14, "input_scale": 2, "size": 28, "prefix": 5},
    PLAIN: {"patch": 16, "input_scale": 2, "size": 32, "prefix": 1},
}
STAGES = ["stage1", "stage2", "stage3", "stage4", "stage5"]
IMPORTS = "imports=[tests.models.tiny_vits]"


def timm_vit(name: str) -> nn.Module:
    return timm.create_model(name.removeprefix("timm/"), dynamic_img_size=True)


def encoder(name: str, **kwargs) -> Encoder:
    kwargs.setdefault("weights", None)
    kwargs.setdefault("input_scale", SETTINGS[name]["input_scale"])
    return Encoder(name, **kwargs)


def images(name: str, count: int = 2) -> torch.Tensor:
    size = SETTINGS[name]["size"]
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", SETTINGS)
def test_the_stages_partition_the_vit_and_give_timms_intermediates(
    name: str, tmp_path: Path
) -> None:
    """A timm classifier's state dict (head and all) loads; the stages hold every weight but
    the head's once, and give timm's forward_intermediates: the class and register tokens
    dropped, the patch tokens on their grid, the last stage after the final norm."""
    net = timm_vit(name)
    path = tmp_path / "vit.pt"
    torch.save(net.state_dict(), path)
    ours = encoder(name, weights=str(path), normalize=False)
    patch, scale = SETTINGS[name]["patch"], SETTINGS[name]["input_scale"]
    assert ours.stage_names == STAGES
    assert ours.out_channels == [TINY["embed_dim"]] * 5
    assert ours.reductions == [patch // scale] * 5
    stage_parameters = [p for stage in ours.stages.values() for p in stage.parameters()]
    assert len({id(p) for p in stage_parameters}) == len(stage_parameters)
    head = sum(p.numel() for k, p in net.named_parameters() if k.startswith("head."))
    assert (
        sum(p.numel() for p in stage_parameters) == sum(p.numel() for p in net.parameters()) - head
    )
    x = images(name)
    with torch.no_grad():
        outputs = ours.eval().stage_outputs(x)
        final, theirs = net.eval().forward_intermediates(
            nn.functional.interpolate(x, scale_factor=scale, mode="bilinear"), indices=[0, 1, 2]
        )
        features = ours(x)
    grid = SETTINGS[name]["size"] // (patch // scale)
    assert [tuple(o.shape) for o in outputs] == [(2, TINY["embed_dim"], grid, grid)] * 5
    for mine, timms in zip(outputs[1:4], theirs, strict=True):
        torch.testing.assert_close(mine, timms)
    prefix = SETTINGS[name]["prefix"]
    assert final.shape[1] == prefix + grid * grid  # timm's tokens: the prefix, then the grid
    patches = final[:, prefix:].reshape(2, grid, grid, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(outputs[4], patches)
    torch.testing.assert_close(features, patches)


def test_the_architecture_figure_traces_a_vits_stages_as_feature_maps() -> None:
    model = Autoencoder(encoder(DINOV2, depth=2, input_scale=7), latent_channels=4)
    shapes = {(t.label, t.shape) for t in trace(model, 32)}
    assert {("stage1", (48, 16, 16)), ("stage2", (48, 16, 16))} <= shapes
    assert ("mirrors stage1 (2x up)", (24, 32, 32)) in shapes


def test_blocks_are_grouped_in_four_runs_as_equal_as_possible() -> None:
    assert [len(r) for r in block_groups(12)] == [3, 3, 3, 3]
    assert [len(r) for r in block_groups(24)] == [6, 6, 6, 6]
    assert [len(r) for r in block_groups(6)] == [2, 2, 1, 1]
    assert [len(r) for r in block_groups(2)] == [1, 1]
    assert [r.start for r in block_groups(40)] == [0, 10, 20, 30]


@pytest.mark.parametrize("name", SETTINGS)
def test_a_depth_cut_holds_only_the_kept_blocks(name: str) -> None:
    full, cut = encoder(name), encoder(name, depth=2)
    assert cut.stage_names == STAGES[:2]
    blocks = [m for m in cut.modules() if isinstance(m, timm.models.vision_transformer.Block)]
    assert len(blocks) == 1  # 4 blocks in 4 groups: the first group only
    expected = {k: v.shape for k, v in full.state_dict().items() if k.split(".")[1] in STAGES[:2]}
    assert {k: v.shape for k, v in cut.state_dict().items()} == expected
    assert "stages.stage5.norm.weight" in full.state_dict()  # the final norm: the last group's
    with torch.no_grad():
        assert cut(images(name)).shape == (2, TINY["embed_dim"], 4, 4)


def test_a_cut_beyond_the_last_group_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"encoder.depth=6 is out of range.*Use 1 .. 5"):
        encoder(PLAIN, depth=6)


def test_the_input_scale_must_divide_the_patch_size() -> None:
    with pytest.raises(ConfigError, match=r"encoder.input_scale=4: .* 14 px patches.*1, 2, 7, 14"):
        encoder(DINOV2, input_scale=4)
    unscaled = Autoencoder(encoder(DINOV2, input_scale=1, depth=1), latent_channels=4)
    with pytest.raises(
        ConfigError,
        match=r"32x32 is not divisible .*14x.*Nearest valid sizes: "
        r"28 or 42; .*or use a larger encoder.input_scale .*14 px",
    ):
        unscaled.latent_shape(32, 32)
    scaled = encoder(DINOV2, input_scale=7)  # 32 px images at 224 px: a 16 x 16 grid
    assert scaled.reductions == [2] * 5
    with torch.no_grad():
        assert scaled(torch.rand(1, 3, 32, 32)).shape == (1, TINY["embed_dim"], 16, 16)


def test_the_normalisation_is_the_one_of_the_pretrained_cfg() -> None:
    imagenet = (0.485, 0.456, 0.406)
    assert timm_encoder_spec("vit_small_patch14_reg4_dinov2").mean == imagenet
    assert timm_encoder_spec("vit_base_patch16_224.mae").mean == imagenet
    siglip = timm_encoder_spec("vit_base_patch16_siglip_224")
    assert siglip.mean == siglip.std == (0.5, 0.5, 0.5)
    tagged = Encoder("timm/vit_tiny_patch16_224.augreg_in21k", weights=None, depth=1)
    assert tagged.mean.flatten().tolist() == tagged.std.flatten().tolist() == [0.5] * 3


def test_batchnorm_and_stem_pool_options_are_ignored_with_a_note(caplog) -> None:
    with caplog.at_level(logging.INFO):
        vit = encoder(PLAIN, depth=2, stem_pool=False)  # as the experiments' layout sets it
        vit.set_trainable(1, frozen_bn="eval", unfrozen_bn="train")
        vit.set_trainable(2, frozen_bn="train", unfrozen_bn="train")
    assert vit.stem_pool is True and vit.geometry.stem_pool is True
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("note:")] == [
        f"note: encoder.stem_pool=false ignored: {PLAIN} is a vision transformer, without a "
        "max-pool; encoder.input_scale sets its grid of tokens.",
        f"note: finetune.unfrozen_bn=train ignored: encoder {PLAIN} has no BatchNorm layers.",
    ]


@pytest.mark.parametrize("name", SETTINGS)
def test_a_vit_trains_through_both_phases_with_a_rate_per_group(name: str) -> None:
    pl.seed_everything(0)
    model = Autoencoder(encoder(name, depth=3), latent_channels=4)
    initial = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    finetuning = TwoPhaseFinetuning(
        patience=None, min_frozen_epochs=1, max_frozen_epochs=1, encoder_lr=1e-3, factor=2.0,
        warmup_steps=0,
    )  # fmt: skip
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
    size = SETTINGS[name]["size"]
    data = SyntheticDataModule(
        num_train=32, num_val=16, num_test=16, batch_size=16, image_size=size
    )
    trainer.fit(model, datamodule=data)
    frozen = {"decoder": 1e-3, "encoder.stage1": 0.0, "encoder.stage2": 0.0, "encoder.stage3": 0.0}
    assert recorder.rates[:2] == [frozen, frozen]
    unfrozen = {"decoder": 1e-3, "encoder.stage1": 2.5e-4, "encoder.stage2": 5e-4}
    for rates in recorder.rates[2:]:
        assert rates == pytest.approx({**unfrozen, "encoder.stage3": 1e-3})
    after_frozen, after_unfrozen = recorder.encoder_after_epoch
    assert all(torch.equal(after_frozen[k], initial[k]) for k in initial)
    # every weight learns in phase 2: the class and register tokens through attention too
    assert all(not torch.equal(after_unfrozen[k], initial[k]) for k in initial)


# experiment=smoke on the tiny DINOv2: 28 px synthetic images, a 4 x 4 grid of tokens
TINY_RUN = (
    "experiment=smoke",
    IMPORTS,
    "encoder=vit",
    f"encoder.name={DINOV2}",
    "encoder.input_scale=2",
    "encoder.weights=null",
    "encoder.depth=null",
    "data.image_size=28",
    "data.num_train=32",
    "data.num_val=16",
    "data.num_test=16",
    "data.batch_size=16",
    "model.latent_channels=4",
    "finetune.patience=null",
    "finetune.max_frozen_epochs=1",
    "finetune.warmup_steps=0",
    "trainer.enable_progress_bar=false",
    "test=false",
    "logger=none",
)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the tiny DINOv2 autoencoder (phase 1): its last checkpoint."""
    folder = tmp_path_factory.mktemp("vit_run")
    train(compose_job("train", *TINY_RUN, "trainer.max_epochs=1", output_dir=folder))
    return folder / "checkpoints" / "last.ckpt"


def test_a_vit_run_resumes_from_its_checkpoint_into_phase_two(
    vit_run: Path, tmp_path: Path
) -> None:
    resumed, _ = train(
        compose_job(
            "train", *TINY_RUN, "trainer.max_epochs=2", f"ckpt_path={vit_run}",
            output_dir=tmp_path / "resumed",
        )
    )  # fmt: skip
    assert resumed["transition_epoch"] == 0
    assert resumed["latent_floats"] == 4 * 4 * 4 and resumed["compression_ratio"] == 36.75
    assert resumed["val/psnr"] > 5


def test_a_vit_runs_checkpoint_is_the_encoders_weights(vit_run: Path) -> None:
    checkpoint = read_checkpoint(vit_run)
    ours = encoder(DINOV2, weights=str(vit_run), depth=3)
    for stage in ours.stage_names:
        prefix = f"encoder.stages.{stage}."
        expected = {
            k.removeprefix(prefix): v
            for k, v in checkpoint["state_dict"].items()
            if k.startswith(prefix)
        }
        loaded = ours.stages[stage].state_dict()
        assert set(loaded) == set(expected) and expected, stage
        assert all(torch.equal(loaded[k], v) for k, v in expected.items()), stage
    with pytest.raises(ConfigError, match=r"encoder.input_scale=2 .*the run's checkpoint"):
        encoder(DINOV2, weights=str(vit_run), input_scale=7)
    # the experiments' layout sets stem_pool=false, which a ViT ignores: the same geometry
    assert encoder(DINOV2, weights=str(vit_run), stem_pool=False).geometry.stem_pool is True


def test_offline_pretrained_vit_weights_fail_with_one_line_naming_the_hub(monkeypatch) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(ResourceUnavailableError) as error:
        Encoder("timm/vit_small_patch14_reg4_dinov2", weights="imagenet", input_scale=7)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "could not download the pretrained weights of timm/vit_small_patch14_reg4_dinov2 "
        "(timm/vit_small_patch14_reg4_dinov2.lvd142m on the Hugging Face hub)"
    )
    assert message.endswith("or train from scratch with encoder.weights=null.")


def test_other_timm_transformers_are_refused_naming_what_is_supported() -> None:
    with pytest.raises(ConfigError, match=r"VisionTransformerDistilled.*only timm's Vision"):
        Encoder("timm/deit_tiny_distilled_patch16_224", weights=None)


@pytest.mark.slow
def test_two_process_ddp_trains_a_vit_through_both_phases(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    result = run_script(
        "train.py",
        *(o for o in TINY_RUN if o != "logger=none"),
        *DDP_ON_CPU,
        "trainer.max_epochs=2",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        env=DDP_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["transition_epoch"] == 0 and metrics["val/psnr"] > 5
