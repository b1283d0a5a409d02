"""User-facing errors and the exit codes of `cloudml`. Every message names the file, dataset
path, key or endpoint at fault.

The CLI turns a CloudMLError into one `error: ...` line on stderr and its `exit_code`;
anything else is a bug and keeps its traceback.
"""

# Exit codes of every `cloudml` command (`cloudml --help` and docs/reliability.md list them).
EXIT_OK = 0
EXIT_ERROR = 1  # a CloudMLError (bad input, configuration, environment) or a failed gate
EXIT_USAGE = 2  # the command line itself: unknown option, missing or malformed argument
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it
EXIT_BROKEN_PIPE = 141  # stdout closed early (`| head`), 128 + SIGPIPE as a shell reports it


class CloudMLError(Exception):
    """A fatal error caused by input, configuration or environment, not by a bug."""

    exit_code = EXIT_ERROR


class ConfigError(CloudMLError):
    """Invalid preset, override or combination of settings."""


class DataError(CloudMLError):
    """A raw flight file or a processed shard does not match the expected layout."""


class StorageError(CloudMLError):
    """Object store or artifact problem (missing object, checksum mismatch, bad credentials)."""


class GateFailed(CloudMLError):
    """The model did not clear the quality gate; the run must fail."""

    exit_code = EXIT_ERROR
