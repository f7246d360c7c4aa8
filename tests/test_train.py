"""End-to-end training jobs: Hydra composition, metrics.json, checkpoints, resume, CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from pytorch_lightning.trainer.connectors import data_connector

from autoencoder.examples import smoke_overrides
from autoencoder.train import train
from tests.conftest import DDP_ENV, DDP_ON_CPU, run_script
from tests.probes import BatchCounter

SMALL = smoke_overrides()
# Transition forced after 2 epochs, with a warm-up that runs into the 4th epoch.
SCHEDULE = (
    "finetune.patience=null",
    "finetune.max_frozen_epochs=2",
    "finetune.warmup_steps=6",
    "trainer.deterministic=true",
    # test the final weights: a resumed run in a new folder tracks its own best checkpoint
    "callbacks.model_checkpoint.save_top_k=0",
)
METRIC_KEYS = {
    "test/mse",
    "test/mae",
    "test/psnr",
    "test/ssim",
    "latent_floats",
    "compression_ratio",
    "transition_epoch",
    "transition_step",
    "best_ckpt",
    "fit_seconds",
}


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_compose_and_train_on_arrays_writes_metrics_and_checkpoints(
    compose_cfg, arrays_dir, tmp_path
) -> None:
    out = tmp_path / "run"
    cfg = compose_cfg(
        "data=arrays",
        f"data.path={arrays_dir}",
        "data.num_workers=0",
        "data.batch_size=16",
        "encoder.weights=null",
        "layout=depth3",
        "logger=csv",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        output_dir=out,
    )
    summary, _ = train(cfg)
    metrics = read_metrics(out)
    assert set(metrics) >= METRIC_KEYS
    assert metrics == json.loads(json.dumps(summary))
    assert 5 < metrics["test/psnr"] < 60 and 0 < metrics["test/mse"] < 0.1
    assert metrics["latent_floats"] == 16 * 4 * 4 and metrics["compression_ratio"] == 12.0
    assert Path(metrics["best_ckpt"]).is_file() and (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("stop_after", [1, 3], ids=["resume-in-phase-1", "resume-in-phase-2"])
def test_resume_matches_an_uninterrupted_run(compose_cfg, tmp_path, stop_after: int) -> None:
    full = tmp_path / "full"
    reference, _ = train(compose_cfg(*SMALL, *SCHEDULE, "trainer.max_epochs=4", output_dir=full))

    part = tmp_path / "part"
    first, _ = train(
        compose_cfg(*SMALL, *SCHEDULE, f"trainer.max_epochs={stop_after}", output_dir=part)
    )
    assert first["transition_epoch"] == (None if stop_after == 1 else 1)
    last = part / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    saved = next(v for k, v in state["callbacks"].items() if "TwoPhaseFinetuning" in k)
    assert bool(saved["unfreeze_steps"]) == (stop_after == 3)  # phase 2 has unfrozen stages

    resumed_dir = tmp_path / "resumed"
    resumed, _ = train(
        compose_cfg(
            *SMALL, *SCHEDULE, "trainer.max_epochs=4", f"ckpt_path={last}", output_dir=resumed_dir
        )
    )
    assert (resumed["transition_epoch"], reference["transition_epoch"]) == (1, 1)
    for key in ("val/psnr", "test/mse", "test/psnr", "test/ssim"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7), key
    final = torch.load(
        resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    expected = torch.load(
        full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=1e-5, atol=1e-6)
    lrs = [g["lr"] for g in final["optimizer_states"][0]["param_groups"]]
    assert lrs == pytest.approx([g["lr"] for g in expected["optimizer_states"][0]["param_groups"]])


# The plateau path of the default strategy, with no epoch cap: min_delta=10 makes every check
# after the first a non-improvement, so the wait counter reads 0, 1, 2 after epochs 0, 1, 2,
# and patience 2 unfreezes at the end of epoch 2 (4 steps per epoch: step 12).
PLATEAU = (
    "finetune.patience=2",
    "finetune.min_delta=10",
    "finetune.max_frozen_epochs=null",
    "finetune.warmup_steps=0",
    "trainer.deterministic=true",
    "callbacks.model_checkpoint.save_top_k=0",
)


def finetuning_state(checkpoint: Path) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return next(v for k, v in state["callbacks"].items() if "TwoPhaseFinetuning" in k)


def test_a_run_stopped_while_waiting_for_a_plateau_resumes_to_the_same_transition(
    compose_cfg, tmp_path
) -> None:
    full = tmp_path / "full"
    reference, _ = train(compose_cfg(*SMALL, *PLATEAU, "trainer.max_epochs=5", output_dir=full))
    expected = finetuning_state(full / "checkpoints" / "last.ckpt")
    assert reference["transition_epoch"] == 2 and min(expected["unfreeze_steps"].values()) == 12

    part = tmp_path / "part"
    train(compose_cfg(*SMALL, *PLATEAU, "trainer.max_epochs=2", output_dir=part))
    last = part / "checkpoints" / "last.ckpt"
    stopped = finetuning_state(last)
    assert stopped["wait"] == 1 and stopped["unfreeze_steps"] == {}  # waiting, still frozen

    resumed_dir = tmp_path / "resumed"
    resumed, _ = train(
        compose_cfg(
            *SMALL, *PLATEAU, "trainer.max_epochs=5", f"ckpt_path={last}", output_dir=resumed_dir
        )
    )
    assert resumed["transition_epoch"] == 2
    assert finetuning_state(resumed_dir / "checkpoints" / "last.ckpt") == expected
    for key in ("val/psnr", "test/mse", "test/psnr"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7), key


def test_debug_fast_runs_one_batch_of_each_split(compose_cfg, tmp_path) -> None:
    summary, _ = train(
        compose_cfg(
            *SMALL,
            "debug=fast",
            "+callbacks.counter._target_=tests.probes.BatchCounter",
            output_dir=tmp_path / "fast",
        )
    )
    counter = BatchCounter.instances[-1]
    assert counter.global_step == 1
    assert counter.batches == {"train": 1, "validation": 1, "test": 1}
    assert summary["latent_floats"] == 256 and summary["test/psnr"] is not None
    assert not (tmp_path / "fast" / "checkpoints").exists()


def test_train_script_trains_then_resumes_from_its_checkpoint(tmp_path) -> None:
    run_dir = tmp_path / "script"
    first = run_script("train.py", *SMALL, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert set(metrics) >= METRIC_KEYS and metrics["test/psnr"] > 5
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    last = run_dir / "checkpoints" / "last.ckpt"
    resumed_dir = tmp_path / "resumed"
    second = run_script(
        "train.py",
        *SMALL,
        "trainer.max_epochs=3",
        f"ckpt_path={last}",
        f"hydra.run.dir={resumed_dir}",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in second.stdout + second.stderr
    state = torch.load(
        resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert state["epoch"] == 2  # epochs 0 and 1 came from the checkpoint, epoch 2 was trained


def test_offline_default_run_stops_before_training_with_the_fixes(tmp_path) -> None:
    # An unreachable proxy makes every download fail fast, as on a machine without network.
    offline = {
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    result = run_script(
        "train.py",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=offline,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    text = "\n".join(errors)
    assert (
        "CIFAR-10 is not in" in text and "data=arrays data.path=" in text and "data.root=" in text
    )
    assert "ImageNet weights of resnet18" in text and "encoder.weights=PATH" in text
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_two_process_ddp_goes_through_both_phases_and_ranks_agree(tmp_path) -> None:
    run_dir, probe = tmp_path / "ddp", tmp_path / "probe"
    result = run_script(
        "train.py",
        *SMALL,
        *DDP_ON_CPU,
        "trainer.max_epochs=3",
        "finetune.patience=null",
        "finetune.max_frozen_epochs=1",
        "finetune.warmup_steps=2",
        f"hydra.run.dir={run_dir}",
        "+callbacks.rank_probe._target_=tests.probes.RankProbe",
        f"+callbacks.rank_probe.folder={probe}",
        "logger=wandb",
        env=DDP_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0] == ranks[1]  # same phase, same transition step, same rates, same weights
    # 64 images over 2 ranks in batches of 16: 2 steps per epoch, transition after epoch 0
    assert ranks[0]["phase"] == 2 and ranks[0]["transition_step"] == 2
    metrics = read_metrics(run_dir)
    assert metrics["transition_epoch"] == 0 and metrics["test/psnr"] > 5
    assert sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".json")) == ["metrics.json"]
    # Lightning re-ran the script for rank 1 in the same folder: one folder, one W&B run
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "probe"]


@pytest.mark.slow
def test_ddp_ranks_unfreeze_together_when_only_one_sees_a_plateau(tmp_path) -> None:
    """Rank 1's monitored value stops improving at its second validation, rank 0's never
    does (tests/probes.py RankMonitor). The plateau decision is reduced over the ranks,
    so both unfreeze at the end of epoch 1: 64 images over 2 ranks in batches of 16 make 2
    steps per epoch, step 4."""
    probe = tmp_path / "probe"
    result = run_script(
        "train.py",
        *SMALL,
        *DDP_ON_CPU,
        "trainer.max_epochs=3",
        "test=false",
        "logger=csv",
        "finetune.monitor=val/rank_probe",
        "finetune.patience=1",
        "finetune.max_frozen_epochs=null",
        "finetune.warmup_steps=0",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        "+callbacks.rank_monitor._target_=tests.probes.RankMonitor",
        "+callbacks.rank_probe._target_=tests.probes.RankProbe",
        f"+callbacks.rank_probe.folder={probe}",
        env=DDP_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [rank["transition_step"] for rank in ranks] == [4, 4]
    assert ranks[0]["unfreeze_steps"] == ranks[1]["unfreeze_steps"]
    assert ranks[0]["encoder_sum"] == ranks[1]["encoder_sum"]  # the same updates on both


def test_smoke_experiment_goes_through_both_phases(compose_cfg, tmp_path) -> None:
    summary, _ = train(compose_cfg("experiment=smoke", "trainer.enable_progress_bar=false"))
    assert summary["transition_epoch"] is not None and summary["transition_epoch"] < 3
    assert summary["test/psnr"] > 10


@pytest.mark.slow
def test_quickstart_runs_offline_quietly_and_reconstructs_its_pictures(tmp_path) -> None:
    """The README's first command as a user runs it (about a minute on 2 idle CPU cores):
    no download, no warning, and reconstructions close enough to see the input in them."""
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py", "experiment=quickstart", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warn" not in result.stderr.lower() and "warn" not in result.stdout.lower()
    metrics = read_metrics(run_dir)
    assert metrics["test/psnr"] >= 25
    assert metrics["latent_floats"] == 2 * 16 * 16 and metrics["transition_step"] == 0
    assert (run_dir / "reconstructions" / "test.png").is_file()


def test_only_in_memory_data_is_spared_lightnings_advice_to_add_loader_workers(
    compose_cfg, arrays_dir, tmp_path, monkeypatch
) -> None:
    """With more cores than this machine's, Lightning advises loader workers for
    ``num_workers=0``: noise for the generated images, which are tensors in memory; still
    said for images read from files."""
    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda devices: 7)
    quick = ("trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false")
    on_files = (
        "data=arrays",
        f"data.path={arrays_dir}",
        "data.num_workers=0",
        "encoder.weights=null",
        "layout=depth3",
        "trainer.accelerator=cpu",
    )
    for overrides, advised in ((SMALL, False), (on_files, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(compose_cfg(*overrides, *quick, output_dir=tmp_path / str(advised)))
        said = any("does not have many workers" in str(w.message) for w in caught)
        assert said is advised


def test_logger_none_and_wandb_offline(compose_cfg, tmp_path, monkeypatch) -> None:
    quick = (*SMALL, "trainer.max_epochs=1", "test=false")
    none, _ = train(compose_cfg(*quick, "logger=none", output_dir=tmp_path / "none"))
    assert none["val/psnr"] is not None
    assert not (tmp_path / "none" / "csv").exists() and not (tmp_path / "none" / "wandb").exists()

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no credentials
    train(compose_cfg(*quick, "logger=wandb", output_dir=tmp_path / "wb"))
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
