// 3-D: a volume session of the server (POST /v1/volumes/{id}/sessions) for the shown plane and
// window. With "3-D" checked, clicks and boxes prompt the shown slice (.../slices/{i}/prompts),
// Propagate carries the prompted slices through the volume (.../propagate), the slider then
// shows each slice's result (.../slices/{i}/mask), Undo steps back (.../undo) and the volume
// downloads export the whole result (.../export).

import { ApiError, fileNameOf, postJSON, request, saveBlob } from "./api.js";
import { forgetWork, settled } from "./media.js";
import { decodeMask } from "./rle.js";
import { $, clearError, guarded, hooks, render, setStatus, showError, state } from "./state.js";

// state.vol3d: {id, path, volumeId, plane, window, info (VolumeSessionInfo),
//   masks: Map(index → shown slice), version, last (the prompt just added)}

export function init3d() {
  $("mode-3d").addEventListener("change", toggled);
  $("propagation").addEventListener("change", () => end3d("The propagation changed: prompt a slice again."));
  $("propagate").addEventListener("click", propagate);
  $("undo3d").addEventListener("click", undo3d);
  hooks.sliceShown = sliceShown;
  hooks.volumeClosed = () => end3d();
}

// Whether prompts and downloads go to the volume session.
export function active3d() {
  return Boolean(state.volume && $("mode-3d").checked);
}

// The shown slice's 3-D mask and prompts (null when not in 3-D or not loaded yet).
export function view3d() {
  const s = current();
  if (!active3d() || !s || !state.image || state.image.kind !== "slice") return null;
  const shown = s.masks.get(state.volume.index);
  return shown ? { ...shown, highlight: s.last && s.last.index === shown.index ? s.last.prompt : null } : null;
}

export function session3d() {
  return active3d() ? current() : null;
}

// The session, if it is for the volume, plane and window shown.
function current() {
  const s = state.vol3d;
  const vol = state.volume;
  if (!s || !vol || s.volumeId !== vol.volume_id || s.plane !== vol.plane || s.window !== vol.window) return null;
  return s;
}

function queued(action) {
  state.queue = state.queue.then(() => guarded(action));
  return state.queue;
}

async function toggled() {
  clearError();
  if (active3d()) {
    await forgetWork(); // the 2-D run or session of this slice gives way
    sliceShown();
  } else {
    end3d();
  }
  render();
}

// Close the session (on the server too); `why` goes to the status line.
export function end3d(why = "") {
  const s = state.vol3d;
  state.vol3d = null;
  delete $("canvas").dataset.vol3d;
  if (s) request(s.path, { method: "DELETE" }).catch(() => {});
  setStatus("vol-status", why);
  render();
}

async function ensure() {
  await settled();
  if (!state.volume) throw new Error("3-D needs a NIfTI or DICOM volume: open one first.");
  const existing = current();
  if (existing) return existing;
  if (state.vol3d) end3d();
  const vol = state.volume;
  const body = { target: $("target").value.trim() || "target", plane: vol.plane,
    propagation: $("propagation").value };
  if (vol.window && vol.window !== "auto") body.window = vol.window;
  const info = await postJSON(`/v1/volumes/${vol.volume_id}/sessions`, body);
  state.vol3d = { id: info.session_id, path: `/v1/volumes/${vol.volume_id}/sessions/${info.session_id}`,
    volumeId: vol.volume_id, plane: vol.plane, window: vol.window, info, masks: new Map(),
    version: info.version, last: null };
  $("canvas").dataset.vol3d = info.session_id;
  return state.vol3d;
}

// A new session state: slices' masks from an older version are stale.
function adopt(s, info) {
  s.info = info;
  if (info.version !== s.version) {
    s.masks.clear();
    s.version = info.version;
  }
  $("canvas").dataset.vol3dVersion = info.version;
  describe(s);
}

function shownSlice(index, body) {
  return { index, mask: decodeMask(body.mask || body), source: body.source || "seed",
    score: body.score, area: body.area, prompts: { box: body.box || null, points: body.points || [] } };
}

export function prompt3d(prompt) {
  clearError();
  return queued(async () => {
    const s = await ensure();
    const index = state.volume.index;
    const body = prompt.box ? { box: prompt.box } : { point: prompt.point };
    const step = await postJSON(`${s.path}/slices/${index}/prompts`, body);
    if (state.vol3d !== s) return;
    adopt(s, step.session);
    s.masks.set(index, shownSlice(index, step));
    s.last = { index, prompt };
    render();
  });
}

function propagate() {
  clearError();
  return queued(async () => {
    const s = current();
    if (!active3d() || !s || !s.info.seeds.length) {
      throw new Error("Nothing to propagate yet: with 3-D checked, drag a box (or click) on a slice " +
        "showing the target first.");
    }
    setStatus("vol-status", "Propagating through the volume…", "busy");
    $("propagate").disabled = true;
    try {
      const info = await postJSON(`${s.path}/propagate`, {});
      if (state.vol3d !== s) return;
      s.last = null;
      adopt(s, info);
      await loadMask(s, state.volume.index);
    } catch (err) {
      setStatus("vol-status", "The propagation failed.", "error");
      throw err;
    } finally {
      render();
    }
  });
}

function undo3d() {
  clearError();
  return queued(async () => {
    const s = current();
    if (!s) throw new Error("Nothing to undo in 3-D yet.");
    let info;
    try {
      info = await (await request(`${s.path}/undo`, { method: "POST" })).json();
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) throw new Error("Nothing left to undo in 3-D.");
      throw err;
    }
    if (state.vol3d !== s) return;
    s.last = null;
    adopt(s, info);
    await loadMask(s, state.volume.index);
    render();
  });
}

// Fetch slice `index`'s mask (once per session version) and show it if it is still shown.
async function loadMask(s, index) {
  if (s.masks.has(index)) return;
  const body = await (await request(`${s.path}/slices/${index}/mask?format=rle`)).json();
  if (state.vol3d !== s || body.version !== s.version) return;
  s.masks.set(index, shownSlice(index, body));
}

// Called when the page shows another slice (media.js).
function sliceShown() {
  if (!active3d()) return;
  if (state.vol3d && !current()) end3d("The plane or window changed: prompt a slice again.");
  const s = current();
  if (!s) {
    render();
    return;
  }
  const index = state.volume.index;
  loadMask(s, index).then(render).catch(showError);
}

function describe(s) {
  const info = s.info;
  const seeds = info.seeds.length ? `seeds on slice(s) ${info.seeds.map((i) => i + 1).join(", ")}` : "no seed";
  const slices = info.slices.map((r) => r.index);
  const extent = slices.length
    ? ` · target on ${slices.length} slice(s), ${slices[0] + 1}–${slices[slices.length - 1] + 1}` : "";
  const pending = info.pending.length ? ` · ${info.pending.length} not propagated yet` : "";
  setStatus("vol-status", `3-D (${info.method}): ${seeds}${extent}${pending}`,
    info.propagated && !info.pending.length ? "done" : "ready");
}

export function export3d(format) {
  return guarded(async () => {
    const s = current();
    if (!s || !s.info.slices.length) throw new Error("The 3-D result is empty: prompt a slice and propagate first.");
    const label = $("target").value.trim().slice(0, 64) || undefined;
    const response = await request(`${s.path}/export`, { method: "POST", json: { format, label } });
    saveBlob(await response.blob(), fileNameOf(response, format === "nifti" ? "mask.nii.gz" : "mask.dcm"));
  });
}

export function slicePng3d() {
  const s = current();
  return s ? `${s.path}/slices/${state.volume.index}/mask?format=png` : null;
}
