"""Errors that reach the user as one line instead of a traceback."""


class UsageError(ValueError):
    """Bad input from the user (arguments, paths, files): the CLI prints it and exits 2. A
    ValueError, so library callers that catch bad values catch it too."""


class TrainingError(Exception):
    """Training cannot go on (for example a non-finite loss): the CLI prints it and exits 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (which saves and stops on its own): raised where the program is,
    so writes in progress remove their temporary files; the CLI exits 128 + 15."""

    signum = 15
