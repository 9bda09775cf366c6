"""Structure from motion: photos or a video in, a COLMAP dataset out (``recon data process``; needs pycolmap)."""

from recon.datasets.process.sfm import ProcessOptions, ProcessReport, process_capture

__all__ = ["ProcessOptions", "ProcessReport", "process_capture"]
