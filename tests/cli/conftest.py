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


@pytest.fixture(scope="module")
def object_data(tmp_path_factory):
    """The built-in "object" scene, small (8 training views, 2 test views, 32 px), once per test module."""
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=8, test_views=2, resolution=32
    )
