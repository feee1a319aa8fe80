// The page's state, element lookup, and error/status messages shared by the modules.

export const $ = (id) => document.getElementById(id);

export const state = {
  health: null, // GET /health
  plugins: null, // GET /v1/plugins
  // the displayed image: {kind: "image" | "slice", name, imageId (null until stored), width, height}
  image: null,
  // an opened volume: VolumeInfo plus {plane, index, window}
  volume: null,
  // the agent run: {id, imageId, target, turns: [...], done, stopReason, gt, controller}
  run: null,
  view: 0, // how many of the run's steps are shown (0: before the first)
  // a take-over session: {id, info, mask, fromSteps (null if not from a run), imageId}
  session: null,
  volumeMasks: new Map(), // "plane:index" → the RLE mask last shown on that slice
  vol3d: null, // the volume session (3-D): see volume3d.js
  queue: Promise.resolve(), // edits run one after another
};

// Called after any state change (render, set by app.js), after another volume slice is shown
// and when the volume is closed (sliceShown, volumeClosed: set by volume3d.js).
export const hooks = { render: () => {}, sliceShown: () => {}, volumeClosed: () => {} };

export function render() {
  hooks.render();
}

export function showError(err) {
  if (err && err.name === "AbortError") return;
  const box = $("error");
  const message = err instanceof Error ? err.message : String(err);
  $("error-text").textContent = message;
  box.dataset.code = (err && err.code) || "page";
  box.hidden = false;
  console.warn("msagent:", message);
}

export function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

export function setStatus(id, text, kind = "") {
  const el = $(id);
  el.textContent = text;
  el.dataset.state = kind;
}

// Run an async action, showing its error in the page; returns its result (or undefined).
export async function guarded(action) {
  try {
    return await action();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

export function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// IoU and Dice of two decodeMask() masks of the same size (null when either is missing).
export function overlap(a, b) {
  if (!a || !b || a.bits.length !== b.bits.length) return null;
  let both = 0;
  for (let i = 0; i < a.bits.length; i++) both += a.bits[i] & b.bits[i];
  const union = a.area + b.area - both;
  return { iou: union ? both / union : 1, dice: a.area + b.area ? (2 * both) / (a.area + b.area) : 1 };
}
