"""Errors a user can cause. The CLI prints their message alone, without a traceback."""


class SentimentLabError(Exception):
    """A mistake the user can fix: the message names the problem and the fix."""


class ConfigError(SentimentLabError):
    """The YAML config or a --set override is invalid."""


class DataError(SentimentLabError):
    """A data source is missing, unreadable or has the wrong columns/labels."""


class ModelError(SentimentLabError):
    """A model id or folder cannot be resolved or loaded safely."""


class RunDirError(SentimentLabError):
    """The run folder cannot be used (already finished, locked, unwritable)."""


class InputError(SentimentLabError):
    """A text given for prediction is unusable (empty, whitespace only, not a string)."""
