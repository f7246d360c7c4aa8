"""User-facing errors: each message says what is wrong and how to fix it.

Scripts catch :class:`AutoencoderError` and print its message without a traceback.
"""

import typing


class AutoencoderError(Exception):
    """A problem the user can fix: bad configuration, missing files, offline downloads."""


class ConfigError(AutoencoderError, ValueError):
    """A configuration value is invalid (unknown name, out-of-range number, wrong shape)."""


class ResourceUnavailableError(AutoencoderError):
    """A dataset or weights file could not be found or downloaded."""


class NonFiniteLossError(AutoencoderError):
    """The training loss became NaN or infinite; the message names the step and the phase."""


def error_summary(error: BaseException) -> str:
    """The gist of an error from reading a weights file, in one sentence: for a weights-only
    refusal, the global it refused; else the first sentence of the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    refused = [line for line in lines[1:] if "GLOBAL" in line]
    line = refused[0] if lines[0].startswith("Weights only load failed") and refused else lines[0]
    return line.removeprefix("WeightsUnpickler error: ").split(". ")[0].rstrip(".")


def check_choice(option: str, value: object, choices: object) -> None:
    """Raise a :class:`ConfigError` unless ``value`` is one of the values of the ``Literal``
    type ``choices``: the check the config validation makes, for code that builds objects
    directly."""
    valid = typing.get_args(choices)
    if value not in valid:
        raise ConfigError(
            f"{option}={value!r} is invalid; use one of {', '.join(map(str, valid))}."
        )


def user_message(error: BaseException) -> str:
    """The message of ``error`` as its author wrote it.

    An error raised in a DataLoader worker process reaches the main process re-raised by
    torch with the worker's traceback as its message ("Caught ConfigError in DataLoader
    worker process 0. Original Traceback ..."); this returns the original message alone.
    """
    text = str(error)
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    if text.startswith("Caught ") and "Original Traceback" in text and marker in text:
        return text.rpartition(marker)[2].strip()
    return text
