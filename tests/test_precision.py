"""``trainer.precision=auto`` picks bf16 only where the hardware computes in it, and an
explicit bf16 where it is emulated warns; the hardware probes are replaced here, so every
machine is tested on any machine."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from autoencoder import precision
from autoencoder.cli import run_job
from autoencoder.precision import auto_precision, resolve_precision
from autoencoder.validation import validate_config
from tests.conftest import compose_job

AVX2_ONLY = "fpu sse sse2 avx avx2 fma"


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A machine without CUDA whose CPU lists the given /proc/cpuinfo flags."""

    def machine(flags: str) -> None:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
        monkeypatch.setattr(precision, "cuda_available", lambda: False)

    return machine


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch):
    """A machine with one CUDA device of the given compute capability (bf16 reported as
    supported either way, as torch does with emulation) and an AVX2-only CPU."""

    def machine(capability: tuple[int, int], name: str = "Some GPU") -> None:
        monkeypatch.setattr(precision, "cuda_available", lambda: True)
        monkeypatch.setattr(precision, "cuda_capability", lambda index: capability)
        monkeypatch.setattr(precision, "cuda_bf16_supported", lambda: True)
        monkeypatch.setattr(precision, "cuda_name", lambda index: name)
        monkeypatch.setattr(precision, "cpu_flags", lambda: set(AVX2_ONLY.split()))

    return machine


def trainer_cfg(precision_value: str, accelerator: str = "auto", devices=1):
    """A config with a trainer section, read-only and struct as a Hydra job's may be."""
    cfg = OmegaConf.create(
        {"trainer": {"precision": precision_value, "accelerator": accelerator, "devices": devices}}
    )
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == precision.__name__ and r.levelno == level
    ]


@pytest.mark.parametrize(
    ("flags", "expected", "reason"),
    [
        (f"{AVX2_ONLY} avx512f avx512_bf16", "bf16-mixed", "CPU has avx512_bf16"),
        (f"{AVX2_ONLY} avx512f amx_bf16 amx_tile", "bf16-mixed", "CPU has amx_bf16"),
        (AVX2_ONLY, "32-true", "CPU has neither amx_bf16 nor avx512_bf16"),
        (f"{AVX2_ONLY} avx512f", "32-true", "CPU has neither"),  # AVX-512 without bf16
    ],
    ids=["avx512_bf16", "amx", "avx2-only", "avx512-without-bf16"],
)
def test_auto_on_a_cpu_is_bf16_only_with_native_bf16(cpu, caplog, flags, expected, reason) -> None:
    cpu(flags)
    cfg = trainer_cfg("auto")
    with caplog.at_level(logging.INFO):
        assert resolve_precision(cfg) == expected
    assert cfg.trainer.precision == expected
    (line,) = messages(caplog, logging.INFO)  # the choice, once, in one line
    assert line.startswith(f"precision: auto -> {expected} (") and reason in line
    assert "\n" not in line
    assert not messages(caplog, logging.WARNING)


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 0), "16-mixed"), ((7, 5), "16-mixed"), ((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed")],
)
@pytest.mark.parametrize("accelerator", ["auto", "gpu", "cuda"])
def test_auto_on_a_gpu_is_bf16_from_compute_capability_8_else_fp16(
    gpu, caplog, capability, expected, accelerator
) -> None:
    gpu(capability, name="Tesla V100" if capability < (8, 0) else "A100")
    cfg = trainer_cfg("auto", accelerator)
    with caplog.at_level(logging.INFO):
        assert resolve_precision(cfg) == expected
    (line,) = messages(caplog, logging.INFO)
    major, minor = capability
    assert f"-> {expected} (" in line and f"compute capability {major}.{minor}" in line


def test_auto_on_a_gpu_without_bf16_support_is_fp16(gpu, monkeypatch) -> None:
    gpu((8, 6))
    monkeypatch.setattr(precision, "cuda_bf16_supported", lambda: False)
    assert auto_precision("gpu") == ("16-mixed", "Some GPU has compute capability 8.6")


def test_auto_follows_the_accelerator_not_the_machine(gpu, monkeypatch) -> None:
    """A GPU machine told to train on its CPU (AVX2 only here) resolves for the CPU; the
    capability asked for is that of the first device the trainer names."""
    gpu((8, 0))
    assert auto_precision("cpu")[0] == "32-true"
    asked = []
    monkeypatch.setattr(precision, "cuda_capability", lambda i: asked.append(i) or (8, 0))
    assert auto_precision("gpu", [2, 3])[0] == "bf16-mixed"
    assert auto_precision("gpu", "1,2")[0] == "bf16-mixed"
    assert asked == [2, 1]


def test_auto_without_cuda_trains_on_the_cpu(cpu) -> None:
    cpu(AVX2_ONLY)
    assert auto_precision("auto") == auto_precision("gpu") == auto_precision("cpu")
    assert auto_precision("mps")[0] == "32-true"  # other accelerators: fp32


@pytest.mark.parametrize("value", ["bf16-mixed", "bf16", "bf16-true"])
def test_explicit_bf16_without_native_bf16_runs_but_warns_once(cpu, caplog, value) -> None:
    cpu(AVX2_ONLY)
    cfg = trainer_cfg(value, "cpu")
    with caplog.at_level(logging.INFO):
        assert resolve_precision(cfg) == value
    assert cfg.trainer.precision == value  # runs as asked
    (line,) = messages(caplog, logging.WARNING)
    assert "\n" not in line
    assert f"precision: {value} without native bf16" in line
    assert "14x slower than fp32" in line
    assert "trainer.precision=32-true" in line and "trainer.precision=auto" in line


def test_explicit_bf16_on_an_old_gpu_warns_with_the_fp16_fix(gpu, caplog) -> None:
    gpu((7, 0), name="Tesla V100")
    with caplog.at_level(logging.INFO):
        resolve_precision(trainer_cfg("bf16-mixed", "gpu"))
    (line,) = messages(caplog, logging.WARNING)
    assert "Tesla V100 has compute capability 7.0" in line and "16-mixed" in line


@pytest.mark.parametrize("value", ["bf16-mixed", "32-true", "16-mixed", "64-true", 32])
def test_native_bf16_and_other_precisions_are_left_alone_and_quiet(cpu, caplog, value) -> None:
    cpu(f"{AVX2_ONLY} amx_bf16")
    cfg = trainer_cfg(value, "cpu")
    with caplog.at_level(logging.INFO):
        assert resolve_precision(cfg) == str(value)
    assert cfg.trainer.precision == value
    assert not messages(caplog, logging.INFO) and not messages(caplog, logging.WARNING)


def test_explicit_bf16_on_another_accelerator_is_not_judged(cpu, caplog) -> None:
    cpu(AVX2_ONLY)
    with caplog.at_level(logging.INFO):
        assert resolve_precision(trainer_cfg("bf16-mixed", "mps")) == "bf16-mixed"
    assert not messages(caplog, logging.WARNING)


def test_a_config_without_a_trainer_is_left_alone() -> None:
    assert resolve_precision(OmegaConf.create({"data": {"path": "x"}})) is None


def test_the_cpu_flags_of_this_machine_are_read() -> None:
    """The real probe: on Linux the flags line of /proc/cpuinfo (an x86 CPU lists sse2)."""
    flags = precision.cpu_flags()
    if Path("/proc/cpuinfo").is_file() and platform.machine() in ("x86_64", "AMD64"):
        assert "sse2" in flags
    assert auto_precision("cpu")[0] in ("bf16-mixed", "32-true")


@pytest.mark.parametrize(
    "overrides",
    [("experiment=quality_256",), ("experiment=cifar10_gpu", "trainer.accelerator=auto")],
    ids=["quality_256", "cifar10_gpu"],
)
def test_recipes_ask_for_auto_and_a_job_resolves_it_before_validation(
    cpu, overrides, tmp_path
) -> None:
    """The recipes and trainer=gpu say ``auto``, which Lightning's signature (the schema of
    the validation) does not accept: the job resolves it first (here for the CPU)."""
    cpu(f"{AVX2_ONLY} avx512_bf16")
    cfg = compose_job("train", *overrides, output_dir=tmp_path)
    assert cfg.trainer.precision == "auto"
    assert run_job(lambda job_cfg: job_cfg.trainer.precision, cfg) == "bf16-mixed"
    validate_config(cfg)


def test_the_default_trainer_stays_fp32() -> None:
    assert compose_job("train").trainer.precision == "32-true"
    assert compose_job("train", "trainer=cpu").trainer.precision == "32-true"
    assert compose_job("train", "trainer=gpu").trainer.precision == "auto"
