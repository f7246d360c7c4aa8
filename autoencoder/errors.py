"""User-facing errors: each message says what is wrong and how to fix it.

Scripts catch :class:`AutoencoderError` and print its message without a traceback.
"""


class AutoencoderError(Exception):
    """A problem the user can fix: bad configuration, missing files, offline downloads."""


class ConfigError(AutoencoderError, ValueError):
    """A configuration value is invalid (unknown name, out-of-range number, wrong shape)."""


class ResourceUnavailableError(AutoencoderError):
    """A dataset or weights file could not be found or downloaded."""


class NonFiniteLossError(AutoencoderError):
    """The training loss became NaN or infinite; the message names the step and the phase."""
