// Running the agent: POST /v1/agent/run streams NDJSON lines (start, turn…, done | error);
// each turn is drawn as it arrives and the view follows the newest turn.

import { ApiError, readNdjson, request } from "./api.js";
import { ensureImageId, settled } from "./media.js";
import { decodeMask } from "./rle.js";
import { $, clearError, fmt, render, setStatus, showError, state } from "./state.js";
import { leaveSession } from "./editing.js";

export function selectedPolicy() {
  const name = $("policy").value;
  return (state.plugins?.policies || []).find((p) => p.name === name) || { name };
}

export async function runAgent() {
  clearError();
  const target = $("target").value.trim();
  const policy = selectedPolicy();
  const gtFile = $("gt-file").files[0];
  try {
    if (!state.image) throw new Error("Open an image first.");
    if (!target) throw new Error("Type a target description (what to segment), e.g. 'liver in abdomen CT'.");
    if (!policy.name) throw new Error("No policy is installed on this server.");
    if (policy.needs_ground_truth && !gtFile) {
      throw new Error(`The '${policy.name}' policy simulates an expert from the ground truth: ` +
        "choose a ground-truth mask file (or pick another policy).");
    }
  } catch (err) {
    showError(err);
    return;
  }
  if (state.run && state.run.controller) state.run.controller.abort();
  await settled();
  await leaveSession();
  const controller = new AbortController();
  state.run = { id: null, target, turns: [], done: false, stopReason: "", gt: null, controller };
  state.view = 0;
  setRunning(true);
  setStatus("run-status", `Running ${policy.name}…`, "running");
  render();
  const run = state.run;
  try {
    const form = new FormData();
    form.append("image_id", await ensureImageId());
    form.append("target", target);
    form.append("policy", policy.name);
    form.append("max_turns", $("max-turns").value || "5");
    form.append("policy_options", $("policy-options").value);
    if (gtFile) form.append("ground_truth", gtFile, gtFile.name);
    const initialFile = $("initial-file").files[0];
    if (fromProposal()) form.append("initial_mask", "proposal"); // the backbone proposes turn 0
    else if (initialFile) form.append("initial_mask", initialFile, initialFile.name);
    if (state.volume) {
      form.append("volume_id", state.volume.volume_id);
      form.append("plane", state.volume.plane);
      form.append("index", String(state.volume.index));
    }
    const response = await request("/v1/agent/run", { method: "POST", form, signal: controller.signal });
    await readNdjson(response, (item) => onItem(run, item));
    if (!run.done && !run.failed) throw new ApiError(0, "stream", "The run ended without a result.");
  } catch (err) {
    if (err.name === "AbortError") {
      setStatus("run-status", "Stopped.", "stopped");
    } else {
      run.failed = true;
      setStatus("run-status", "The run failed.", "error");
      showError(err);
    }
  } finally {
    run.controller = null;
    if (state.run === run) setRunning(false);
    render();
  }
}

function onItem(run, item) {
  if (state.run !== run) return;
  if (item.type === "start") {
    run.id = item.run_id;
    run.imageId = item.image_id;
    run.backbone = item.backbone;
    run.policy = item.policy;
    run.gt = item.ground_truth ? decodeMask(item.ground_truth) : null;
    // a run that refines an existing mask (uploaded, or the backbone's proposal) shows it
    // before turn 1, with its source and score
    run.initial = item.initial ? { ...item.initial, maskBits: decodeMask(item.initial.mask) } : null;
    run.proposal = item.proposal || null; // { matched, note, … } when asked for a proposal
    if (run.proposal && !run.proposal.matched) {
      setStatus("run-status", `Running ${run.policy}… ${run.proposal.note}`, "running");
    }
    $("canvas").dataset.runId = item.run_id;
  } else if (item.type === "turn") {
    item.maskBits = item.mask ? decodeMask(item.mask) : null;
    run.turns.push(item);
    state.view = run.turns.length;
    setStatus("run-status", `Running ${run.policy}… turn ${run.turns.length}`, "running");
  } else if (item.type === "done") {
    run.done = true;
    run.stopReason = item.stop_reason;
    // One rule with msagent.segment and the CLI: no mask is a failure, with the last error;
    // a mask after an early end is a result that says how it ended.
    const errors = run.turns.filter((t) => t.error).map((t) => t.error);
    const lastError = errors.length ? ` — ${errors[errors.length - 1]}` : "";
    if (item.turns === 0 && !(run.initial && item.stop_reason === "stop")) {
      run.failed = true;
      setStatus("run-status", `No mask: ${reason(item.stop_reason)}${lastError}`, "error");
    } else {
      const early = ["stop", "max_turns"].includes(item.stop_reason) ? "" : lastError;
      const quality = item.iou === null ? "" : ` · IoU ${fmt(item.iou)} · Dice ${fmt(item.dice)}`;
      setStatus("run-status",
        `Done: ${item.turns} action(s), ${reason(item.stop_reason)}${quality}${early}`,
        early ? "error" : "done");
    }
  } else if (item.type === "error") {
    run.failed = true;
    setStatus("run-status", "The run failed.", "error");
    showError(new ApiError(item.status, item.code, item.detail));
  }
  render();
}

function reason(stop) {
  return { stop: "the policy stopped", max_turns: "turn limit reached",
    invalid_output: "invalid policy output", stopped_without_mask: "stopped before any mask",
    cancelled: "cancelled",
    policy_error: "policy error" }[stop] || stop;
}

function setRunning(running) {
  $("run").disabled = running;
  $("stop").hidden = !running;
  for (const id of ["image-file", "slice", "plane", "window"]) $(id).disabled = running;
}

// Whether the run starts from the backbone's proposal: offered only when the served backbone
// can propose (GET /v1/plugins' can_propose); it replaces an uploaded initial mask.
export function fromProposal() {
  return !$("proposal-label").hidden && $("start-proposal").checked;
}

export function stopAgent() {
  if (state.run && state.run.controller) state.run.controller.abort();
}

// What the run shows after `view` steps: the newest mask and prompts, and the step itself.
export function runView(run, view) {
  const shown = run.turns.slice(0, view);
  const executed = shown.filter((t) => t.executed);
  const last = executed[executed.length - 1] || null;
  const turn = view > 0 ? run.turns[view - 1] : null;
  return {
    turn,
    last,
    mask: last ? last.maskBits : run.initial ? run.initial.maskBits : null,
    maskRle: last ? last.mask : run.initial ? run.initial.mask : null,
    prompts: last ? last.prompts : { box: null, points: [] },
    highlight: turn && turn.executed ? turn.prompt : null,
  };
}

export function setView(view) {
  if (!state.run) return;
  state.view = Math.max(0, Math.min(view, state.run.turns.length));
  render();
}
