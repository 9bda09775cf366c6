"""Fixtures of the CLI tests: run the ``recon`` command line in a subprocess, as a user would."""

import os
import subprocess
import sys

import pytest

SUBPROCESS_TIMEOUT_S = 300  # generous: the CI machine has 2 cores shared by parallel test workers


def run_recon(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``python -m recon.cli.main ARGS`` (the console script's code path) with captured text output."""
    env = dict(os.environ)
    env.pop("RECON_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "recon.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        cwd=cwd,
        env=env,
    )


@pytest.fixture
def recon_cli():
    """The :func:`run_recon` function."""
    return run_recon
