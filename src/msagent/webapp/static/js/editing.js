// Taking over: a session of the server's session API, seeded with the run's prompts up to the
// shown turn (POST /v1/agent/runs/{id}/session) or empty (POST /v1/sessions); then boxes,
// clicks, undo and reset go to /v1/sessions/{id}/box, /point, /undo, /reset.

import { ApiError, postForm, postJSON, request } from "./api.js";
import { ensureImageId } from "./media.js";
import { decodeMask } from "./rle.js";
import { $, clearError, guarded, render, state } from "./state.js";

// Queue an edit after the previous ones (clicks made quickly are applied in order).
function queued(action) {
  state.queue = state.queue.then(() => guarded(action));
  return state.queue;
}

// Make a session step (SessionStep: info + RLE mask) the shown state; `last` is the prompt
// just added (highlighted), `fromSteps` how many run steps were replayed.
function adopt(step, fromSteps, last = null) {
  const previous = state.session;
  state.session = {
    id: step.session.session_id,
    info: step.session,
    mask: step.mask ? decodeMask(step.mask) : null,
    maskRle: step.mask || null,
    fromSteps: fromSteps === undefined ? previous?.fromSteps ?? null : fromSteps,
    last,
  };
  $("canvas").dataset.sessionId = state.session.id;
  render();
}

async function ensureSession() {
  if (state.session) return state.session;
  const run = state.run;
  if (run && run.controller) throw new Error("The agent is still running: wait for it or stop it first.");
  if (run && run.id && !run.failed) {
    adopt(await seed(run, state.view), state.view);
  } else {
    const form = new FormData();
    form.append("image_id", await ensureImageId());
    const info = await postForm("/v1/sessions", form);
    adopt({ session: info, mask: null }, null);
  }
  return state.session;
}

// A session with the run's first `steps` steps replayed. A stopped run reaches the server's
// store once its current step ends: ask again for a few seconds.
async function seed(run, steps) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await postJSON(`/v1/agent/runs/${run.id}/session`, { steps });
    } catch (err) {
      if (run.done || attempt >= 10 || !(err instanceof ApiError) || err.code !== "run_not_found") throw err;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

export function takeOver() {
  clearError();
  return queued(ensureSession);
}

export function addBox(box) {
  clearError();
  return queued(async () => {
    const session = await ensureSession();
    adopt(await postJSON(`/v1/sessions/${session.id}/box`, box), undefined, { box });
  });
}

export function addPoint(point) {
  clearError();
  return queued(async () => {
    const session = await ensureSession();
    adopt(await postJSON(`/v1/sessions/${session.id}/point`, point), undefined, { point });
  });
}

export function undo() {
  clearError();
  return queued(async () => {
    if (!state.session) throw new Error("Nothing to undo: edit the mask first (click or drag on the image).");
    try {
      const response = await request(`/v1/sessions/${state.session.id}/undo?mask_format=rle`, { method: "POST" });
      adopt(await response.json());
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) throw new Error("Nothing left to undo.");
      throw err;
    }
  });
}

export function reset() {
  clearError();
  return queued(async () => {
    if (!state.session) return;
    const response = await request(`/v1/sessions/${state.session.id}/reset`, { method: "POST" });
    adopt(await response.json());
  });
}

// Close the session and show the run again.
export async function leaveSession() {
  const session = state.session;
  if (!session) return;
  state.session = null;
  delete $("canvas").dataset.sessionId;
  render();
  await request(`/v1/sessions/${session.id}`, { method: "DELETE" }).catch(() => {});
}
