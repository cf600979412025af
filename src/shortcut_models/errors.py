"""Errors that reach the user as one line instead of a traceback."""


class UsageError(ValueError):
    """Bad input from the user (arguments, paths, files): the CLI prints it and exits 2. A
    ValueError, so library callers that catch bad values catch it too."""


class TrainingError(Exception):
    """Training cannot go on (for example a non-finite loss): the CLI prints it and exits 1."""
