"""Checkpoint files: written atomically, read weights-only, with errors that say what to do.

Writing: Lightning's ``TorchCheckpointIO`` writes a local checkpoint through an fsspec
transaction, to a temporary file in the system temp folder that is then moved into place.
When the temp folder is on another filesystem than the run (a tmpfs ``/tmp``, a scratch or
network disk), that move is a copy, and a process killed during it leaves a truncated file
in place of the last good checkpoint. :class:`AtomicCheckpointIO` writes next to the target,
flushes it to disk and ``os.replace()``s it, so a checkpoint path always holds a complete
file: the previous one or the new one. ``conf/trainer/default.yaml`` passes it to the Trainer
(``plugins``), so every strategy, DDP included, writes and reads checkpoints through it.

Reading: every file of weights the project reads (checkpoints, encoder and classifier state
dicts, exported encoders) goes through :func:`load_weights_only`, a weights-only load that
builds only tensors and plain containers and refuses to unpickle anything else, so the file
cannot run code (with torch >= 2.6; CVE-2025-32434 affects older versions). The checkpoints
this project writes hold nothing else.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from pytorch_lightning.plugins.io import TorchCheckpointIO

from autoencoder.atomic import atomic_save
from autoencoder.errors import ConfigError, error_summary
from autoencoder.inputs import existing_file

# What to pass for a checkpoint, in the errors of every option that takes one.
CHECKPOINT_FIX = "Pass an existing checkpoint, e.g. outputs/train/runs/<run>/checkpoints/last.ckpt."


def load_weights_only(
    file: str | Path | BinaryIO, map_location: Any = "cpu", weights_only: bool = True
) -> Any:
    """The project's one reader of weight files: tensors and plain containers only, unless a
    caller passes ``weights_only=False`` explicitly (nothing in this project does)."""
    return torch.load(file, map_location=map_location, weights_only=weights_only)


def _read_error(error: BaseException) -> str:
    """The :func:`~autoencoder.errors.error_summary` of an error from reading a weights file;
    for a refused weights-only load, the global it refused (torch's first line only says
    that the load failed)."""
    lines = str(error).splitlines()
    refused = [line.strip() for line in lines[1:] if "GLOBAL" in line]
    if lines and lines[0].startswith("Weights only load failed") and refused:
        return error_summary(refused[0].removeprefix("WeightsUnpickler error: "))
    return error_summary(error)


def read_state_dict(path: str | Path, option: str, hint: str) -> Any:
    """A state dict (or any tensors in plain containers) from a weights file, read
    weights-only; ``option`` and ``hint`` name the setting and the fix in errors."""
    file = existing_file(option, path, hint)
    try:
        return load_weights_only(file)
    except Exception as error:  # torch raises several types for unreadable/unsafe files
        raise ConfigError(
            f"{option}={str(file)!r} could not be read as a weights-only state dict "
            f"({_read_error(error)}). Save plain tensors with "
            "torch.save(model.state_dict(), PATH)."
        ) from None


@contextmanager
def checkpoint_errors(path: str | Path, option: str = "ckpt_path") -> Iterator[None]:
    """Turn the errors of reading the checkpoint ``path``, the value of the setting
    ``option``, into :class:`ConfigError`s."""
    try:
        yield
    except FileNotFoundError:
        raise ConfigError(f"{option}={str(path)!r}: no such file. {CHECKPOINT_FIX}") from None
    except pickle.UnpicklingError as error:
        raise ConfigError(
            f"{path} holds pickled objects other than tensors and plain values, which a "
            f"weights-only load refuses ({_read_error(error)}). Checkpoints written by this "
            "project never do: use one of your own runs' checkpoints. Unpickling this file "
            "could run code from it; never do that with a file from an unknown source."
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise ConfigError(
            f"{path} is not a readable checkpoint ({_read_error(error)}): it is truncated or "
            "corrupt. Resume from another checkpoint of the run (checkpoints/last.ckpt or "
            "best-epochNNN.ckpt)."
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that replaces local files atomically and loads weights-only.

    Remote paths (``s3://`` and the like) keep Lightning's own writing. Loading is
    weights-only unless ``weights_only=False`` is passed, whatever the torch and Lightning
    versions.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if not isinstance(url_to_fs(str(path))[0], LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local files.")
        atomic_save(lambda file: torch.save(checkpoint, file), Path(path))

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | Any = "cpu",
        weights_only: bool | None = None,
        option: str = "ckpt_path",
    ) -> dict[str, Any]:
        # Read here rather than through Lightning, which loaded with weights_only=False
        # before version 2.6 and had no way to ask otherwise. ``option``: the setting that
        # named the file, for the errors.
        filesystem = url_to_fs(str(path))[0]
        if isinstance(filesystem, LocalFileSystem):
            existing_file(option, path, CHECKPOINT_FIX)
        with checkpoint_errors(path, option):
            if not filesystem.exists(path):
                raise FileNotFoundError(path)
            with filesystem.open(path, "rb") as file:
                return load_weights_only(
                    file, map_location=map_location, weights_only=weights_only is not False
                )


def read_checkpoint(
    path: str | Path, map_location: Any = "cpu", option: str = "ckpt_path"
) -> dict[str, Any]:
    """A Lightning checkpoint, loaded weights-only; clear errors, naming the setting
    ``option``, for missing, corrupt or unsafe files."""
    checkpoint = AtomicCheckpointIO().load_checkpoint(
        path, map_location=map_location, option=option
    )
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'). Pass a .ckpt written "
            "by scripts/train.py."
        )
    return checkpoint


def checkpoint_epochs(path: str | Path | None) -> int | None:
    """Training epochs behind a checkpoint written at the end of an epoch's validation (the
    epoch it records counts from 0); ``None`` without a checkpoint."""
    return int(read_checkpoint(path)["epoch"]) + 1 if path else None
