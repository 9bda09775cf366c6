"""The error every dataset loader raises for bad input (re-exported as ``recon.datasets.DatasetError``)."""

from recon.core.errors import ReconError


class DatasetError(ReconError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file and what was expected."""
