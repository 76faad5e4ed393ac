"""Errors a user can fix. Each message names the bad value and how to fix it. The console scripts
print such an error as one message, without a traceback, and exit with USER_ERROR_EXIT."""

USER_ERROR_EXIT = 2  # what argparse exits with for a bad command line: the command needs changing


class UserError(Exception):
    """Any error below: the message says what is wrong, why, and the fix."""


class ConfigError(UserError, ValueError):
    """A setting is invalid; raised before any training starts."""


class WeightsNotFoundError(UserError, RuntimeError):
    """`pretrained=true` but no weights could be found anywhere tlbench looked."""


class WeightsMismatchError(UserError, RuntimeError):
    """A weights file does not fit the model's architecture."""


class DataNotFoundError(UserError, RuntimeError):
    """A data set could not be found locally nor downloaded."""


class StartupError(UserError, RuntimeError):
    """Several startup checks failed; the message lists every one."""


class ResultsWriteError(UserError, OSError):
    """A result file could not be written (permissions, full disk); the previous one is intact."""


class BadImageError(UserError, RuntimeError):
    """An image file cannot be decoded (truncated, not an image); `path` names it."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path
