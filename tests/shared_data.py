"""Where the project's real data lives: ``../shared/data`` relative to the checkout (never an absolute path).

Tests that check real data call :func:`require_shared`, which skips with a stated reason where the folder is
absent (a checkout without ``../shared``), so every machine with the shared folder runs them.
"""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``<checkout>/../shared/data``."""


def shared_data(name: str) -> Path:
    """``../shared/data/<name>`` relative to the checkout (may not exist)."""
    return SHARED_DATA / name


def require_shared(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test saying which folder is missing."""
    path = shared_data(name)
    if not path.exists():
        pytest.skip(f"real-data check: {path} (../shared/data relative to the checkout) is not present")
    return path
