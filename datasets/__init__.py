"""Dataset loaders: Blender, nerfstudio/instant-ngp, COLMAP, LLFF and DTU folders, converted once to recon's
conventions (OpenCV camera axes, ``T_cam_world``, pixel centres at +0.5; docs/conventions.md)."""

from recon.datasets.base import Frame, SceneDataset
from recon.datasets.detect import FORMATS, detect_format, load_dataset
from recon.datasets.errors import DatasetError
from recon.datasets.info import dataset_info, format_info, verify_files

__all__ = [
    "FORMATS",
    "DatasetError",
    "Frame",
    "SceneDataset",
    "dataset_info",
    "detect_format",
    "format_info",
    "load_dataset",
    "verify_files",
]
