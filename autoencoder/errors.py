"""User-facing errors: each message says what is wrong and how to fix it.

Scripts catch :class:`AutoencoderError` and print its message without a traceback.
"""

import typing
import urllib.error


class AutoencoderError(Exception):
    """A problem the user can fix: bad configuration, missing files, offline downloads."""


class ConfigError(AutoencoderError, ValueError):
    """A configuration value is invalid (unknown name, out-of-range number, wrong shape)."""


class ResourceUnavailableError(AutoencoderError):
    """A dataset or weights file could not be found or downloaded."""


class StepFailed(AutoencoderError):
    """A job that a benchmark or figure launched ended with a non-zero exit status; the
    message names the command and its log file."""


class NonFiniteLossError(AutoencoderError):
    """The training loss became NaN or infinite; the message names the step and the phase."""


def error_summary(error: BaseException | str, limit: int = 120) -> str:
    """The gist of an error, for a message of ours that wraps it: the first sentence of the
    first line of its message (of a download error's reason, not of its wrapper), at most
    ``limit`` characters; its type when it has no message. ``error`` may also be the part of
    a message that says what went wrong, when that is not the first line."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    gist = lines[0].split(". ")[0].rstrip(".")
    return gist if len(gist) <= limit else gist[: limit - 3] + "..."


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
