"""The paths and devices a user passes, checked where they are named: one message each,
naming the key, what was found there and what to pass instead.

Every option that takes a path (checkpoints, weights files, data folders, run folders) and
every option that names a device goes through these functions, so that a folder given for a
file, a file given for a folder, a missing file or a GPU that is not there are answered the
same way whichever entry point read the option.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from autoencoder.errors import ConfigError

# Where a training run keeps its checkpoints, relative to a folder a user may pass instead:
# the run folder, or its checkpoints/ folder.
_CHECKPOINTS_INSIDE = ("checkpoints/last.ckpt", "last.ckpt")


def named(key: str, value: object) -> str:
    """How the user wrote the setting: ``key='value'`` for a config key, ``--key value``
    for a command-line option (a key that starts with ``--``)."""
    return f"{key} {value}" if key.startswith("--") else f"{key}={str(value)!r}"


def existing_file(key: str, value: str | Path, fix: str) -> Path:
    """``value`` as a path to an existing file; a :class:`ConfigError` naming ``key`` when
    it is a folder or nothing, with ``fix`` (what to pass) and, for a folder that holds a
    checkpoint, the file inside it to pass instead."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        inside = checkpoint_inside(path)
        instead = f"Pass the file inside it: {named(key, inside)}" if inside else fix
        raise ConfigError(f"{named(key, value)} is a folder, not a file. {instead}")
    raise ConfigError(f"{named(key, value)}: no such file. {fix}")


def existing_folder(key: str, value: str | Path, fix: str, holding: Sequence[str] = ()) -> Path:
    """``value`` as a path to an existing folder that holds the files ``holding``; a
    :class:`ConfigError` naming ``key`` when it is a file, nothing, or lacks some of them."""
    path = Path(value).expanduser()
    if path.is_file():
        raise ConfigError(f"{named(key, value)} is a file, not a folder. {fix}")
    if not path.is_dir():
        raise ConfigError(f"{named(key, value)}: no such folder. {fix}")
    missing = [name for name in holding if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"{named(key, value)} has no {' and no '.join(missing)}. {fix}")
    return path


def checkpoint_inside(folder: Path) -> Path | None:
    """The checkpoint to resume or start from in a run folder or its ``checkpoints/``
    folder: ``last.ckpt`` where there is one, else the newest ``.ckpt``."""
    for name in _CHECKPOINTS_INSIDE:
        if (folder / name).is_file():
            return folder / name
    found = [*folder.glob("*.ckpt"), *folder.glob("checkpoints/*.ckpt")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def torch_device(key: str, value: str) -> torch.device:
    """The device ``value`` names (``cpu``, ``cuda``, ``cuda:1``, ``mps``), if this machine
    has it; a :class:`ConfigError` naming ``key`` for a malformed name or a missing device."""
    given, cpu = named(key, value), named(key, "cpu").replace("'", "")
    default = "leave it out" if key.startswith("--") else f"{key}=null"
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"{given} is not a device; use cpu, cuda or cuda:N ({default}: cuda when "
            "available, else cpu)."
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{given}: this machine has no CUDA device (torch.cuda.is_available() is "
                f"false); use {cpu}, or {default} to use a GPU only where there is one."
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"{given}: this machine has {count} CUDA device(s), cuda:0 .. cuda:{count - 1}."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{given}: MPS is not available here; use {cpu}.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{given}: use cpu, cuda or cuda:N ({default}: cuda when available).")
    return device


def pick_device(key: str, value: str | None) -> torch.device:
    """The device ``value`` names (checked by :func:`torch_device`), or, for ``None``, CUDA
    when available, else the CPU."""
    if value:
        return torch_device(key, value)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
