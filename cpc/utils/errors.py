"""User-facing errors: the message names the file or flag at fault and what was expected."""


class CPCError(Exception):
    """Base of the errors that command-line tools print as one line and exit non-zero on."""


class ConfigError(CPCError):
    """Flags that contradict each other, a saved run, or the data."""


class DataError(CPCError):
    """A problem with the user's data or data flags; the message names the file or flag."""


class CheckpointError(CPCError):
    """A checkpoint (or other run file) that is missing, unreadable, or from a newer format."""


class OutOfSpace(CPCError):
    """A write failed because the device is full; the previous version of the file is intact."""
