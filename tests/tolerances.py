"""All numerical tolerances of the test suite, keyed by (op, dtype). An override cites its reason."""

import torch

_DEFAULT = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-9)}

TOLERANCES: dict[tuple[str, torch.dtype], dict[str, float]] = {
    # Round trips through a 4x4 inverse and a division by depth in float32.
    ("camera", torch.float32): dict(rtol=1e-4, atol=1e-4),
    ("camera", torch.float64): dict(rtol=1e-9, atol=1e-9),
    # Loaders: K and T_cam_world must come back to 1e-6 (issue 2); text formats store ~17 significant digits.
    ("loader", torch.float64): dict(rtol=0.0, atol=1e-6),
    ("loader", torch.float32): dict(rtol=0.0, atol=1e-6),
}


def tol(op: str, dtype: torch.dtype) -> dict[str, float]:
    """rtol/atol for an op and dtype (defaults when the op has no entry)."""
    return dict(TOLERANCES.get((op, dtype), _DEFAULT[dtype]))


def register(op: str, dtype: torch.dtype, *, rtol: float, atol: float) -> None:
    """Add an op's tolerance (call at import time of the test module's helpers, with a reason in a comment)."""
    TOLERANCES[(op, dtype)] = dict(rtol=rtol, atol=atol)


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, *, rtol: float, atol: float, name: str = ""
) -> None:
    """torch.testing.assert_close that also reports the max abs/rel error and where it occurred."""
    actual_d = actual.detach().to(torch.float64).cpu()
    expected_d = expected.detach().to(torch.float64).cpu()
    if actual_d.shape != expected_d.shape:
        raise AssertionError(f"{name}: shape {tuple(actual_d.shape)} != {tuple(expected_d.shape)}")
    diff = (actual_d - expected_d).abs()
    bad = diff > atol + rtol * expected_d.abs()
    if bool(bad.any()) or bool(torch.isnan(actual_d).ne(torch.isnan(expected_d)).any()):
        flat = int(diff.nan_to_num(float("inf")).argmax())
        where = (
            tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.ndim else ()
        )
        rel = diff / expected_d.abs().clamp_min(1e-30)
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{bad.numel()} elements differ; max abs err {float(diff.max()):.3e} at {where} "
            f"(actual {float(actual_d.flatten()[flat]):.6g}, expected {float(expected_d.flatten()[flat]):.6g}); "
            f"max rel err {float(rel.max()):.3e}; rtol={rtol}, atol={atol}"
        )
