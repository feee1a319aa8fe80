"""Slicing a clinical-size NIfTI read from disk: per-slice cost, volume session creation and a
3-D run, each against a baseline of the same run (issue 26, item 1).

nibabel returns a NIfTI's data in Fortran order (the file's voxel order, i fastest). A slice
must cost O(slice) whatever the memory order: a slicing routine that copies the whole array
first (``np.take`` does, for a Fortran-ordered array) made one axial slice of a 512×512×300
volume cost seconds. The volume (default 512×512×300 int16: a body ellipse at 40 HU, a
brighter "liver" ellipsoid at 160 HU on the middle slices, air at -1000 HU, a little noise)
is generated into a temporary folder and written as ``.nii.gz`` (its labels too) and as a
DICOM CT series of the same voxels.

1. **Slice** (goal ≤ 2×): ``Volume.slice`` per slice in each plane on the NIfTI as read
   (Fortran order) against the same voxels in C order; best of ``--repeats`` rounds of
   ``--slices`` slices, so the figure is robust to a shared machine's load. The goal: axial
   (the issue's case) ≤ 2× the C-ordered cost, and the slowest plane ≤ 2× the C-ordered
   volume's slowest plane. Per plane the ratio follows the memory layout: a Fortran-ordered
   sagittal slice is as strided as a C-ordered axial one (each element on its own cache
   line), so it is slower than the C-ordered sagittal slice, but O(slice).
2. **Session creation** (goal ≤ 1.5×): ``VolumeSession(build_stack(volume), backbone)`` on
   the stored NIfTI volume (window by its percentiles, every slice windowed once: what the web
   app's session route does) against the same on the volume read from the DICOM series.
3. **3-D run**: ``segment_volume`` (expert policy, the labels read from their NIfTI as the
   ground truth, ``msagent.testing.BrightBackbone``: a stand-in whose cost is negligible, so
   the run's slicing shows) on the NIfTI against the same on its C-ordered copy.

    python benchmarks/bench_volume_slicing.py [--shape 512,512,300] [--slices 20] [--repeats 3]

Results: printed (each goal OK or FAIL), and as JSON and markdown in ``--out``
(bench-output/bench_volume_slicing.*).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SLICE_GOAL = 2.0
SESSION_GOAL = 1.5
WINDOW = "150/150"  # body (40 HU) dark, liver (160 HU) bright: BrightBackbone finds it


def phantom(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(int16 HU volume, uint8 labels) in NIfTI voxel order (i, j, k), C-ordered."""
    nx, ny, nz = shape
    rng = np.random.default_rng(seed)
    x = (np.arange(nx) - nx / 2)[:, None] / (0.42 * nx)
    y = (np.arange(ny) - ny / 2)[None, :] / (0.32 * ny)
    body = x ** 2 + y ** 2 <= 1.0
    data = np.full(shape, -1000, np.int16)
    labels = np.zeros(shape, np.uint8)
    noise = rng.integers(-8, 9, size=(nx, ny), dtype=np.int16)
    for k in range(nz):
        data[:, :, k][body] = 40
        t = (k - nz / 2) / (0.3 * nz)
        if abs(t) < 1:
            r = np.sqrt(1 - t * t)
            lx = (np.arange(nx) - 0.4 * nx)[:, None] / (0.14 * nx * r)
            ly = (np.arange(ny) - 0.45 * ny)[None, :] / (0.12 * ny * r)
            liver = lx ** 2 + ly ** 2 <= 1.0
            data[:, :, k][liver] = 160
            labels[:, :, k][liver] = 1
        data[:, :, k] += np.roll(noise, k, axis=0)
    return data, labels


def write_dicom(data: np.ndarray, affine: np.ndarray, folder: Path) -> None:
    """``data`` (i, j, k) as an axial CT series: file k holds ``data[:, :, k].T`` (rows × columns)."""
    import copy

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag in ("WindowWidth", "WindowCenter"):  # the percentiles window both volumes alike
        if tag in source:
            delattr(source, tag)
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for k in range(data.shape[2]):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.InstanceNumber = series, k + 1
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]  # RAS i, j in LPS
        ds.ImagePositionPatient = [0.0, 0.0, float(k * spacing[2])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).astype("<i2").tobytes()
        ds.save_as(folder / f"img{k:04d}.dcm")


def best_per_slice(volume, plane: str, indices: list[int], repeats: int) -> float:
    """Seconds per slice: the best of ``repeats`` rounds over ``indices``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for index in indices:
            volume.slice(index, plane)
        best = min(best, (time.perf_counter() - start) / len(indices))
    return best


def bench_slices(nifti, c_ordered, count: int, repeats: int, budget_s: float) -> dict:
    cases = {}
    for plane in ("axial", "coronal", "sagittal"):
        n = nifti.n_slices(plane)
        indices = [int(i) for i in np.linspace(0, n - 1, min(count, n))]
        start = time.perf_counter()
        nifti.slice(indices[0], plane)  # one probe: the pathological case gets a short sample
        probe = time.perf_counter() - start
        if probe * len(indices) * repeats > budget_s:
            indices = indices[: max(1, int(budget_s / max(probe, 1e-9) / repeats))]
        f_s = best_per_slice(nifti, plane, indices, repeats)
        c_s = best_per_slice(c_ordered, plane, indices, repeats)
        cases[plane] = {"nifti_ms": 1e3 * f_s, "c_ordered_ms": 1e3 * c_s, "ratio": f_s / c_s,
                        "slices_timed": len(indices)}
    worst = (max(c["nifti_ms"] for c in cases.values())
             / max(c["c_ordered_ms"] for c in cases.values()))
    return {"cases": cases, "worst_plane_ratio": worst,
            "ok": cases["axial"]["ratio"] <= SLICE_GOAL and worst <= SLICE_GOAL}


def bench_sessions(nifti, dicom) -> dict:
    from msagent.testing import BrightBackbone
    from msagent.volume.session import VolumeSession
    from msagent.volume.stack import build_stack

    out = {}
    for name, volume in (("dicom", dicom), ("nifti", nifti)):
        start = time.perf_counter()
        session = VolumeSession(build_stack(volume, plane="axial"), BrightBackbone(), target="liver")
        out[f"{name}_s"] = time.perf_counter() - start
        session.close()
    out["ratio"] = out["nifti_s"] / out["dicom_s"]
    out["ok"] = out["ratio"] <= SESSION_GOAL
    return out


def bench_3d(nifti, c_ordered, labels) -> dict:
    import msagent
    from msagent.testing import BrightBackbone

    out = {}
    for name, volume in (("c_ordered", c_ordered), ("nifti", nifti)):
        start = time.perf_counter()
        result = msagent.segment_volume(volume, "liver", backbone=BrightBackbone(), policy="expert",
                                        ground_truth=labels, window=WINDOW, review_slices=1)
        out[f"{name}_s"] = time.perf_counter() - start
        out[f"{name}_dice"] = float(result.dice)
    out["ratio"] = out["nifti_s"] / out["c_ordered_s"]
    return out


def markdown(results: dict) -> str:
    shape = "×".join(map(str, results["shape"]))
    lines = [f"# Slicing a {shape} int16 NIfTI read from disk ({results['machine']})", ""]
    if "slices" in results:
        r = results["slices"]
        lines += ["| plane | NIfTI (Fortran order), ms/slice | C order, ms/slice | ratio | slices timed |",
                  "|---|---|---|---|---|"]
        for plane, c in r["cases"].items():
            lines.append(f"| {plane} | {c['nifti_ms']:.3f} | {c['c_ordered_ms']:.3f} | "
                         f"{c['ratio']:.2f} | {c['slices_timed']} |")
        lines += ["", f"goal: axial ≤ {SLICE_GOAL}× the C-ordered cost, and the slowest plane ≤ "
                  f"{SLICE_GOAL}× the C-ordered volume's slowest ({r['worst_plane_ratio']:.2f}) -> "
                  f"{'OK' if r['ok'] else 'FAIL'}. A plane whose slices are strided in memory "
                  "(axial in C order, sagittal in Fortran order) is a gather of one element per "
                  "cache line: slower, but still O(slice).", ""]
    if "sessions" in results:
        r = results["sessions"]
        lines += ["## Volume session creation (build_stack + VolumeSession, axial)", "",
                  f"DICOM series {r['dicom_s']:.2f} s, NIfTI {r['nifti_s']:.2f} s: ratio "
                  f"{r['ratio']:.2f} (goal ≤ {SESSION_GOAL}) -> {'OK' if r['ok'] else 'FAIL'}", ""]
    if "run_3d" in results:
        r = results["run_3d"]
        lines += ["## 3-D run (segment_volume, expert, BrightBackbone, labels from NIfTI)", "",
                  f"C-ordered copy {r['c_ordered_s']:.2f} s (Dice {r['c_ordered_dice']:.3f}), "
                  f"NIfTI as read {r['nifti_s']:.2f} s (Dice {r['nifti_dice']:.3f}): ratio "
                  f"{r['ratio']:.2f}", ""]
    lines.append(f"setup (generate, write, read back): {results['setup_s']:.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="512,512,300", help="i,j,k voxels (default 512,512,300)")
    parser.add_argument("--slices", type=int, default=20, help="slices timed per plane and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="slices,sessions,run_3d")
    parser.add_argument("--slice-budget", type=float, default=20.0,
                        help="seconds at most per plane for the NIfTI's slices (a slow slice "
                             "gets fewer samples)")
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args()
    from msagent import io

    wanted = {c.strip() for c in args.only.split(",") if c.strip()}
    shape = tuple(int(n) for n in args.shape.split(","))
    results: dict = {"shape": shape, "machine": f"{sys.platform}, {os.cpu_count()} CPUs, load "
                     f"{os.getloadavg()[0]:.1f}"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="msagent-bench-slicing-") as folder:
        root = Path(folder)
        data, labels = phantom(shape)
        affine = np.diag([0.8, 0.8, 1.5, 1.0])
        io.write_nifti(data, root / "ct.nii.gz", affine=affine)
        io.write_nifti(labels, root / "labels.nii.gz", affine=affine)
        if "sessions" in wanted:
            write_dicom(data, affine, root / "dicom")
        del data, labels
        nifti = io.read_volume(root / "ct.nii.gz")
        nifti_labels = io.read_volume(root / "labels.nii.gz")
        assert nifti.data.flags.f_contiguous, "nibabel returned a C-ordered array"
        c_ordered = io.Volume(np.ascontiguousarray(nifti.data), nifti.affine)
        dicom = io.read_volume(root / "dicom") if "sessions" in wanted else None
        results["setup_s"] = time.perf_counter() - start
        if "slices" in wanted:
            results["slices"] = bench_slices(nifti, c_ordered, args.slices, args.repeats,
                                             args.slice_budget)
        if "sessions" in wanted:
            results["sessions"] = bench_sessions(nifti, dicom)
        if "run_3d" in wanted:
            results["run_3d"] = bench_3d(nifti, c_ordered, nifti_labels)
    text = markdown(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_volume_slicing.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "bench_volume_slicing.md").write_text(text + "\n")
    print(f"written: {args.out / 'bench_volume_slicing.json'}, {args.out / 'bench_volume_slicing.md'}")


if __name__ == "__main__":
    main()  # no sys.exit: benchmarks/run_all.py runs the next benchmark after this one
