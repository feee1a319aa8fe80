"""Routes that run the agent for the web page.

- ``GET /v1/plugins``: the installed backbones (which one this server runs) and policies;
- ``POST /v1/agent/run``: one :class:`msagent.Agent` episode on a stored image with the
  server's segmenter (its shared embedding cache), from nothing, an uploaded mask or the
  backbone's proposal for the target (``initial_mask=proposal``: made in the decode pool
  before the stream; the ``start`` line carries it as ``initial`` with its source and score,
  and ``proposal`` says what matched), streamed as NDJSON: a ``start`` line, one
  ``turn`` line per policy reply (see :class:`~.streaming.TurnEncoder`), then ``done`` (or
  ``error``). The episode runs in a worker thread; closing the stream stops it (the run is
  kept with the steps it made);
- ``GET /v1/agent/runs/{id}``: the finished run's trajectory JSON
  (:meth:`msagent.Trajectory.to_dict`); ``.../mask?steps=K``: its mask after K steps;
- ``POST /v1/agent/runs/{id}/session``: a session seeded with the run's first K steps (its
  prompts replayed through the session API), to take over from there;
- ``GET /v1/agent/sessions/{id}/trajectory``: a session's prompts as a trajectory (the run's
  replayed steps keep their replies, later ones are marked human).

``install(app)`` adds the routes and their state at ``app.state.msagent_agent``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, cast

import attrs
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from msagent import metrics
from msagent.agent import Agent
from msagent.agent.proposal import Proposal
from msagent.agent.refine import check_initial_mask
from msagent.errors import InvalidInput, InvalidTarget, MsAgentError
from msagent.io.wire import png_bytes
from msagent.options import MAX_CLIENT_TEXT
from msagent.server.context import ServerContext, context, require_api_key
from msagent.server.errors import Conflict, status_of
from msagent.server.schemas import MaskFormat, SessionStep
from msagent.server.services import (
    ERRORS,
    attachment,
    check_proposal_request,
    initial_mask_upload,
    make_proposal,
    open_session,
    read_upload,
    run_prompt,
)
from msagent.server.views import session_step
from msagent.types import MaskPrediction, encode_mask
from msagent.webapp.agent.policies import (
    PolicyPool,
    PooledPolicy,
    backbone_listing,
    policy_listing,
    run_options,
)
from msagent.webapp.agent.runs import RunNotFound, RunRecord, RunStore
from msagent.webapp.agent.streaming import TurnEncoder
from msagent.webapp.agent.takeover import OriginStore, SessionOrigin, session_trajectory
from msagent.webapp.volumes.store import VolumeStore, ground_truth_upload

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["agent"], dependencies=[Depends(require_api_key)],
                   responses=ERRORS)
MAX_TURNS = 20
AGENT_WORKERS = 2
SESSION_ID = r"^[A-Za-z0-9._:-]{1,128}$"


@attrs.define(eq=False)
class AgentState:
    runs: RunStore = attrs.field(factory=RunStore)
    policies: PolicyPool = attrs.field(factory=PolicyPool)
    origins: OriginStore = attrs.field(factory=OriginStore)
    executor: ThreadPoolExecutor = attrs.field(
        factory=lambda: ThreadPoolExecutor(AGENT_WORKERS, thread_name_prefix="msagent-agent"))


def install(app: FastAPI) -> None:
    """Add these routes to ``app`` with fresh run/policy stores and agent worker threads."""
    app.state.msagent_agent = AgentState()
    app.include_router(router)


def agent_state(request: Request) -> AgentState:
    return request.app.state.msagent_agent


def volume_store_if_installed(request: Request) -> VolumeStore | None:
    """The web page's volume store, or None on an app without the volume routes."""
    return getattr(request.app.state, "msagent_volumes", None)


@router.get("/plugins", tags=["web page"])
async def plugins(ctx: ServerContext = Depends(context)) -> dict[str, Any]:
    """Installed backbones (``served``: the one this server runs) and policies
    (``needs_ground_truth``: null when it cannot be told without loading the plugin)."""
    served = ctx.engine.segmenter.name
    backbones, policies = await asyncio.to_thread(
        lambda: (backbone_listing(served), policy_listing()))
    segmenter = ctx.engine.segmenter
    return {"backbone": served, "accepts_text": bool(segmenter.accepts_text),
            "can_propose": bool(getattr(segmenter, "can_propose", False)),
            "backbones": backbones, "policies": policies, "max_turns": MAX_TURNS}


@router.post("/agent/run", response_class=StreamingResponse, responses={
    200: {"description": "NDJSON: start, turn…, done | error", "content": {"application/x-ndjson": {}}}})
async def run_agent(
    image_id: str = Form(pattern=r"^[0-9a-f]{64}$", description="a stored image's hash"),
    target: str = Form(min_length=1, max_length=500, description="what to segment"),
    policy: str = Form(min_length=1, max_length=100, description="a registered policy"),
    max_turns: int = Form(5, ge=1, le=MAX_TURNS),
    policy_options: str = Form("", max_length=MAX_CLIENT_TEXT, description=(
        "KEY=VALUE pairs separated by spaces or new lines: only the options the policy lets "
        "API clients set (GET /v1/plugins lists them); the rest are the operator's")),
    ground_truth: UploadFile | None = File(None, description=(
        "optional mask: PNG/TIFF/BMP/.npy (nonzero = foreground), or a label volume when the "
        "image is a slice of volume_id")),
    initial_mask: UploadFile | str | None = File(None, description=(
        "optional prediction to refine (PNG/TIFF/BMP/.npy, the image's size, binary): the run "
        "starts from it (turn 0). Or the word 'proposal' (a plain form field): the run starts "
        "from the served backbone's proposal for `target` (can_propose in GET /v1/plugins)")),
    volume_id: str | None = Form(None, max_length=64),
    plane: Literal["axial", "coronal", "sagittal"] = Form("axial"),
    index: int | None = Form(None, ge=0, description="the slice of volume_id the image is"),
    ctx: ServerContext = Depends(context), state: AgentState = Depends(agent_state),
    volumes: VolumeStore | None = Depends(volume_store_if_installed),
) -> StreamingResponse:
    """Run the agent on a stored image and stream its turns (NDJSON)."""
    image = ctx.engine.images.get(image_id)
    if not target.strip():
        raise InvalidTarget("target must be a description, e.g. 'liver in abdomen CT'")
    from_proposal = check_proposal_request(ctx, initial_mask, target, "target")  # before uploads
    gt = None
    if ground_truth is not None and ground_truth.filename:
        volume = volumes.get(volume_id) if volume_id and volumes is not None else None
        gt = await asyncio.to_thread(
            ground_truth_upload, await read_upload(ground_truth, ctx), ground_truth.filename,
            image.shape[:2], volume=volume, plane=plane, index=index, max_pixels=ctx.config.max_pixels,
            max_voxels=ctx.config.max_voxels)
    initial = None
    if initial_mask is not None and not isinstance(initial_mask, str) and initial_mask.filename:
        data = await read_upload(initial_mask, ctx)
        raw = await asyncio.to_thread(initial_mask_upload, data, ctx.config.max_pixels,
                                      image.shape[:2])  # another size: refused from the header
        initial = await asyncio.to_thread(check_initial_mask, raw, image.shape[:2])  # before the stream
    options = await asyncio.to_thread(run_options, policy, policy_options, ctx.config.policy_options)
    pooled = await asyncio.to_thread(state.policies.get, policy, options)
    if pooled.policy.needs_ground_truth and gt is None:
        raise InvalidInput(f"policy {policy!r} simulates an expert from the ground truth: upload "
                           "a ground-truth mask, or pick a policy that needs none")
    embedding = await ctx.engine.embed(image_id)  # through the shared cache, in the encode pool
    proposal = None
    if from_proposal:  # in the decode pool, before the stream: turn 0 is on the start line
        proposal = await make_proposal(ctx, embedding, target.strip())
    run = _Run(uuid.uuid4().hex, image_id, image, target.strip(), gt, pooled, max_turns, policy,
               initial, proposal)
    return StreamingResponse(_stream(run, ctx, state), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no",
                                      "X-Run-Id": run.id})


@attrs.frozen(eq=False)
class _Run:
    id: str
    image_id: str
    image: np.ndarray
    target: str
    ground_truth: np.ndarray | None
    pooled: PooledPolicy
    max_turns: int
    policy_name: str
    initial_mask: np.ndarray | None = None
    proposal: Proposal | None = None

    @property
    def start(self) -> tuple[Any, str]:
        """What the agent starts from, and its source: the proposal, an upload, or nothing."""
        if self.proposal is not None:
            return self.proposal, self.proposal.source
        return self.initial_mask, "upload"

    def initial_json(self) -> dict[str, Any] | None:
        """The start line's ``initial`` (turn 0): the mask, its IoU/Dice, source and score."""
        gt = self.ground_truth
        if self.proposal is not None:
            mask = self.proposal.mask
            extra = {"source": self.proposal.source,
                     "score": self.proposal.to_dict(self.target)["score"]}
        else:
            mask, extra = self.initial_mask, {"source": "upload"}
        if mask is None:
            return None
        return {"mask": encode_mask(mask), "iou": None if gt is None else metrics.iou(mask, gt),
                "dice": None if gt is None else metrics.dice(mask, gt), **extra}


def _line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload) + "\n").encode()


async def _stream(run: _Run, ctx: ServerContext, state: AgentState):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()
    segmenter = ctx.engine.segmenter
    height, width = run.image.shape[:2]
    gt = run.ground_truth

    def put(kind: str, payload: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))
        except RuntimeError:  # the server is shutting down
            cancel.set()

    def work() -> None:
        encoder = TurnEncoder()
        with run.pooled.lock:
            start, source = run.start
            try:
                trajectory = Agent(run.pooled.policy, segmenter, max_turns=run.max_turns).run(
                    run.image, run.target, gt, case_id=run.id,
                    meta={"run_id": run.id, "image_id": run.image_id},
                    initial_mask=start, initial_source=source,
                    on_step=lambda step: put("turn", encoder.encode(step)), cancel=cancel)
                state.runs.put(RunRecord(run.id, run.image_id, trajectory, gt))  # stopped ones too
                put("done", trajectory)
            except Exception as exc:  # reported on the stream
                put("error", exc)

    yield _line({"type": "start", "run_id": run.id, "image_id": run.image_id, "width": width,
                 "height": height, "backbone": segmenter.name, "policy": run.policy_name,
                 "target": run.target, "max_turns": run.max_turns,
                 "ground_truth": None if gt is None else encode_mask(gt),
                 "initial": run.initial_json(),
                 "proposal": None if run.proposal is None else run.proposal.to_dict(run.target)})
    loop.run_in_executor(state.executor, work)
    try:
        while True:
            kind, payload = await queue.get()
            if kind == "turn":
                yield _line(payload)
            elif kind == "done":
                yield _line(_done(run.id, payload))
                return
            else:
                yield _line(_error(payload))
                return
    finally:
        cancel.set()


def _done(run_id: str, trajectory) -> dict[str, Any]:
    steps = trajectory.executed_steps
    last = steps[-1] if steps else None
    return {"type": "done", "run_id": run_id, "stop_reason": trajectory.stop_reason,
            "turns": trajectory.turns, "steps": len(trajectory.steps),
            "score": None if last is None else last.score, "iou": None if last is None else last.iou,
            "dice": None if last is None else last.dice,
            "area": int(np.count_nonzero(trajectory.final_mask)),
            "usage": {k: v for k, v in trajectory.usage.items() if np.isfinite(v)}}


def _error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, MsAgentError):
        status, code = status_of(exc)
        return {"type": "error", "status": status, "code": code, "detail": str(exc)}
    log.exception("agent run failed", exc_info=exc)
    return {"type": "error", "status": 500, "code": "internal",
            "detail": f"the agent run failed ({type(exc).__name__}); the server log has the "
                      "details"}  # its message may hold server paths: like the middleware's 500


# -- finished runs -----------------------------------------------------------------------------
@router.get("/agent/runs/{run_id}")
async def run_trajectory(run_id: str, state: AgentState = Depends(agent_state)) -> JSONResponse:
    """The run's trajectory (:meth:`msagent.Trajectory.from_dict` reads it back)."""
    record = state.runs.get(run_id)
    body = await asyncio.to_thread(record.trajectory.to_dict)
    return JSONResponse(body, headers=attachment(f"trajectory-{run_id[:8]}.json"))


@router.get("/agent/runs/{run_id}/mask", response_class=Response, responses={
    200: {"description": "PNG (0/255) or run-length code",
          "content": {"image/png": {}, "application/json": {}}}})
async def run_mask(run_id: str, steps: int | None = Query(None, ge=0, description=(
        "the mask after this many steps (default: the final mask)")),
        format: Literal["png", "rle"] = Query("png"),
        state: AgentState = Depends(agent_state)) -> Response:
    record = state.runs.get(run_id)
    count = len(record.trajectory.steps) if steps is None else steps
    mask = record.mask_after(count)
    if mask is None:
        raise Conflict(f"run {run_id!r} has no mask after {count} step(s); pick a later turn")
    if format == "rle":
        return JSONResponse(encode_mask(mask))
    return Response(await asyncio.to_thread(png_bytes, mask), media_type="image/png",
                    headers=attachment(f"mask-{run_id[:8]}-step{count}.png"))


class SeedRequest(BaseModel):
    steps: int = Field(ge=0, description="replay the executed actions among the first `steps` steps")
    session_id: str | None = Field(None, pattern=SESSION_ID, description="default: a random id")
    mask_format: MaskFormat = "rle"


@router.post("/agent/runs/{run_id}/session", response_model=SessionStep, status_code=201)
async def seed_session(run_id: str, body: SeedRequest, ctx: ServerContext = Depends(context),
                       state: AgentState = Depends(agent_state)) -> SessionStep:
    """A session on the run's image with the run's first ``steps`` actions replayed (same
    prompts, same masks), to continue by hand with ``/v1/sessions/{id}/box`` and ``/point``."""
    record = state.runs.get(run_id)
    text = record.trajectory.target if ctx.engine.segmenter.accepts_text else None
    initial = record.trajectory.initial
    session = await open_session(ctx, image=None, image_id=record.image_id,
                                 session_id=body.session_id, prompt_mode="accumulate",
                                 multimask=None, text=text,
                                 initial_mask=None if initial is None else initial.mask)
    for prompt in record.prompts_after(body.steps):
        await run_prompt(ctx, session, prompt, None)
    state.origins.put(session.id, SessionOrigin(run_id, body.steps,
                                                tuple(attrs.evolve(s.prompts, text=None)
                                                      for s in session.history)))
    return session_step(session, ctx.store, ctx.multimask_default, body.mask_format)


@router.get("/agent/sessions/{session_id}/trajectory")
async def session_to_trajectory(session_id: str, target: str = Query("", max_length=500),
                                ctx: ServerContext = Depends(context),
                                state: AgentState = Depends(agent_state)) -> JSONResponse:
    """A session's prompts (its undo stack) as a trajectory JSON; a session seeded from a run
    keeps that run's replies for the replayed steps and its ground truth for IoU/Dice."""
    session = ctx.store.get(session_id)
    origin = state.origins.get(session_id)
    run = None
    if origin is not None:
        try:
            run = state.runs.get(origin.run_id)
        except RunNotFound:
            origin = None
    proposal = session.proposal or {}
    target = target.strip() or (run.trajectory.target if run is not None else "") \
        or proposal.get("target", "")
    if not target:
        raise InvalidTarget("give the target (?target=...) for a session not started from a run")
    start: dict[str, Any] = {}  # where turn 0 came from: the session's proposal, or the run's
    if proposal.get("matched"):
        start = {"initial_source": proposal["source"], "initial_score": proposal["score"]}
    elif run is not None and run.trajectory.initial is not None:
        start = {"initial_source": run.trajectory.initial.source,
                 "initial_score": run.trajectory.initial.score}
    trajectory = await asyncio.to_thread(
        session_trajectory, list(session.history), session.image_size, target, run=run,
        origin=origin, image_id=session.image_id,
        ground_truth=None if run is None else run.ground_truth,
        initial=None if session.initial is None
        else cast(MaskPrediction, session.initial.prediction).mask, **start)
    return JSONResponse(trajectory.to_dict(), headers=attachment(f"trajectory-{session_id[:8]}.json"))
