"""Floater removal at export: drop small connected components of the extracted mesh.

Two faces are connected when they share a vertex (FlexiCubes faces index shared dual vertices). Components with
fewer faces than ``min_fraction`` of the largest one are dropped and unused vertices removed. The sign-flip loss
removes most internal floaters during training; what remains after a short budget are small shells of a few
voxels around spurious sign changes (the measured cow run: 81 fragments, 3.5% of the faces).

Example:
    >>> faces = torch.tensor([[0, 1, 2], [2, 1, 3], [4, 5, 6]])
    >>> keep_faces = large_components(faces, 7, min_fraction=0.6)
    >>> keep_faces.tolist()
    [True, True, False]
"""

import numpy as np
import torch
from jaxtyping import Bool, Int
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

__all__ = ["large_components"]


def large_components(
    faces: Int[Tensor, "F 3"], num_vertices: int, *, min_fraction: float
) -> Bool[Tensor, " F"]:
    """(F,) bool: the face belongs to a component with at least ``min_fraction`` of the largest one's faces."""
    if faces.shape[0] == 0 or min_fraction <= 0:
        return torch.ones(faces.shape[0], dtype=torch.bool, device=faces.device)
    f = faces.detach().cpu().numpy()
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(num_vertices, num_vertices))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[f[:, 0]]
    sizes = np.bincount(face_label)
    keep = sizes[face_label] >= min_fraction * sizes.max()
    return torch.from_numpy(keep).to(faces.device)
