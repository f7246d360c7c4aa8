"""Two-phase fine-tuning: rate spreads, freezing, plateau detection, transitions, strategies."""

from __future__ import annotations

import csv
import itertools
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from autoencoder.data import SyntheticDataModule
from autoencoder.errors import ConfigError
from autoencoder.finetuning import (
    Anchoring,
    BatchNormPolicy,
    EncoderRamp,
    PlateauRule,
    TwoPhaseFinetuning,
    Unfreezing,
    plateau_update,
)
from autoencoder.finetuning_rates import slanted_triangular
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.param_groups import RateSpread
from autoencoder.train import train

# ------------------------------------------------------------------------ rate spreads


def test_factor_spread_divides_each_lower_stage() -> None:
    rates = RateSpread(encoder_lr=1e-3, factor=2.6).stage_rates(5, decoder_lr=1.0)
    assert rates[-1] == pytest.approx(1e-3)
    for lower, upper in itertools.pairwise(rates):
        assert upper / lower == pytest.approx(2.6)
    assert RateSpread(factor=1.0).stage_rates(3, decoder_lr=1e-3) == pytest.approx([1e-3] * 3)


def test_geometric_pair_and_explicit_list() -> None:
    pair = RateSpread(lr_range=(1e-5, 1e-3))
    assert pair.stage_rates(3, decoder_lr=1.0) == pytest.approx([1e-5, 1e-4, 1e-3])
    assert pair.stage_rates(1, decoder_lr=1.0) == pytest.approx([1e-3])
    explicit = RateSpread(encoder_lr=1.0, rates=(0.1, 0.2))
    assert explicit.stage_rates(2, decoder_lr=1.0) == [0.1, 0.2]
    with pytest.raises(ConfigError, match="one rate per stage"):
        explicit.stage_rates(3, decoder_lr=1.0)
    with pytest.raises(ConfigError, match="low <= high"):
        RateSpread(lr_range=(1e-3, 1e-5))


# -------------------------------------------------------------------- plateau detection


def first_plateau(values, patience, mode="min", min_delta=0.0, relative=False) -> int | None:
    best, wait = (math.inf if mode == "min" else -math.inf), 0
    for index, value in enumerate(values):
        _, best, wait = plateau_update(value, best, wait, mode, min_delta, relative)
        if wait >= patience:
            return index
    return None


def test_plateau_detection_on_metric_sequences() -> None:
    assert first_plateau([1.0, 0.9, 0.8, 0.7], patience=1) is None
    assert first_plateau([1.0, 0.9, 0.95, 0.96], patience=2) == 3
    assert first_plateau([1.0, 0.9, 0.95, 0.85, 0.86], patience=2) is None
    assert first_plateau([10.0, 11.0, 10.5], patience=1, mode="max") == 2
    # absolute min_delta: 0.995 is not better than 1.0 by 0.01
    assert first_plateau([1.0, 0.995], patience=1, min_delta=0.01) == 1
    # relative min_delta: 99.5 is not 1% better than 100, 98 is
    assert first_plateau([100.0, 99.5], patience=1, min_delta=0.01, relative=True) == 1
    assert first_plateau([100.0, 98.0], patience=1, min_delta=0.01, relative=True) is None


def test_slanted_triangular_shape() -> None:
    total = 100
    values = [slanted_triangular(step, total) for step in range(total + 1)]
    assert values[0] == pytest.approx(1 / 32)
    assert max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == 10  # cut_frac 0.1
    assert values[-1] == pytest.approx(1 / 32)


def test_invalid_options_fail_at_construction_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"finetune\.unfrozen_bn='frozen' is invalid"):
        TwoPhaseFinetuning(unfrozen_bn="frozen")
    with pytest.raises(ConfigError, match="max_frozen_epochs=1 is below"):
        TwoPhaseFinetuning(min_frozen_epochs=2, max_frozen_epochs=1)
    with pytest.raises(ConfigError, match=r"finetune\.encoder_schedule='cosine' is invalid"):
        TwoPhaseFinetuning(encoder_schedule="cosine")
    with pytest.raises(ConfigError, match=r"finetune\.encoder_lr must be >= 0"):
        RateSpread(encoder_lr=-1.0)


def test_the_flat_arguments_build_the_groups() -> None:
    callback = TwoPhaseFinetuning(
        encoder_lr=1e-4,
        lr_range=[1e-5, 1e-3],
        patience=3,
        warmup_steps=7,
        frozen_bn="train",
        gradual=True,
        encoder_schedule="stlr",
    )
    assert callback.plateau == PlateauRule(
        monitor="val/loss",
        mode="min",
        patience=3,
        min_delta=0.0,
        relative_delta=False,
        min_frozen_epochs=1.0,
        max_frozen_epochs=1.0,
    )
    assert callback.rates.spread == RateSpread(encoder_lr=1e-4, lr_range=(1e-5, 1e-3))
    assert callback.rates.ramp == EncoderRamp(
        encoder_schedule="stlr",
        warmup_steps=7,
        warmup_epochs=1.0,
        min_warmup_steps=0,
        stlr_cut_frac=0.1,
        stlr_ratio=32.0,
    )
    assert callback.batchnorm == BatchNormPolicy(frozen_bn="train", unfrozen_bn="eval")
    assert callback.unfreezing == Unfreezing(gradual=True, gradual_every="plateau")


# ------------------------------------------------- a tiny model (freezing itself: the
# encoder contract, tests/models/test_encoder_contract.py)


def tiny_model(depth: int = 3, **kwargs) -> Autoencoder:
    return Autoencoder(Encoder("resnet18", weights=None, depth=depth), latent_channels=8, **kwargs)


def batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


# ------------------------------------------------------------------ integration (fits)


class Recorder(pl.Callback):
    """Records, at every training step, the phase, each group's rate and the group count."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.encoder_after_epoch: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        finetuning = next(c for c in trainer.callbacks if isinstance(c, TwoPhaseFinetuning))
        groups = trainer.optimizers[0].param_groups
        self.steps.append(
            {
                "step": trainer.global_step,
                "phase": finetuning.phase,
                "groups": len(groups),
                "lr": {g["name"]: g["lr"] for g in groups},
                "encoder_bn_training": [bn.training for bn in batchnorms(pl_module.encoder)],
            }
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.encoder_after_epoch.append(
            {k: v.detach().clone() for k, v in pl_module.encoder.state_dict().items()}
        )


def fit(callback: TwoPhaseFinetuning, max_epochs: int = 4, **trainer_kwargs) -> tuple:
    pl.seed_everything(0)
    model = tiny_model()
    initial = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    recorder = Recorder()
    datamodule = SyntheticDataModule(num_train=64, num_val=32, num_test=32, batch_size=16)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        callbacks=[callback, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=datamodule)
    return model, recorder, initial


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_transition_mid_run_sets_every_rate_once_and_keeps_phase_one_bit_identical() -> None:
    callback = TwoPhaseFinetuning(
        patience=None,
        min_frozen_epochs=2,
        max_frozen_epochs=2,
        encoder_lr=1e-3,
        factor=2.0,
        warmup_steps=4,
    )
    model, recorder, initial = fit(callback, max_epochs=4)
    steps = recorder.steps
    assert len(steps) == 16 and all(s["groups"] == 4 for s in steps)
    assert callback.transition_epoch == 1 and callback.transition_step == 8
    assert [s["phase"] for s in steps] == [1] * 8 + [2] * 8  # fired once, never went back
    assert callback.rates.unfreeze_steps == {"stem": 8, "layer1": 8, "layer2": 8}

    for s in steps[:8]:  # phase 1: decoder only, encoder rates 0, BN in eval
        assert s["lr"] == {
            "decoder": 1e-3,
            "encoder.stem": 0.0,
            "encoder.layer1": 0.0,
            "encoder.layer2": 0.0,
        }
        assert not any(s["encoder_bn_training"])
    peaks = {"encoder.stem": 2.5e-4, "encoder.layer1": 5e-4, "encoder.layer2": 1e-3}
    for k, s in enumerate(steps[8:12]):  # linear warm-up over 4 steps
        for name, peak in peaks.items():
            assert s["lr"][name] == pytest.approx(peak * (k + 1) / 4)
        assert s["lr"]["decoder"] == pytest.approx(1e-3)
    for s in steps[12:]:
        for name, peak in peaks.items():
            assert s["lr"][name] == pytest.approx(peak)
    assert not any(steps[-1]["encoder_bn_training"])  # unfrozen_bn eval in phase 2 too

    # encoder (weights and BN statistics) bit-identical through phase 1, changed in phase 2
    assert same(recorder.encoder_after_epoch[1], initial)
    final = recorder.encoder_after_epoch[-1]
    assert not torch.equal(
        final["stages.layer2.0.conv1.weight"], initial["stages.layer2.0.conv1.weight"]
    )
    assert not torch.equal(final["stages.stem.0.weight"], initial["stages.stem.0.weight"])
    assert all(p.requires_grad for p in model.encoder.parameters())


class GraphProbe(pl.Callback):
    """Records, for every training step, whether the encoder's output carried an autograd
    graph and which encoder parameters had a gradient after the step."""

    def __init__(self) -> None:
        self.graph: list[bool] = []
        self.with_grad: list[int] = []
        self._training = False

    def on_fit_start(self, trainer, pl_module) -> None:
        def record(module, inputs, output) -> None:
            if self._training:
                self.graph.append(output.grad_fn is not None or output.requires_grad)

        pl_module.encoder.register_forward_hook(record)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._training = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._training = False
        grads = [p for p in pl_module.encoder.parameters() if p.grad is not None]
        self.with_grad.append(len(grads))


def test_phase_one_runs_the_encoder_without_a_graph_and_gives_it_no_gradients() -> None:
    probe = GraphProbe()
    callback = TwoPhaseFinetuning(patience=None, max_frozen_epochs=2, warmup_steps=0)
    pl.seed_everything(0)
    model = tiny_model()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=3,
        callbacks=[callback, probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule = SyntheticDataModule(num_train=64, num_val=32, num_test=32, batch_size=16)
    trainer.fit(model, datamodule=datamodule)
    # 4 steps per epoch: phase 1 for steps 0-7, phase 2 from step 8
    assert callback.transition_step == 8
    assert probe.graph == [False] * 8 + [True] * 4
    assert probe.with_grad[:8] == [0] * 8  # every frozen .grad stayed None
    assert all(count == len(list(model.encoder.parameters())) for count in probe.with_grad[8:])


def test_plateau_triggers_transition_at_mid_epoch_validation() -> None:
    # min_delta=1 makes every check after the first a non-improvement: a plateau
    callback = TwoPhaseFinetuning(
        patience=1,
        min_delta=1.0,
        min_frozen_epochs=1,
        max_frozen_epochs=None,
        warmup_steps=0,
    )
    _, recorder, _ = fit(callback, max_epochs=2, val_check_interval=0.5)
    # validations after 2 and 4 steps; the one at 1.0 epochs (step 4) is the first allowed
    assert callback.transition_step == 4 and callback.transition_epoch == 0
    assert [s["phase"] for s in recorder.steps] == [1] * 4 + [2] * 4
    assert recorder.steps[4]["lr"]["encoder.layer2"] == pytest.approx(1e-3)


def test_gradual_unfreezing_adds_one_stage_per_epoch() -> None:
    callback = TwoPhaseFinetuning(
        patience=None,
        min_frozen_epochs=1,
        max_frozen_epochs=1,
        factor=2.0,
        warmup_steps=0,
        gradual=True,
        gradual_every="epoch",
    )
    _, recorder, _ = fit(callback, max_epochs=4)
    assert callback.rates.unfreeze_steps == {"layer2": 4, "layer1": 8, "stem": 12}
    lr = [s["lr"] for s in recorder.steps]
    assert lr[4]["encoder.layer2"] > 0 and lr[4]["encoder.layer1"] == 0
    assert lr[8]["encoder.layer1"] > 0 and lr[8]["encoder.stem"] == 0
    assert lr[12]["encoder.stem"] == pytest.approx(2.5e-4)


def test_monitor_that_is_never_logged_is_reported() -> None:
    callback = TwoPhaseFinetuning(monitor="val/typo", max_frozen_epochs=None)
    with pytest.raises(ConfigError, match=r"finetune.monitor='val/typo' .* val/loss"):
        fit(callback, max_epochs=1)


class ProbedModel(Autoencoder):
    """Logs ``val/probe``: NaN at the validations of ``nan_epochs``, else 1.0."""

    def __init__(self, nan_epochs: set[int]) -> None:
        super().__init__(Encoder("resnet18", weights=None, depth=3), latent_channels=8)
        self.nan_epochs = nan_epochs

    def on_validation_epoch_end(self) -> None:
        value = math.nan if self.current_epoch in self.nan_epochs else 1.0
        self.log("val/probe", value)


@pytest.mark.parametrize(("nan_epochs", "transition_epoch"), [(set(), 1), ({1, 2}, 3)])
def test_a_nan_monitored_value_is_skipped_not_counted_as_a_plateau(
    nan_epochs: set[int], transition_epoch: int
) -> None:
    """The probe never improves, so the second finite value is a plateau (patience 1); NaN
    values in between must change neither the best value nor the wait."""
    callback = TwoPhaseFinetuning(
        monitor="val/probe",
        patience=1,
        min_frozen_epochs=0,
        max_frozen_epochs=None,
        warmup_steps=0,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=4,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    datamodule = SyntheticDataModule(num_train=32, num_val=16, num_test=16, batch_size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ProbedModel(nan_epochs), datamodule=datamodule)
    assert callback.transition_epoch == transition_epoch
    skipped = [w for w in caught if "not counted towards a plateau" in str(w.message)]
    assert len(skipped) == len(nan_epochs)


class NoEncoderModel(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lr = 1e-3
        self.layer = nn.Linear(2, 2)


class NoRatePolicyModel(NoEncoderModel):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder("resnet18", weights=None, depth=2)


@pytest.mark.parametrize(
    ("model", "missing"),
    [(NoEncoderModel, "encoder"), (NoRatePolicyModel, "rate_policy")],
)
def test_a_model_without_the_contract_is_refused_naming_what_it_lacks(
    model: type[pl.LightningModule], missing: str
) -> None:
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False)
    with pytest.raises(ConfigError) as error:
        TwoPhaseFinetuning().setup(trainer, model(), "fit")
    assert str(error.value) == (
        f"TwoPhaseFinetuning needs the model's `{missing}`, which {model.__name__} lacks "
        "(see autoencoder.finetuning.FinetunableModel)."
    )


# --------------------------------------------------------- strategies, through Hydra


def run_strategy(compose_cfg, tmp_path, *overrides: str) -> tuple[dict, list[dict]]:
    cfg = compose_cfg(
        "experiment=smoke",
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=32",
        "data.batch_size=16",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "test=false",
        *overrides,
        output_dir=tmp_path / "run",
    )
    summary, _ = train(cfg)
    with open(tmp_path / "run" / "csv" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("lr-AdamW/decoder")]
    return summary, [{k: float(v) for k, v in row.items() if v} for row in rows]


ENCODER_LRS = ("lr-AdamW/encoder.stem", "lr-AdamW/encoder.layer1", "lr-AdamW/encoder.layer2")


def test_full_strategy_trains_everything_from_step_zero_at_one_rate(compose_cfg, tmp_path) -> None:
    summary, rows = run_strategy(compose_cfg, tmp_path, "finetune=full", "trainer.max_epochs=1")
    assert summary["transition_epoch"] == 0
    assert rows[0]["step"] == 0
    assert all(row[name] == pytest.approx(1e-3) for row in rows for name in ENCODER_LRS)


def test_frozen_strategy_never_unfreezes(compose_cfg, tmp_path) -> None:
    summary, rows = run_strategy(compose_cfg, tmp_path, "finetune=frozen", "trainer.max_epochs=2")
    assert summary["transition_epoch"] is None
    assert all(row[name] == 0.0 for row in rows for name in ENCODER_LRS)
    assert all(row["lr-AdamW/decoder"] == pytest.approx(1e-3) for row in rows)


def test_epoch_strategy_unfreezes_at_the_fixed_epoch(compose_cfg, tmp_path) -> None:
    summary, rows = run_strategy(
        compose_cfg,
        tmp_path,
        "finetune=epoch",
        "finetune.min_frozen_epochs=1",
        "finetune.max_frozen_epochs=1",
        "trainer.max_epochs=2",
    )
    assert summary["transition_epoch"] == 0
    before = [row for row in rows if row["step"] < 4]
    after = [row for row in rows if row["step"] >= 4]
    assert before and after
    assert all(row[name] == 0.0 for row in before for name in ENCODER_LRS)
    assert all(row[name] == pytest.approx(1e-4) for row in after for name in ENCODER_LRS)


@pytest.mark.parametrize(
    ("override", "warmup"),
    [(None, 16), ("finetune.min_warmup_steps=100", 100), ("finetune.warmup_steps=0", 0)],
    ids=["shipped", "at-least-100-steps", "no-warm-up"],
)
def test_the_shipped_two_phase_schedule_step_by_step(
    compose_cfg, tmp_path, override: str | None, warmup: int
) -> None:
    """conf/finetune/two_phase.yaml as shipped: phase 1 for one epoch (16 steps here), then
    the top stage at the decoder's rate and each stage below at 1/2.6 of the one above,
    ramped up linearly over one epoch; the decoder's rate constant."""
    summary, rows = run_strategy(
        compose_cfg,
        tmp_path,
        "data.batch_size=4",
        "data.num_val=8",
        "data.image_size=16",
        "trainer.max_epochs=8",
        *([override] if override else []),
    )
    lr = {int(row["step"]): row for row in rows}
    assert summary["transition_epoch"] == 0 and sorted(lr) == list(range(128))
    peaks = {"encoder.layer2": 1e-3, "encoder.layer1": 1e-3 / 2.6, "encoder.stem": 1e-3 / 2.6**2}
    for step in (0, 15, 16, 17, 31, 32, 60, 114, 115, 116, 127):
        ramp = 0.0 if step < 16 else min(1.0, (step - 15) / warmup) if warmup else 1.0
        assert lr[step]["lr-AdamW/decoder"] == pytest.approx(1e-3, rel=1e-6), step
        for group, peak in peaks.items():
            assert lr[step][f"lr-AdamW/{group}"] == pytest.approx(peak * ramp, rel=1e-6), (
                step,
                group,
            )


def test_slanted_triangular_schedule_drives_encoder_rates_in_phase_two() -> None:
    callback = TwoPhaseFinetuning(
        patience=None,
        min_frozen_epochs=1,
        max_frozen_epochs=1,
        encoder_lr=1e-3,
        factor=2.0,
        encoder_schedule="stlr",
    )
    _, recorder, _ = fit(callback, max_epochs=3)
    assert callback.transition_step == 4 and callback.rates.total_steps == 12
    for s in recorder.steps[4:]:
        expected = 1e-3 * slanted_triangular(s["step"] - 4, 12 - 4)
        assert s["lr"]["encoder.layer2"] == pytest.approx(expected)
        assert s["lr"]["encoder.stem"] == pytest.approx(expected / 4)
        assert s["lr"]["decoder"] == pytest.approx(1e-3)


@pytest.mark.parametrize(("min_steps", "expected"), [(2, 4), (6, 6)])
def test_warmup_in_epochs_lasts_at_least_min_warmup_steps(min_steps: int, expected: int) -> None:
    callback = TwoPhaseFinetuning(
        patience=None,
        min_frozen_epochs=1,
        max_frozen_epochs=1,
        warmup_epochs=1.0,
        min_warmup_steps=min_steps,
    )
    _, recorder, _ = fit(callback, max_epochs=3)
    assert callback.rates.resolved_warmup_steps == expected  # one epoch is 4 steps
    for k, s in enumerate(recorder.steps[4:]):
        assert s["lr"]["encoder.layer2"] == pytest.approx(1e-3 * min(1.0, (k + 1) / expected))


@pytest.mark.parametrize(("frozen_bn", "unfrozen_bn"), [("eval", "train"), ("train", "eval")])
def test_bn_modes_follow_the_policy_through_a_transition_at_validation(
    frozen_bn: str, unfrozen_bn: str
) -> None:
    # The transition happens at the end of a validation, while the model is in eval mode:
    # the new BatchNorm modes must hold once training resumes, in every later epoch.
    callback = TwoPhaseFinetuning(
        patience=None,
        min_frozen_epochs=1,
        max_frozen_epochs=1,
        warmup_steps=2,
        frozen_bn=frozen_bn,
        unfrozen_bn=unfrozen_bn,
    )
    _, recorder, _ = fit(callback, max_epochs=3)
    modes = [set(s["encoder_bn_training"]) for s in recorder.steps]
    assert all(m == {frozen_bn == "train"} for m in modes[:4])  # phase 1: frozen_bn
    assert all(m == {unfrozen_bn == "train"} for m in modes[4:])  # phase 2: unfrozen_bn


# ------------------------------------------------------------------------ L2-SP, contract
def distance_from_start(model: Autoencoder, start: dict[str, torch.Tensor], prefix: str) -> float:
    return sum(
        float((value - start[key]).pow(2).sum())
        for key, value in model.state_dict().items()
        if key.startswith(prefix) and value.is_floating_point() and "running" not in key
    )


@pytest.mark.parametrize("scope", ["all", "encoder"])
def test_l2_sp_pulls_the_weights_toward_their_start(scope: str) -> None:
    """The same fit with and without the pull: with it, the anchored weights end nearer
    their start; outside the scope the pull changes nothing of its own."""
    ends = {}
    for strength in (0.0, 50.0):
        pl.seed_everything(0)
        model = tiny_model()
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        callback = TwoPhaseFinetuning(
            patience=None,
            min_frozen_epochs=0,
            max_frozen_epochs=0,
            warmup_epochs=0,
            l2_sp=strength,
            l2_sp_scope=scope,
        )
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=2,
            callbacks=[callback],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        datamodule = SyntheticDataModule(num_train=64, num_val=32, num_test=32, batch_size=16)
        trainer.fit(model, datamodule=datamodule)
        ends[strength] = {
            part: distance_from_start(model, start, part) for part in ("encoder.", "decoder.")
        }
    assert ends[50.0]["encoder."] < 0.7 * ends[0.0]["encoder."]
    if scope == "all":
        assert ends[50.0]["decoder."] < 0.7 * ends[0.0]["decoder."]
    else:
        assert ends[50.0]["decoder."] > 0.7 * ends[0.0]["decoder."]


def test_l2_sp_is_validated_and_a_flat_key() -> None:
    assert TwoPhaseFinetuning(l2_sp=0.5).anchoring == Anchoring(l2_sp=0.5, l2_sp_scope="all")
    with pytest.raises(ConfigError, match=r"finetune\.l2_sp must be >= 0"):
        TwoPhaseFinetuning(l2_sp=-1.0)


def test_a_scheduler_other_than_the_models_lambdalr_is_refused() -> None:
    class StepScheduled(Autoencoder):
        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]

    model = StepScheduled(Encoder("resnet18", weights=None, depth=2), latent_channels=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[TwoPhaseFinetuning()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule = SyntheticDataModule(num_train=32, num_val=16, num_test=16, batch_size=16)
    with pytest.raises(ConfigError, match=r"through the model's LambdaLR.*found: StepLR"):
        trainer.fit(model, datamodule=datamodule)
