// Downloads: the shown mask as PNG (made by the server), a NIfTI mask aligned with the input
// volume or a DICOM SEG (every slice's last shown mask; in 3-D, the volume session's whole
// result), and the trajectory JSON.

import { fileNameOf, request, saveBlob } from "./api.js";
import { $, clearError, guarded, state } from "./state.js";
import { active3d, export3d, slicePng3d } from "./volume3d.js";

async function save(path, fallback, options) {
  const response = await request(path, options);
  saveBlob(await response.blob(), fileNameOf(response, fallback));
}

export function downloadPng() {
  clearError();
  return guarded(async () => {
    if (active3d()) {
      const path = slicePng3d();
      if (!path) throw new Error("No 3-D result yet: prompt a slice first.");
      await save(path, "mask.png");
    } else if (state.session) {
      if (!state.session.mask) throw new Error("The session has no mask yet: click or drag on the image.");
      await save(`/v1/sessions/${state.session.id}/mask?format=png`, "mask.png");
    } else if (state.run && state.run.id && !state.run.controller) {
      await save(`/v1/agent/runs/${state.run.id}/mask?steps=${state.view}`, "mask.png");
    } else {
      throw new Error("No mask to download yet: run the agent or edit by hand.");
    }
  });
}

export function downloadVolume(format) {
  clearError();
  if (active3d()) return export3d(format);
  return guarded(async () => {
    const vol = state.volume;
    if (!vol) throw new Error("Volume masks need a NIfTI or DICOM input.");
    const prefix = `${vol.plane}:`;
    const slices = [...state.volumeMasks.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .map(([key, mask]) => ({ index: Number(key.slice(prefix.length)), mask }));
    if (!slices.length) throw new Error(`No ${vol.plane} slice has a mask yet: segment a slice first.`);
    const label = $("target").value.trim() || "target";
    const suffix = format === "nifti" ? ".nii.gz" : ".dcm";
    await save(`/v1/volumes/${vol.volume_id}/export`, `mask${suffix}`,
      { method: "POST", json: { plane: vol.plane, slices, format, label } });
  });
}

export function downloadTrajectory() {
  clearError();
  return guarded(async () => {
    if (state.session) {
      const target = encodeURIComponent($("target").value.trim());
      await save(`/v1/agent/sessions/${state.session.id}/trajectory?target=${target}`, "trajectory.json");
    } else if (state.run && state.run.id && !state.run.controller) {
      await save(`/v1/agent/runs/${state.run.id}`, "trajectory.json");
    } else {
      throw new Error("No trajectory yet: run the agent (or edit by hand) first.");
    }
  });
}
