"""DICOM SEG out (highdicom; needs ``msagent[medical]``).

:func:`write_dicom_seg` writes a binary Segmentation whose frames reference the source
instances (SOP Class/Instance UIDs), with the source series' frame of reference, patient and
study, so PACS and viewers place it on the images. Each frame carries its source slice's own
position, so this is also the output for a series read with ``allow_irregular=True``.

The segment label (the target text, e.g. "liver") is a DICOM LO value and is checked before
anything is written (:func:`check_segment_label`): at most 64 characters, no backslash (DICOM's
value separator: "liver\\spleen" would become two values), no control characters (tab, line
breaks), not blank. Any other character is kept exactly: a label the source series' character
set cannot encode (e.g. "肝臓" in a Latin-1 series) makes the SEG UTF-8 (SpecificCharacterSet
"ISO_IR 192"), never "??".
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from msagent.errors import InvalidImage, InvalidInput
from msagent.io.atomic import atomic_output
from msagent.io.nifti import mask_data
from msagent.io.volume import Volume

MAX_LABEL = 64  # characters: a DICOM LO value
UTF8 = "ISO_IR 192"


def check_segment_label(label: str) -> str:
    """``label`` when DICOM can hold it as a SegmentLabel (see the module docstring), else
    :class:`~msagent.errors.InvalidInput` saying what to change."""
    if not isinstance(label, str) or not label.strip():
        raise InvalidInput(f"the DICOM SEG segment label is empty ({label!r}); give the target a name")
    problems = []
    if len(label) > MAX_LABEL:
        problems.append(f"it has {len(label)} characters, over DICOM's {MAX_LABEL}")
    if "\\" in label:
        problems.append("it holds a backslash, DICOM's value separator")
    controls = sorted({repr(c) for c in label if unicodedata.category(c) == "Cc"})
    if controls:
        problems.append(f"it holds the control character(s) {', '.join(controls)}")
    if problems:
        raise InvalidInput(f"the DICOM SEG segment label {label!r} cannot be written: "
                           f"{'; '.join(problems)}; shorten or rewrite the target (e.g. "
                           f"{_suggestion(label)!r})")
    return label


def _suggestion(label: str) -> str:
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in label)
    return " ".join(cleaned.replace("\\", " / ").split())[:MAX_LABEL].strip() or "target"


def _character_set(label: str, source: Any) -> str | None:
    """None when the source series' SpecificCharacterSet can encode ``label`` (highdicom
    copies it), else UTF-8. No SpecificCharacterSet means DICOM's default repertoire, ASCII."""
    from pydicom.charset import convert_encodings

    charset = source.get("SpecificCharacterSet")
    encodings = ["ascii"] if not charset else convert_encodings(charset)
    for encoding in encodings:
        try:
            label.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            continue
        return None
    return UTF8


def write_dicom_seg(mask: np.ndarray, volume: Volume, path: str | os.PathLike, *,
                    label: str = "target", category: Any = None, property_type: Any = None,
                    series_number: int = 300, description: str = "msagent segmentation") -> Path:
    """Write a binary DICOM SEG for ``mask`` (shaped like ``volume.data``) referencing the
    DICOM series ``volume`` was read from. ``category``/``property_type`` are coded concepts
    (pydicom ``Code``); by default the generic SNOMED CT "Anatomical Structure"/"Organ" with
    ``label`` (the target text, checked by :func:`check_segment_label` first) as the segment
    label."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
        from pydicom.uid import generate_uid
    except ImportError:
        raise InvalidImage("writing DICOM SEG needs highdicom: "
                           "pip install '.[medical]' in a msagent clone") from None
    from msagent._version import __version__

    check_segment_label(label)
    if not volume.datasets:
        raise InvalidInput("DICOM SEG needs the source DICOM series: read it with "
                           "read_dicom_series (for NIfTI input write a NIfTI mask instead)")
    charset = _character_set(label, volume.datasets[0])
    mask = mask_data(mask) > 0  # refuses NaN, negative and fractional values
    if mask.shape != volume.shape:
        raise InvalidInput(f"mask of shape {mask.shape} does not match the volume {volume.shape}")
    frames = np.stack([mask[:, :, k].T for k in range(mask.shape[2])]).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="msagent", family=codes.cid7162.ArtificialIntelligence, version=__version__)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
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
        device_serial_number="0", series_description=description, omit_empty_frames=False,
        **({"specific_character_set": charset} if charset else {}))
    path = Path(path)
    with atomic_output(path) as tmp:
        seg.save_as(str(tmp))
    return path


__all__ = ["check_segment_label", "write_dicom_seg"]
