// The msagent web page: wiring and rendering. See index.html for the layout.

import { getJSON, getKey, request, setKey } from "./api.js";
import { fromProposal, runAgent, runView, selectedPolicy, setView, stopAgent } from "./agent.js";
import { downloadPng, downloadTrajectory, downloadVolume } from "./downloads.js";
import { addBox, addPoint, leaveSession, reset, takeOver, undo } from "./editing.js";
import { initMedia } from "./media.js";
import { $, clearError, fmt, hooks, overlap, showError, state } from "./state.js";
import { Viewer } from "./viewer.js";
import { active3d, init3d, prompt3d, session3d, view3d } from "./volume3d.js";

// with 3-D on, boxes and clicks prompt the shown slice of the volume session
const viewer = new Viewer($("canvas"), {
  onBox: (box) => (active3d() ? prompt3d({ box }) : addBox(box)),
  onPoint: (point) => (active3d() ? prompt3d({ point }) : addPoint(point)),
});

async function loadServer() {
  try {
    state.health = await (await request("/health")).json();
    const h = state.health;
    $("server-info").textContent = `backbone ${h.backbone} on ${h.device} · msagent ${h.version}`;
  } catch (err) {
    showError(err);
    return;
  }
  try {
    state.plugins = await getJSON("/v1/plugins");
    fillPlugins(state.plugins);
    document.body.dataset.plugins = "loaded";
    if (["unauthorized", "network"].includes($("error").dataset.code)) clearError();
  } catch (err) {
    showError(err);
  }
}

function fillPlugins(plugins) {
  const backbone = $("backbone");
  backbone.innerHTML = "";
  for (const seg of plugins.backbones) {
    const label = seg.served ? seg.name : `${seg.name} (restart: msagent serve --backbone ${seg.name})`;
    const option = new Option(label, seg.name, seg.served, seg.served);
    option.disabled = !seg.served;
    option.title = seg.description;
    backbone.append(option);
  }
  const policy = $("policy");
  const previous = policy.value;
  policy.innerHTML = "";
  for (const p of plugins.policies) {
    const option = new Option(p.needs_ground_truth ? `${p.name} (needs ground truth)` : p.name, p.name);
    option.title = p.description;
    policy.append(option);
  }
  const names = plugins.policies.map((p) => p.name);
  policy.value = names.includes(previous) ? previous : names.includes("expert") ? "expert" : names[0] || "";
  $("max-turns").max = plugins.max_turns;
  $("proposal-label").hidden = !plugins.can_propose;
  if (!plugins.can_propose) $("start-proposal").checked = false;
  describeStart();
  describePolicy();
}

// a proposal replaces an uploaded initial mask
function describeStart() {
  $("initial-file").disabled = fromProposal();
}

function describePolicy() {
  const p = selectedPolicy();
  const text = (p.description || "").trim();
  const sentence = text && !/[.!?]$/.test(text) ? `${text}.` : text;
  $("policy-desc").textContent = [sentence, p.needs_ground_truth ? "Needs a ground-truth mask." : ""]
    .filter(Boolean).join(" ");
  $("gt-label").classList.toggle("required", Boolean(p.needs_ground_truth));
  // only what the policy lets API clients set; the server's operator sets the rest
  const allowed = Object.keys(p.client_options || {});
  $("policy-options").placeholder = allowed.length
    ? `KEY=VALUE … allowed: ${allowed.join(", ")}` : "this policy takes no options from the page";
  $("policy-options").disabled = allowed.length === 0;
  if (!allowed.length) $("policy-options").value = "";
}

// -- rendering --------------------------------------------------------------------------------
function render() {
  const run = state.run;
  const session = state.session;
  const view = run ? runView(run, state.view) : { turn: null, last: null, mask: null, maskRle: null,
    prompts: { box: null, points: [] }, highlight: null };
  const slice3d = view3d();
  const shown = active3d()
    ? { mask: slice3d ? slice3d.mask : null, maskRle: null,
      prompts: slice3d ? slice3d.prompts : { box: null, points: [] }, highlight: slice3d ? slice3d.highlight : null }
    : session
    ? { mask: session.mask, maskRle: session.maskRle,
      prompts: { box: session.info.box, points: session.info.points }, highlight: session.last }
    : view;
  viewer.update({ mask: shown.mask, gt: run ? run.gt : null, prompts: shown.prompts,
    highlight: shown.highlight, showMask: $("show-mask").checked, showGt: $("show-gt").checked });
  if (!active3d()) rememberSliceMask(shown.maskRle);
  renderNav(run);
  if (active3d()) render3dDetails(slice3d);
  else renderDetails(view.turn, session, run ? run.gt : null, view.last, run);
  renderTurnList(run);
  renderButtons(run, session, shown);
  $("canvas").dataset.source3d = slice3d ? `${slice3d.index}:${slice3d.source}` : "";
  document.body.dataset.mode = active3d() ? "volume3d" : session ? "editing" : run ? "run"
    : state.image ? "image" : "empty";
}

function rememberSliceMask(rle) {
  if (!state.volume || !state.image || state.image.kind !== "slice") return;
  const key = `${state.volume.plane}:${state.volume.index}`;
  if (rle) state.volumeMasks.set(key, rle);
  else if (state.run || state.session) state.volumeMasks.delete(key); // reset, undo, turn 0
}

function renderNav(run) {
  const total = run ? run.turns.length : 0;
  const slider = $("turn-slider");
  slider.max = total;
  slider.value = state.view;
  slider.disabled = !total || Boolean(state.session);
  $("prev").disabled = slider.disabled || state.view === 0;
  $("next").disabled = slider.disabled || state.view === total;
  const session = state.session;
  $("turn-label").textContent = active3d() ? "3-D: the slider shows every slice's result"
    : session ? (session.fromSteps === null ? "Editing by hand"
    : `Editing: took over after turn ${session.fromSteps}`)
    : !run ? "No agent run" : state.view === 0
    ? `Start (before turn 1) of ${total}` : `Turn ${state.view} of ${total}`;
  $("turn-label").dataset.view = state.view;
}

function describeAction(turn) {
  if (!turn.action) return "invalid reply";
  const p = turn.prompt;
  if (p && p.box) return `add_bbox (${p.box.x1}, ${p.box.y1})–(${p.box.x2}, ${p.box.y2})`;
  if (p && p.point) return `add_point ${p.point.label ? "positive" : "negative"} (${p.point.x}, ${p.point.y})`;
  return turn.action.kind;
}

function renderDetails(turn, session, gt, last, run) {
  const rows = [];
  if (session) {
    const info = session.info;
    const from = session.fromSteps === null ? "by hand" : `taken over after turn ${session.fromSteps}`;
    rows.push(["editing", `${from}; ${info.points.length} point(s)${info.box ? " + box" : ""}`],
      ["score", fmt(info.score)]);
    const quality = overlap(session.mask, gt);
    if (quality) rows.push(["IoU", fmt(quality.iou)], ["Dice", fmt(quality.dice)]);
    rows.push(["area", session.mask ? `${session.mask.area} px` : "–"]);
  } else if (turn) {
    const shown = turn.executed || !last ? turn : last; // a stop or invalid reply keeps the mask
    rows.push(["action", describeAction(turn)],
      ["arguments", turn.action ? JSON.stringify(turn.action.arguments) : "–"],
      ["score", fmt(shown.score)], ["IoU", fmt(shown.iou)], ["Dice", fmt(shown.dice)],
      ["area", shown.area === null ? "–" : `${shown.area} px`]);
    if (turn.error) rows.push(["error", turn.error]);
  } else if (run && run.initial) { // turn 0: the mask the run started from
    const start = run.initial;
    rows.push(["start", start.source === "upload" ? "the uploaded mask" : start.source],
      ["score", fmt(start.score)], ["IoU", fmt(start.iou)], ["Dice", fmt(start.dice)]);
  } else if (run && run.proposal) { // asked for a proposal, and nothing matched
    rows.push(["start", run.proposal.note]);
  }
  showDetails(rows, session ? "(your edits)" : turn ? turn.rationale || "(no rationale text)" : "");
}

function render3dDetails(slice) {
  const s = session3d();
  const source = { seed: "prompted here (a seed)", propagated: "propagated", none: "no target" };
  const rows = [["3-D", s ? `${s.info.seeds.length} seed slice(s), target on ${s.info.slices.length} ` +
    `of ${s.info.count} slice(s)` : "prompt a slice to start"]];
  if (slice) {
    rows.push(["slice", `${slice.index + 1}: ${source[slice.source] || slice.source}`],
      ["score", fmt(slice.score)], ["area", `${slice.area} px`]);
  }
  showDetails(rows, "");
}

function showDetails(rows, rationale) {
  const list = $("turn-details");
  list.innerHTML = "";
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  $("rationale").textContent = rationale;
}

function renderTurnList(run) {
  const list = $("turn-list");
  list.innerHTML = "";
  if (!run) return;
  run.turns.forEach((turn, i) => {
    const item = document.createElement("li");
    item.className = turn.error ? "invalid" : turn.executed ? "" : "stop";
    if (i + 1 === state.view && !state.session) item.classList.add("active");
    const quality = turn.iou === null ? "" : ` · IoU ${fmt(turn.iou)}`;
    item.textContent = `${describeAction(turn)}${quality}`;
    item.title = turn.rationale;
    item.addEventListener("click", () => setView(i + 1));
    list.append(item);
  });
}

function renderButtons(run, session, shown) {
  const running = Boolean(run && run.controller);
  const in3d = active3d();
  const s3d = session3d();
  $("vol3d").hidden = !state.volume;
  $("run").disabled = running || in3d;
  $("run").title = in3d ? "Uncheck 3-D to run the agent on a slice" : "";
  $("propagate").disabled = !in3d || !s3d || !s3d.info.seeds.length;
  $("undo3d").disabled = !in3d || !s3d || !s3d.info.undo;
  $("takeover").disabled = !state.image || Boolean(session) || running || in3d;
  $("undo").disabled = !session;
  $("reset").disabled = !session;
  $("leave-edit").hidden = !session || !run;
  $("dl-png").disabled = !shown.mask || running;
  $("dl-traj").disabled = !(session || (run && run.id && !running && !run.failed));
  const volume = Boolean(state.volume);
  $("dl-nifti").hidden = !volume;
  $("dl-seg").hidden = !volume || !state.volume.exports.includes("dicom-seg");
  $("dl-nifti").disabled = $("dl-seg").disabled = in3d ? !(s3d && s3d.info.slices.length) : !state.volumeMasks.size;
  const slices = [...state.volumeMasks.keys()].filter((k) => volume && k.startsWith(`${state.volume.plane}:`));
  $("volume-masks").textContent = !volume ? "" : in3d
    ? `The whole 3-D result (${s3d ? s3d.info.slices.length : 0} slice(s) with target) goes into the volume export.`
    : `${slices.length} ${state.volume.plane} slice(s) with a mask go into the volume export.`;
  $("edit-status").textContent = session
    ? `Session ${session.id.slice(0, 8)} · ${session.info.turns} prompt state(s)` : "";
}

hooks.render = render;

// -- wiring --------------------------------------------------------------------------------
function wire() {
  $("api-key").value = getKey();
  $("api-key").addEventListener("change", () => {
    setKey($("api-key").value.trim());
    loadServer();
  });
  $("error-close").addEventListener("click", clearError);
  $("policy").addEventListener("change", describePolicy);
  $("start-proposal").addEventListener("change", describeStart);
  $("run").addEventListener("click", runAgent);
  $("stop").addEventListener("click", stopAgent);
  $("prev").addEventListener("click", () => setView(state.view - 1));
  $("next").addEventListener("click", () => setView(state.view + 1));
  $("turn-slider").addEventListener("input", () => setView(Number($("turn-slider").value)));
  $("takeover").addEventListener("click", takeOver);
  $("undo").addEventListener("click", undo);
  $("reset").addEventListener("click", reset);
  $("leave-edit").addEventListener("click", leaveSession);
  $("dl-png").addEventListener("click", downloadPng);
  $("dl-nifti").addEventListener("click", () => downloadVolume("nifti"));
  $("dl-seg").addEventListener("click", () => downloadVolume("dicom-seg"));
  $("dl-traj").addEventListener("click", downloadTrajectory);
  $("show-mask").addEventListener("change", render);
  $("show-gt").addEventListener("change", render);
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || !state.run || state.session) return;
    if (e.key === "ArrowLeft") setView(state.view - 1);
    if (e.key === "ArrowRight") setView(state.view + 1);
  });
  initMedia(viewer);
  init3d();
}

wire();
render();
loadServer().then(() => { document.body.dataset.ready = "1"; });
