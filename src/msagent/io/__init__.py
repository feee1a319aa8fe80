"""Reading and writing images, masks and (with ``msagent[medical]``) medical volumes.

Intensity rules for 2-D inputs (:func:`to_rgb_uint8`): ``uint8`` is kept; ``bool`` becomes
0/255; any other integer or float image (16-bit PNG/TIFF, grey or colour, HU arrays) is
windowed to its 0.5th–99.5th percentile; NaN/inf are refused. Volumes
(:mod:`msagent.io.volume`) are windowed once per volume by :func:`choose_window` (the one rule
that the CLI, the server and the NIfTI dataset reader share): a CT preset or "W/L" when given
(:data:`CT_WINDOWS`, e.g. abdomen 400/40, lung 1500/−600), else a DICOM CT's stored window,
else the volume's 0.5th–99.5th percentiles, so every slice gets the same mapping; NaN/inf
voxels are left out of the percentiles and shown as 0. Slices are taken as displayed in the
radiological convention (see :mod:`msagent.io.volume`). Volumes are checked against a voxel
limit from their headers before any data are decoded (:mod:`msagent.io.limits`).
docs/medical-images.md is the user's guide to all of this.
"""

from msagent.io.bitdepth import save_png16, save_tiff
from msagent.io.dicom import default_window, is_dicom, read_dicom_series
from msagent.io.dicom_seg import write_dicom_seg
from msagent.io.images import (
    DEFAULT_MAX_PIXELS,
    load_array,
    max_pixels_limit,
    save_mask_png,
    save_png,
    to_mask,
    to_rgb_uint8,
)
from msagent.io.limits import DEFAULT_MAX_VOXELS, max_voxels_limit
from msagent.io.nifti import is_nifti, mask_data, mask_nifti_bytes, read_nifti, write_mask_nifti, write_nifti
from msagent.io.volume import (
    CT_WINDOWS,
    PLANES,
    SliceView,
    Volume,
    apply_window,
    grid_mismatch,
    parse_window,
    percentile_window,
)
from msagent.io.windows import Window, choose_window

__all__ = ["CT_WINDOWS", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_VOXELS", "PLANES", "SliceView",
           "Volume", "Window", "apply_window", "choose_window", "default_window", "grid_mismatch",
           "is_dicom", "is_nifti", "load_array", "mask_data", "max_pixels_limit", "max_voxels_limit",
           "parse_window", "percentile_window", "read_dicom_series", "read_nifti", "read_volume",
           "save_mask_png", "save_png", "save_png16", "save_tiff", "to_mask", "to_rgb_uint8",
           "write_dicom_seg", "write_mask_nifti", "write_nifti", "mask_nifti_bytes"]


def read_volume(source, series_uid: str | None = None, *, allow_irregular: bool = False,
                max_voxels: int | None = None) -> Volume:
    """A NIfTI file (.nii/.nii.gz) or a DICOM series (folder, .dcm file or list of files).

    ``series_uid`` picks one of several DICOM series; ``allow_irregular`` accepts a DICOM
    series with missing or duplicate slices (:func:`read_dicom_series`); ``max_voxels``
    bounds the size (default ``$MSAGENT_MAX_VOXELS`` or :data:`DEFAULT_MAX_VOXELS`)."""
    if not isinstance(source, (list, tuple)) and is_nifti(source):
        return read_nifti(source, max_voxels=max_voxels)
    return read_dicom_series(source, series_uid=series_uid, allow_irregular=allow_irregular,
                             max_voxels=max_voxels)
