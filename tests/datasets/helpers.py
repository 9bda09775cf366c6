"""Assertions shared by the loader tests."""

import torch

from recon.datasets import dataset_info
from tests.tolerances import assert_close, tol

# file order of the 9 written cameras as the every-8th split lists them: test (0, 8), then train
EVERY_NTH_ORDER = [0, 8, 1, 2, 3, 4, 5, 6, 7]


def assert_every_nth_cameras(ds, K: torch.Tensor, T: torch.Tensor) -> None:
    """The dataset's test-then-train cameras are the 9 written cameras ``K``, ``T`` in split order."""
    info = dataset_info(ds)
    cams = info["splits"]["test"] + info["splits"]["train"]
    assert_close(
        torch.tensor([c["K"] for c in cams], dtype=torch.float64),
        K[EVERY_NTH_ORDER],
        **tol("loader", torch.float64),
    )
    assert_close(
        torch.tensor([c["T_cam_world"] for c in cams], dtype=torch.float64),
        T[EVERY_NTH_ORDER],
        **tol("loader", torch.float64),
    )
