"""Reading and writing images, masks and (with ``msagent[medical]``) medical volumes.

Intensity rules for 2-D inputs (:func:`to_rgb_uint8`): ``uint8`` is kept; ``bool`` becomes
0/255; any other integer or float image (16-bit PNG/TIFF, HU arrays) is windowed to its
0.5th–99.5th percentile. Volumes (:mod:`msagent.io.volume`) are windowed once per volume: a CT
preset or "W/L" when given (:data:`CT_WINDOWS`, e.g. abdomen 400/40, lung 1500/−600), else a
DICOM CT's stored window, else the volume's 0.5th–99.5th percentiles, so every slice gets the
same mapping. Slices are taken as displayed in the radiological convention (see
:mod:`msagent.io.volume`).
"""

from .bitdepth import save_png16, save_tiff
from .dicom import default_window, is_dicom, read_dicom_series, write_dicom_seg
from .images import (
    DEFAULT_MAX_PIXELS,
    load_array,
    max_pixels_limit,
    save_mask_png,
    save_png,
    to_mask,
    to_rgb_uint8,
)
from .nifti import is_nifti, read_nifti, write_mask_nifti, write_nifti
from .volume import (
    CT_WINDOWS,
    PLANES,
    SliceView,
    Volume,
    apply_window,
    parse_window,
    percentile_window,
)

__all__ = ["CT_WINDOWS", "DEFAULT_MAX_PIXELS", "PLANES", "SliceView", "Volume", "apply_window",
           "default_window", "is_dicom", "is_nifti", "load_array", "max_pixels_limit",
           "parse_window", "percentile_window", "read_dicom_series", "read_nifti", "read_volume",
           "save_mask_png", "save_png", "save_png16", "save_tiff", "to_mask", "to_rgb_uint8",
           "write_dicom_seg", "write_mask_nifti", "write_nifti"]


def read_volume(source, series_uid: str | None = None) -> Volume:
    """A NIfTI file (.nii/.nii.gz) or a DICOM series (directory, .dcm file or list of files)."""
    if not isinstance(source, (list, tuple)) and is_nifti(source):
        return read_nifti(source)
    return read_dicom_series(source, series_uid=series_uid)
