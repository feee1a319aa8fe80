// Opening images and volumes: 2-D files go to POST /v1/images and are shown as the server
// decoded them (GET /v1/images/{id}/png); NIfTI/DICOM go to POST /v1/volumes and are shown
// slice by slice, windowed (GET /v1/volumes/{id}/slice.png).

import { postForm, postJSON, request } from "./api.js";
import { $, clearError, hooks, render, setStatus, showError, state } from "./state.js";

const VOLUME_RE = /\.(nii|nii\.gz|dcm|zip)$/i;
let viewer = null;
let sliceRequest = 0;
let sliceTimer = null;
let sliceLoading = Promise.resolve();

export function initMedia(theViewer) {
  viewer = theViewer;
  $("image-file").addEventListener("change", (e) => openFiles([...e.target.files]));
  $("plane").addEventListener("change", () => {
    if (!state.volume) return;
    state.volume.plane = $("plane").value;
    setSliceRange(Math.floor(state.volume.slices[state.volume.plane] / 2));
    loadSlice();
  });
  $("slice").addEventListener("input", () => {
    if (!state.volume) return;
    state.volume.index = Number($("slice").value);
    $("slice-label").textContent = `${state.volume.index + 1} / ${state.volume.slices[state.volume.plane]}`;
    clearTimeout(sliceTimer);
    sliceTimer = setTimeout(() => { sliceTimer = null; loadSlice(); }, 60);
  });
  $("window").addEventListener("change", () => {
    $("window-custom").hidden = $("window").value !== "custom";
    if ($("window").value !== "custom") windowChanged();
  });
  $("window-custom").addEventListener("change", windowChanged);
}

function windowChanged() {
  if (!state.volume) return;
  const choice = $("window").value;
  state.volume.window = choice === "custom" ? $("window-custom").value.trim() : choice;
  state.volumeMasks.clear(); // a new window is a new image for the backbone
  loadSlice();
}

async function bitmapOf(response) {
  return createImageBitmap(await response.blob());
}

export async function openFiles(files) {
  if (!files.length) return;
  clearError();
  const isVolume = files.length > 1 || VOLUME_RE.test(files[0].name);
  setStatus("image-status", `Opening ${files.length > 1 ? `${files.length} files` : files[0].name}…`, "busy");
  try {
    await forgetWork();
    hooks.volumeClosed();
    if (isVolume) await openVolume(files);
    else await openImage(files[0]);
  } catch (err) {
    setStatus("image-status", "Could not open the file.", "error");
    showError(err);
  }
}

async function openImage(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const info = await postForm("/v1/images", form);
  const bitmap = await bitmapOf(await request(`/v1/images/${info.image_id}/png`));
  state.volume = null;
  $("volume-controls").hidden = true;
  show(bitmap, { kind: "image", name: file.name, imageId: info.image_id, width: info.width, height: info.height });
  setStatus("image-status", `${file.name}: ${info.width}×${info.height} px`, "ready");
}

async function openVolume(files) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const info = await postForm("/v1/volumes", form);
  state.volume = { ...info, plane: "axial", index: 0, window: "auto" };
  state.volumeMasks.clear();
  $("volume-controls").hidden = false;
  $("plane").value = "axial";
  fillWindows(info);
  $("dl-seg").hidden = !info.exports.includes("dicom-seg");
  setSliceRange(Math.floor(info.slices.axial / 2));
  await loadSlice();
  const modality = info.modality ? ` ${info.modality}` : "";
  setStatus("image-status", `${info.name}:${modality} ${info.kind} volume ${info.shape.join("×")}`, "ready");
}

function fillWindows(info) {
  const select = $("window");
  select.innerHTML = "";
  const [w, l] = info.window;
  select.append(new Option(`auto (${info.window_source}: ${Math.round(w)}/${Math.round(l)})`, "auto"));
  for (const [name, [pw, pl]] of Object.entries(info.presets)) {
    select.append(new Option(`${name.replace("_", " ")} (${pw}/${pl})`, name));
  }
  select.append(new Option("custom W/L…", "custom"));
  select.value = "auto";
  $("window-custom").hidden = true;
}

function setSliceRange(index) {
  const count = state.volume.slices[state.volume.plane];
  const slider = $("slice");
  slider.min = 0;
  slider.max = count - 1;
  slider.value = index;
  state.volume.index = index;
  $("slice-label").textContent = `${index + 1} / ${count}`;
}

// Wait until the slice the controls show is the one displayed (before running or editing).
export async function settled() {
  if (sliceTimer) {
    clearTimeout(sliceTimer);
    sliceTimer = null;
    loadSlice();
  }
  let current;
  do {
    current = sliceLoading;
    await current;
  } while (current !== sliceLoading);
}

// Show the current slice; the newest request wins when the slider moves fast.
export function loadSlice() {
  sliceLoading = fetchSlice();
  return sliceLoading;
}

async function fetchSlice() {
  const vol = state.volume;
  const ticket = ++sliceRequest;
  const query = new URLSearchParams({ plane: vol.plane, index: vol.index });
  if (vol.window && vol.window !== "auto") query.set("window", vol.window);
  try {
    const response = await request(`/v1/volumes/${vol.volume_id}/slice.png?${query}`);
    const bitmap = await bitmapOf(response);
    if (ticket !== sliceRequest) return;
    await forgetWork();
    show(bitmap, { kind: "slice", name: `${vol.plane} ${vol.index}`, imageId: null,
      width: bitmap.width, height: bitmap.height });
    $("canvas").dataset.slice = `${vol.plane}:${vol.index}:${vol.window}`;
    hooks.sliceShown();
  } catch (err) {
    if (ticket === sliceRequest) showError(err);
  }
}

function show(bitmap, image) {
  state.image = image;
  viewer.setImage(bitmap);
  $("placeholder").hidden = true;
  $("canvas").dataset.imageId = image.imageId || "";
  render();
}

// The displayed image's server id (a volume slice is stored on first use).
export async function ensureImageId() {
  await settled();
  const image = state.image;
  if (!image) throw new Error("Open an image first.");
  if (!image.imageId) {
    const vol = state.volume;
    const body = { plane: vol.plane, index: vol.index };
    if (vol.window && vol.window !== "auto") body.window = vol.window;
    const info = await postJSON(`/v1/volumes/${vol.volume_id}/slice`, body);
    if (state.image === image) image.imageId = info.image_id;
    $("canvas").dataset.imageId = info.image_id;
    return info.image_id;
  }
  return image.imageId;
}

// Stop a running agent and close the session: they belong to the image being replaced.
export async function forgetWork() {
  if (state.run && state.run.controller) state.run.controller.abort();
  state.run = null;
  state.view = 0;
  if (state.session) {
    const id = state.session.id;
    state.session = null;
    request(`/v1/sessions/${id}`, { method: "DELETE" }).catch(() => {});
  }
}
