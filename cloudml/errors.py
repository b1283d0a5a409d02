"""User-facing errors. Every message names the file, dataset path, key or endpoint at fault.

The CLI turns a CloudMLError into one line on stderr and a non-zero exit; anything else is
a bug and keeps its traceback.
"""


class CloudMLError(Exception):
    """A fatal error caused by input, configuration or environment, not by a bug."""

    exit_code = 2


class ConfigError(CloudMLError):
    """Invalid preset, override or combination of settings."""


class DataError(CloudMLError):
    """A raw flight file or a processed shard does not match the expected layout."""


class StorageError(CloudMLError):
    """Object store or artifact problem (missing object, checksum mismatch, bad credentials)."""


class GateFailed(CloudMLError):
    """The model did not clear the quality gate; the run must fail."""

    exit_code = 1
