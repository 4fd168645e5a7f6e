"""User-facing errors: one line, naming the file, key or value, with an exit code.

Anything a user can get wrong (a config key, a broken file, a missing folder) raises
`NsganError`; the CLI prints its message on one line and exits with its code, never a traceback.
"""

from __future__ import annotations

# Exit codes the CLI uses, so scripts around nsgan can tell failures apart.
EXIT_OK = 0
EXIT_FAILED = 1  # a check or benchmark (tools/) that ran to the end and found a failure
EXIT_USAGE = 2  # bad config, bad arguments, bad input files
EXIT_DATA = 3  # data that cannot be used (empty shard set, unreadable image)
EXIT_MODEL = 4  # missing, truncated or foreign model / checkpoint
EXIT_OUTPUT = 5  # output exists or cannot be written
EXIT_RUNTIME = 6  # numerical failure (NaN), dead peer rank
EXIT_UNMET = 7  # a stated target the data cannot show (too few held-out normals to bound a false-alarm rate)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (the shell's 128 + SIGINT)


class NsganError(Exception):
    """An error caused by the user's input; printed as one line, exits with `exit_code`."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(NsganError):
    """A config file or override that does not fit the schema."""

    exit_code = EXIT_USAGE


class DataError(NsganError):
    """Input data that cannot be read or is empty."""

    exit_code = EXIT_DATA


class ModelError(NsganError):
    """A model or checkpoint file that is missing, truncated or not an nsgan file."""

    exit_code = EXIT_MODEL


class OutputError(NsganError):
    """An output that exists (without --overwrite) or cannot be written."""

    exit_code = EXIT_OUTPUT


class TargetError(NsganError):
    """A target (a false-alarm rate) that the given data cannot show; the message says how much data would."""

    exit_code = EXIT_UNMET


def printable(text: str) -> str:
    """`text` with the undecodable bytes of file names (surrogate escapes) shown as \\xNN, on one line."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace").replace("\n", " ")
