"""DICOM SEG out (highdicom; needs ``msagent[medical]``).

:func:`write_dicom_seg` writes a binary Segmentation whose frames reference the source
instances (SOP Class/Instance UIDs), with the source series' frame of reference, patient and
study, so PACS and viewers place it on the images. Each frame carries its source slice's own
position, so this is also the output for a series read with ``allow_irregular=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from msagent.errors import InvalidImage, InvalidInput
from msagent.io.atomic import atomic_output
from msagent.io.nifti import mask_data
from msagent.io.volume import Volume


def write_dicom_seg(mask: np.ndarray, volume: Volume, path: str | os.PathLike, *,
                    label: str = "target", category: Any = None, property_type: Any = None,
                    series_number: int = 300, description: str = "msagent segmentation") -> Path:
    """Write a binary DICOM SEG for ``mask`` (shaped like ``volume.data``) referencing the
    DICOM series ``volume`` was read from. ``category``/``property_type`` are coded concepts
    (pydicom ``Code``); by default the generic SNOMED CT "Anatomical Structure"/"Organ" with
    ``label`` (the target text) as the segment label."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
        from pydicom.uid import generate_uid
    except ImportError:
        raise InvalidImage("writing DICOM SEG needs highdicom: "
                           "pip install '.[medical]' in a msagent clone") from None
    from msagent._version import __version__

    if not volume.datasets:
        raise InvalidInput("DICOM SEG needs the source DICOM series: read it with "
                           "read_dicom_series (for NIfTI input write a NIfTI mask instead)")
    mask = mask_data(mask) > 0  # refuses NaN, negative and fractional values
    if mask.shape != volume.shape:
        raise InvalidInput(f"mask of shape {mask.shape} does not match the volume {volume.shape}")
    frames = np.stack([mask[:, :, k].T for k in range(mask.shape[2])]).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="msagent", family=codes.cid7162.ArtificialIntelligence, version=__version__)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label[:64] or "target",
        segmented_property_category=category or codes.SCT.AnatomicalStructure,
        segmented_property_type=property_type or codes.SCT.Organ,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=list(volume.datasets), pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="msagent",
        manufacturer_model_name="msagent", software_versions=__version__,
        device_serial_number="0", series_description=description, omit_empty_frames=False)
    path = Path(path)
    with atomic_output(path) as tmp:
        seg.save_as(str(tmp))
    return path


__all__ = ["write_dicom_seg"]
