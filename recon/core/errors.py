"""User-facing errors: the CLI prints their message (no traceback unless --debug) and exits non-zero."""


class ReconError(Exception):
    """Bad input or an unavailable feature, with a message naming the file or argument and what was expected."""

    exit_code = 1


class NotAvailableYet(ReconError):
    """A command or option whose machinery has not landed yet."""

    exit_code = 2
