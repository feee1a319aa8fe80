"""Storing an evaluation's units: what a computed unit leaves on disk and in the records.

:func:`package` turns a unit's record and outcome into a :class:`UnitResult` (mask, overlay
thumbnail, trajectory JSON; picklable, so Ray workers send it back). :func:`store_result`
writes its files under ``masks/``, ``overlays/`` and ``trajectories/`` (per
``backbone/method/``), then appends its record, so a record never lacks its files. A volume's
mask is stored on the input's grid: NIfTI when the input has a regular geometry, else ``.npz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from msagent.datasets.volumes import LoadedVolume
from msagent.evaluation import protocols
from msagent.evaluation.records import CaseRecord, RecordStore, safe_name
from msagent.evaluation.units import checked_case
from msagent.io.atomic import atomic_write


@attrs.frozen(eq=False)
class UnitResult:
    """A computed unit, ready to store (picklable: what Ray workers send back). A volume's
    mask comes encoded: ``mask_bytes`` with its file ``mask_suffix`` (".nii.gz", ".npz")."""

    record: CaseRecord
    mask: np.ndarray | None = None
    overlay: np.ndarray | None = None
    trajectory_json: str | None = None
    mask_bytes: bytes | None = None
    mask_suffix: str | None = None


def package(case: Any, record: CaseRecord, outcome: Any, *, save_masks: bool = True,
            save_trajectories: bool = True) -> UnitResult:
    """What gets stored for a unit: the record, mask, overlay thumbnail and trajectory."""
    from msagent.evaluation.report import case_overlay

    if outcome is None:
        return UnitResult(record)
    if isinstance(case, LoadedVolume):
        return _package_volume(case, record, outcome, save_masks, save_trajectories)
    checked = checked_case(case)
    # an outcome means the case was checked before (None only for an empty ground truth, which
    # has no outcome) and checked_case sets the ground truth
    assert checked is not None and checked.ground_truth is not None
    overlay = case_overlay(checked.image, checked.ground_truth, outcome.mask,
                           trajectory=getattr(outcome, "trajectory", None))
    trajectory = outcome.trajectory if save_trajectories else None
    return UnitResult(record, outcome.mask, overlay,
                      None if trajectory is None else trajectory.to_json())


def _package_volume(case: LoadedVolume, record: CaseRecord, outcome: protocols.Outcome,
                    save_masks: bool, save_trajectories: bool) -> UnitResult:
    """A volume's files: its mask on the input's grid (NIfTI bytes, or ``.npz`` for an
    array without geometry), the key slice's overlay and the VolumeTrajectory."""
    from msagent.evaluation.report import case_overlay

    key = int(outcome.values.get("key_slice", 0))
    trajectory = outcome.trajectory
    episode = next((e.trajectory for e in getattr(trajectory, "episodes", ())
                    if e.role == "key"), None)
    overlay = case_overlay(case.sliced.slices.image(key), case.ground_truth[key],
                           outcome.mask[key], trajectory=episode)
    mask = suffix = None
    if save_masks:
        suffix, mask = volume_mask_bytes(case, outcome.mask)
    text = trajectory.to_json() if trajectory is not None and save_trajectories else None
    return UnitResult(record, None, overlay, text, mask, suffix)


def store_result(result: UnitResult, out_dir: Path, store: RecordStore, *,
                 save_masks: bool = True) -> CaseRecord:
    """Write the unit's files under ``out_dir``, then append its record to ``store`` (so a
    record never lacks its files); returns the record with its file paths."""
    from msagent.io import save_mask_png, save_png

    record = result.record
    folder = Path(safe_name(record.backbone)) / safe_name(record.method)
    stem = safe_name(record.case_id)
    changes: dict[str, Any] = {}  # file fields (str) for attrs.evolve
    if result.mask is not None and save_masks:
        changes["mask_file"] = str(Path("masks") / folder / f"{stem}.png")
        save_mask_png(result.mask, out_dir / changes["mask_file"])
    if result.mask_bytes is not None and save_masks:  # a volume's mask, encoded
        changes["mask_file"] = str(Path("masks") / folder / f"{stem}{result.mask_suffix}")
        atomic_write(out_dir / changes["mask_file"], result.mask_bytes)
    if result.overlay is not None:
        changes["overlay_file"] = str(Path("overlays") / folder / f"{stem}.png")
        save_png(result.overlay, out_dir / changes["overlay_file"])
    if result.trajectory_json is not None:
        changes["trajectory_file"] = str(Path("trajectories") / folder / f"{stem}.json")
        atomic_write(out_dir / changes["trajectory_file"], result.trajectory_json.encode())
    record = attrs.evolve(record, **changes)
    store.append(record)
    return record


def volume_mask_bytes(case: LoadedVolume, display: np.ndarray) -> tuple[str, bytes]:
    """The file suffix and bytes of a volume's mask in the input's voxel order: NIfTI aligned
    with the input (:func:`msagent.io.write_mask_nifti`, its header kept) when the input has
    a regular geometry, else a compressed ``.npz`` (key ``mask``)."""
    import io as _io

    from msagent.io.nifti import mask_nifti_bytes

    voxels = case.sliced.to_voxels(display)
    reference = case.sliced.volume
    if reference is not None and not reference.irregular:
        return ".nii.gz", mask_nifti_bytes(voxels, reference)
    buffer = _io.BytesIO()
    np.savez_compressed(buffer, mask=voxels)
    return ".npz", buffer.getvalue()
