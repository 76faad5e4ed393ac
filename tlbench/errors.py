"""Errors a user can fix. Each message names the bad value and how to fix it."""


class ConfigError(ValueError):
    """A setting is invalid; raised before any training starts."""


class WeightsNotFoundError(RuntimeError):
    """`pretrained=true` but no weights could be found anywhere tlbench looked."""


class WeightsMismatchError(RuntimeError):
    """A weights file does not fit the model's architecture."""


class DataNotFoundError(RuntimeError):
    """A data set could not be found locally nor downloaded."""


class StartupError(RuntimeError):
    """Several startup checks failed; the message lists every one."""


class ResultsWriteError(OSError):
    """A result file could not be written (permissions, full disk); the previous one is intact."""


class BadImageError(RuntimeError):
    """An image file cannot be decoded (truncated, not an image); `path` names it."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path
