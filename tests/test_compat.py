"""Each private API the project uses (autoencoder/compat.py) still behaves as relied on."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.strategies import DDPStrategy
from torch.optim.lr_scheduler import LambdaLR

from autoencoder import compat


def test_reapply_lr_lambdas_sets_and_reports_the_rates_at_the_current_step() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    factor = {"value": 1.0}
    scheduler = LambdaLR(optimizer, lambda step: factor["value"] * (step + 1))
    optimizer.step()
    scheduler.step()  # step 1: 0.1 * 2
    factor["value"] = 0.125  # changed mid-step
    assert scheduler.get_last_lr() == [pytest.approx(0.2)]
    compat.reapply_lr_lambdas(scheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert scheduler.get_last_lr() == [pytest.approx(0.025)]
    assert scheduler.last_epoch == 1  # the step count is unchanged


def test_failed_job_exception_reads_it_without_printing(capsys) -> None:
    error = ValueError("boom")
    job_return = JobReturn(overrides=["a=1"], status=JobStatus.FAILED, _return_value=error)
    assert compat.failed_job_exception(job_return) is error
    assert capsys.readouterr().err == ""


def test_config_child_and_items_leave_interpolations_unresolved() -> None:
    cfg = OmegaConf.create({"run": "${hydra:runtime.output_dir}", "entries": ["${oops}", 1]})
    child = compat.config_child(cfg, "run")
    assert child._is_interpolation() and child._value() == "${hydra:runtime.output_dir}"
    assert list(compat.config_items(cfg.entries)) == ["${oops}", 1]


def test_ddp_finds_unused_parameters_reads_the_strategy_setting() -> None:
    assert compat.ddp_finds_unused_parameters(DDPStrategy(find_unused_parameters=True))
    assert not compat.ddp_finds_unused_parameters(DDPStrategy())


@pytest.mark.parametrize("value", [True, False])
def test_uses_distributed_sampler_reads_the_trainer_argument(value: bool) -> None:
    trainer = pl.Trainer(accelerator="cpu", use_distributed_sampler=value, logger=False)
    assert compat.uses_distributed_sampler(trainer) is value


def test_launched_rank_processes_is_the_list_lightnings_observer_watches() -> None:
    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    launched = compat.launched_rank_processes(ddp)
    assert launched == [] and launched is ddp.strategy.launcher.procs
    single = pl.Trainer(accelerator="cpu", devices=1, logger=False)
    assert compat.launched_rank_processes(single) == []


def test_wandb_run_started_is_false_until_the_experiment_is_used(tmp_path) -> None:
    logger = WandbLogger(project="compat", save_dir=str(tmp_path), mode="disabled")
    assert not compat.wandb_run_started(logger)
    run = logger.experiment
    assert compat.wandb_run_started(logger)
    run.finish()


def test_the_appending_csv_writer_keeps_an_existing_log(tmp_path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,val/psnr\n0,3,20.0\n")
    logger = CSVLogger(str(tmp_path), name="csv", version="")
    compat.use_appending_csv_writer(logger)
    assert isinstance(logger.experiment, compat.AppendingCSVWriter)
    logger.log_metrics({"val/psnr": 21.0, "val/ssim": 0.5}, step=6)
    logger.save()
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == ["epoch", "step", "val/psnr", "val/ssim"]
    assert lines[1:] == ["0,3,20.0,", ",6,21.0,0.5"]


def test_foreach_lerp_and_copy_update_every_tensor_in_place() -> None:
    tensors = [torch.zeros(3), torch.zeros(2, 2)]
    targets = [torch.ones(3), torch.full((2, 2), 2.0)]
    compat.lerp_all_(tensors, targets, torch.tensor(0.25))
    assert torch.allclose(tensors[0], torch.full((3,), 0.25))
    assert torch.allclose(tensors[1], torch.full((2, 2), 0.5))
    compat.copy_all_(tensors, targets)
    assert all(torch.equal(t, s) for t, s in zip(tensors, targets, strict=True))


def test_logs_this_step_follows_the_trainers_logging_cadence() -> None:
    seen = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            seen.append(compat.logs_this_step(trainer))

    from autoencoder.data import SyntheticDataModule
    from autoencoder.models.autoencoder import Autoencoder
    from autoencoder.models.encoders import Encoder

    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        log_every_n_steps=3,
        callbacks=[Probe()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    model = Autoencoder(Encoder("resnet18", weights=None, depth=1), latent_channels=4)
    trainer.fit(model, datamodule=SyntheticDataModule(num_train=96, batch_size=16))
    assert seen == [False, False, True, False, False, True]


def test_attached_trainer_is_none_until_a_trainer_holds_the_module() -> None:
    module = pl.LightningModule()
    assert compat.attached_trainer(module) is None
    with pytest.raises(RuntimeError):  # what the public property does instead
        _ = module.trainer
    trainer = pl.Trainer(accelerator="cpu", logger=False)
    module.trainer = trainer
    assert compat.attached_trainer(module) is trainer


def test_batches_done_in_epoch_counts_the_epochs_completed_batches_at_each_validation() -> None:
    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx) -> None:
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = []

    class Probe(pl.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                seen.append((trainer.current_epoch, compat.batches_done_in_epoch(trainer)))

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(8, 2)))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=1,
        val_check_interval=2,
        num_sanity_val_steps=0,
        callbacks=[Probe()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), train_dataloaders=loader, val_dataloaders=loader)
    assert seen == [(0, 2), (0, 4), (1, 2), (1, 4)]


def test_the_batchnorm_classes_the_encoder_keeps_in_eval_are_every_batchnorm() -> None:
    """Encoder.train matches BatchNorm by torch's public classes: every BatchNorm layer torch
    makes (the lazy ones become these once built) is one of them."""
    from torch.nn.modules.batchnorm import _BatchNorm, _LazyNormBase

    from autoencoder.models.encoders import BATCH_NORMS

    public = [getattr(torch.nn, name) for name in dir(torch.nn)]
    kinds = [k for k in public if isinstance(k, type) and issubclass(k, _BatchNorm)]
    assert kinds and all(
        issubclass(k, BATCH_NORMS) or issubclass(k, _LazyNormBase) for k in kinds
    ), kinds


def test_basic_sweeper_jobs_expand_the_sweeps_in_the_sweepers_order() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(["a=1,2", "b=x", "c=3,4"])
    assert compat.basic_sweeper_jobs(overrides) == [
        ["a=1", "b=x", "c=3"],
        ["a=1", "b=x", "c=4"],
        ["a=2", "b=x", "c=3"],
        ["a=2", "b=x", "c=4"],
    ]
