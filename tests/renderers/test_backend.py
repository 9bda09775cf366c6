"""The one backend decision: device and float32 rules, warnings once per op, a record of what really ran."""

import logging

import pytest
import torch

from recon.renderers import _backend
from recon.renderers._backend import (
    BackendError,
    backend_report,
    decide_backend,
    reset_backend_report,
    resolve_backend,
    torch_only,
)


@pytest.fixture(autouse=True)
def _fresh_report():
    reset_backend_report()
    yield
    reset_backend_report()


def test_auto_picks_warp_and_records_it():
    assert resolve_backend("auto", torch.zeros(3), op="splat.rasterize") == "warp"
    assert backend_report() == {"splat": "warp"}


def test_float64_auto_falls_back_with_one_warning_per_op(caplog):
    x = torch.zeros(3, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger=_backend.__name__):
        for _ in range(3):
            decision = decide_backend("auto", x, op="volume.composite")
        decide_backend("auto", x, op="volume.march_rays")
    assert decision.backend == "torch" and "float64" in decision.reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per op, not per call
    assert "volume.composite" in warnings[0].getMessage()
    assert backend_report()["volume"].startswith("torch (fallback: ")


def test_explicit_warp_that_cannot_run_names_the_op():
    with pytest.raises(BackendError, match="encoding.hash_grid.*float32"):
        resolve_backend("warp", torch.zeros(3, dtype=torch.float64), op="encoding.hash_grid")
    with pytest.raises(BackendError, match="meta"):
        resolve_backend("warp", torch.zeros(3, device="meta"), op="encoding.hash_grid")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", torch.zeros(3), op="encoding.hash_grid")


def test_a_fallback_anywhere_in_the_run_is_what_the_report_shows(caplog):
    resolve_backend("auto", torch.zeros(3), op="encoding.hash_grid")
    with caplog.at_level(logging.WARNING, logger=_backend.__name__):
        assert torch_only("auto", op="encoding.hash_grid", reason="double backward") == "torch"
    resolve_backend("auto", torch.zeros(3), op="encoding.hash_grid")
    assert backend_report() == {"encoding": "torch (fallback: double backward)"}
    assert any("double backward" in r.getMessage() for r in caplog.records)
    reset_backend_report()
    assert torch_only("torch", op="encoding.hash_grid", reason="double backward") == "torch"
    assert backend_report() == {"encoding": "torch"}  # asked for: no fallback, no warning
