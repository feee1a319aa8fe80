"""Routes of the web page's volume sessions (:mod:`msagent.volume.session`): upload a volume once,
prompt any slice, propagate through the volume, undo, show each slice's result, export it.

Under ``/v1/volumes/{volume_id}/sessions``: ``POST`` starts one, ``GET``/``DELETE .../{sid}``,
``POST .../{sid}/slices/{index}/prompts`` (a box or a click on that slice), ``GET
.../{sid}/slices/{index}/mask``, ``POST .../{sid}/propagate``, ``POST .../{sid}/undo`` and
``POST .../{sid}/export`` (NIfTI or DICOM SEG of the whole volume). ``install(app)`` adds
them and a :class:`~msagent.volume.session_store.VolumeSessionStore` at
``app.state.msagent_volume_sessions``; the session's errors map to HTTP here (:data:`HTTP`).
Every route needs the API key when the server has one; the backbone is the server's.

The server's bounds apply (:class:`~msagent.server.config.ServerConfig`): sessions belong to the
client that made them (:func:`msagent.server.context.client_id`) with per-client quotas, idle
expiry and a creation rate; slice encodes and decodes run through the engine's pools, timeout
and metrics (:meth:`msagent.server.engine.Engine.work`); a propagation runs in the engine's
volume pool, at most ``max_propagations`` at once, stops at ``propagation_timeout_s``, when its
client disconnects, on an undo, a delete, an eviction or an expiry (between slices), and
reports its progress in the session's ``progress``. Shutdown closes every session (their
spill folders go with them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal, cast

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from msagent.errors import InvalidInput
from msagent.io.wire import png_bytes
from msagent.server.context import ServerContext, client_id, context, require_api_key
from msagent.server.errors import Conflict, ServerError, error_response
from msagent.server.schemas import RLE, Box, PointIn, Strict
from msagent.server.services import ERRORS, attachment
from msagent.server.views import finite
from msagent.types import encode_mask
from msagent.volume.embeddings import SpillBudget
from msagent.volume.session import (
    NothingToDo,
    PropagationCancelled,
    PropagationTimedOut,
    SliceOutOfRange,
    VolumeSession,
    VolumeSessionError,
    VolumeSessionNotFound,
)
from msagent.volume.session_store import (
    TooManyPropagations,
    TooManyVolumeSessions,
    VolumeSessionStore,
)
from msagent.volume.stack import build_stack
from msagent.webapp.volumes.store import (
    EXPORT_FORMATS,
    Plane,
    StoredVolume,
    VolumeStore,
    export_mask,
    volume_store,
)

router = APIRouter(prefix="/v1/volumes/{volume_id}/sessions", tags=["web page"],
                   dependencies=[Depends(require_api_key)], responses=ERRORS)


class BackboneNotServed(ServerError):
    status, code = 422, "backbone_not_served"


class VolumeSessionRequest(Strict):
    target: str = Field(min_length=1, max_length=500, description=(
        "what to segment (the DICOM SEG label; sent to backbones that accept a text prompt)"))
    plane: Plane = "axial"
    window: str | None = Field(None, max_length=64,
                               description="'auto' or empty (the default), a preset, or 'W/L'")
    backbone: str | None = Field(None, max_length=100, description=(
        "the served backbone's name (GET /v1/plugins), to check; the server runs one backbone"))
    propagation: Literal["auto", "native", "generic"] = Field("auto", description=(
        "auto: the backbone's own 3-D memory where it has one (medsam2, sam2), else generic"))


class SlicePrompt(Strict):
    box: Box | None = None
    point: PointIn | None = None


class SliceSummary(BaseModel):
    index: int
    source: Literal["seed", "propagated"]
    area: int = Field(description="foreground pixels")
    score: float | None = Field(description="the backbone's predicted IoU (null for a seed "
                                            "without one)")


class PropagationProgress(BaseModel):
    running: bool = Field(description="whether a propagation is running now")
    done: int = Field(description="slices the running (or last) propagation worked on")
    total: int = Field(description="slices in the plane (a walk may end earlier, where the "
                                   "target ends)")
    outcome: str | None = Field(description=(
        "null while running or before the first; complete, timeout, cancelled (an undo, a "
        "client that disconnected), failed"))
    detail: str | None = Field(description="what happened, for an outcome other than complete")
    seconds: float = Field(description="how long it has run (or ran)")
    stopping: bool = Field(False, description="running, and asked to stop at its next slice")


class VolumeSessionInfo(BaseModel):
    session_id: str
    volume_id: str
    target: str
    plane: Plane
    window: list[float] = Field(description="[width, level] of the slices")
    propagation: Literal["auto", "native", "generic"] = Field(description="as requested")
    method: str = Field(description="the propagator in use: generic or native")
    count: int = Field(description="slices in the plane")
    width: int
    height: int
    seeds: list[int] = Field(description="prompted slices")
    pending: list[int] = Field(description="prompted slices the last propagation did not carry")
    propagated: bool = Field(description="whether a propagation result is shown")
    undo: int = Field(description="undo steps available")
    version: int = Field(description="changes with every prompt, propagation and undo")
    slices: list[SliceSummary] = Field(description="every slice showing a mask")
    encodes: int
    decodes: int
    progress: PropagationProgress = Field(description=(
        "the running or last propagation (GET the session while one runs to follow it)"))


class SliceStep(BaseModel):
    session: VolumeSessionInfo
    index: int
    mask: RLE
    score: float | None
    area: int
    box: Box | None
    points: list[PointIn]


class ExportVolumeRequest(Strict):
    format: Literal["nifti", "dicom-seg"] = "nifti"
    label: str | None = Field(None, min_length=1, max_length=64,
                              description="segment label (DICOM SEG); default: the target")


#: the volume session's refusals as HTTP (status, code, hint added to the message)
HTTP = {VolumeSessionNotFound: (404, "volume_session_not_found",
                                "start one with POST /v1/volumes/{id}/sessions"),
        SliceOutOfRange: (422, "slice_out_of_range", ""),
        NothingToDo: (409, "conflict", ""),
        PropagationTimedOut: (503, "propagation_timeout",
                              "the server's limit is msagent serve --propagation-timeout"),
        PropagationCancelled: (409, "propagation_cancelled", ""),
        TooManyVolumeSessions: (429, "too_many_sessions", ""),
        TooManyPropagations: (429, "too_many_propagations", "")}


async def _session_error(request: Request, exc: VolumeSessionError) -> JSONResponse:
    status, code, hint = next((v for cls, v in HTTP.items() if isinstance(exc, cls)),
                              (400, "bad_request", ""))
    return error_response(status, code, f"{exc}; {hint}" if hint else str(exc))


def install(app: FastAPI) -> None:
    """Add these routes to ``app`` with a fresh volume-session store under the server's bounds;
    its live sessions count in ``/health`` and ``/metrics``, the idle sweeper expires them and
    shutdown closes them."""
    ctx: ServerContext = app.state.msagent
    config = ctx.config
    store = VolumeSessionStore(config.max_volume_sessions,
                               per_owner=config.volume_sessions_per_client,
                               idle_timeout_s=config.idle_timeout_s,
                               max_propagations=config.max_propagations,
                               creations_per_minute=config.volume_sessions_per_minute)
    app.state.msagent_volume_sessions = store
    app.state.msagent_spill_budget = SpillBudget(config.max_spill_bytes)
    ctx.session_counts["volume"] = store.__len__
    ctx.sweeps.append(store.expire)
    ctx.on_shutdown.append(store.close_all)
    app.add_exception_handler(VolumeSessionError, _session_error)
    app.include_router(router)


def session_store(request: Request) -> VolumeSessionStore:
    return request.app.state.msagent_volume_sessions


def info(session: VolumeSession) -> VolumeSessionInfo:
    current = session.state
    height, width = session.image_size
    rows = [SliceSummary(index=i, source=source, area=area, score=finite(score))
            for i, source, area, score in session.summary()]
    return VolumeSessionInfo(
        session_id=session.id, volume_id=session.volume_id, target=session.target,
        plane=session.sliced.plane, window=list(session.sliced.window),
        propagation=session.method, method=session.propagator.method, count=session.count,
        width=width, height=height, seeds=sorted(current.prompted), pending=current.pending,
        propagated=current.results is not None, undo=len(session.history) - 1,
        version=session.version, slices=rows, encodes=session.encodes, decodes=session.decodes,
        progress=PropagationProgress(**session.propagation()))


@router.post("", response_model=VolumeSessionInfo, status_code=201)
async def create(volume_id: str, body: VolumeSessionRequest, request: Request,
                 ctx: ServerContext = Depends(context),
                 volumes: VolumeStore = Depends(volume_store),
                 sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    """Start a volume session: the plane's slices windowed once, no slice encoded yet. It
    belongs to the client that made it: past the client's quota its least recently used idle
    session is closed for it; past the server's total, or too many a minute: 429."""
    stored = volumes.get(volume_id)
    segmenter = ctx.engine.segmenter
    if body.backbone is not None and body.backbone != segmenter.name:
        raise BackboneNotServed(f"this server runs the backbone {segmenter.name!r}, not "
                                f"{body.backbone!r}; serve it with msagent serve --backbone "
                                f"{body.backbone}")
    target = body.target.strip()
    if not target:
        raise InvalidInput("target must be a description, e.g. 'liver in abdomen CT'")
    window = stored.window_for(body.window)
    owner = client_id(request, ctx.config)
    sessions.check_room(owner)  # before the work of windowing the volume
    stack = await asyncio.to_thread(build_stack, stored.volume, plane=body.plane, window=window,
                                    max_voxels=ctx.config.max_voxels)
    config = ctx.config
    session = VolumeSession(stack, segmenter, method=body.propagation, target=target,
                            text=target if segmenter.accepts_text else None,
                            volume_id=stored.id, source=stored, owner=owner,
                            max_in_memory=config.volume_embeddings_in_memory,
                            max_spill_bytes=config.max_spill_bytes // config.max_volume_sessions,
                            spill_budget=request.app.state.msagent_spill_budget,
                            work=ctx.engine.work)
    sessions.put(session)
    return info(session)


@router.get("/{session_id}", response_model=VolumeSessionInfo)
async def get(volume_id: str, session_id: str,
              sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    return info(sessions.get(volume_id, session_id))


@router.delete("/{session_id}", status_code=204, response_class=Response)
async def delete(volume_id: str, session_id: str,
                 sessions: VolumeSessionStore = Depends(session_store)) -> Response:
    """Delete the session; a running propagation stops at its next slice (and answers 404)."""
    sessions.delete(volume_id, session_id)
    return Response(status_code=204)


@router.post("/{session_id}/slices/{index}/prompts", response_model=SliceStep)
async def prompt(volume_id: str, session_id: str, index: int, body: SlicePrompt,
                 ctx: ServerContext = Depends(context),
                 sessions: VolumeSessionStore = Depends(session_store)) -> SliceStep:
    """Add a box (replacing the slice's box) or a click to slice ``index`` and decode there;
    the slice's mask becomes its seed at the next propagation."""
    session = sessions.get(volume_id, session_id)
    session.check_index(index)
    if (body.box is None) == (body.point is None):
        raise InvalidInput('give exactly one of "box" {x1, y1, x2, y2} and "point" {x, y, label}')
    added = body.box.to_bbox() if body.box is not None else cast(PointIn, body.point).to_point()
    async with sessions.using(session):
        state = await asyncio.to_thread(session.slice_state, index)  # encodes on first use
        request = state.request(added)
        prediction = await ctx.engine.decode(state.embedding, request.prompts,
                                             request.prev_logits, None)
        session.add_prompted(index, state.after(added, prediction))
        view = session.slice_view(index)
        rle = await asyncio.to_thread(encode_mask, view.mask)
        return SliceStep(session=info(session), index=index, mask=RLE(**rle),
                         score=finite(view.score), area=int(view.mask.sum()),
                         **_prompt_fields(view.prompts))


@router.get("/{session_id}/slices/{index}/mask", response_class=Response, responses={
    200: {"description": "run-length code (JSON: also the source, score and the slice's "
                         "prompts) or PNG (0/255)",
          "content": {"application/json": {}, "image/png": {}}}})
async def slice_mask(volume_id: str, session_id: str, index: int,
                     format: Literal["rle", "png"] = Query("rle"),
                     sessions: VolumeSessionStore = Depends(session_store)) -> Response:
    """What slice ``index`` shows: its seed (a prompted slice), its propagated mask, or an
    empty mask (source ``none``). Headers ``X-Mask-Source`` and ``X-Mask-Score``."""
    session = sessions.get(volume_id, session_id)
    view = session.slice_view(index)
    headers = {"X-Mask-Source": view.source, "X-Mask-Score": f"{finite(view.score)}"}
    if format == "png":
        return Response(await asyncio.to_thread(png_bytes, view.mask), media_type="image/png",
                        headers=headers)
    rle = await asyncio.to_thread(encode_mask, view.mask)
    prompts = _prompt_fields(view.prompts)
    return JSONResponse({**rle, "index": index, "source": view.source,
                         "score": finite(view.score), "area": int(view.mask.sum()),
                         "box": None if prompts["box"] is None else prompts["box"].model_dump(),
                         "points": [p.model_dump() for p in prompts["points"]],
                         "version": session.version}, headers=headers)


@router.post("/{session_id}/propagate", response_model=VolumeSessionInfo)
async def propagate(volume_id: str, session_id: str, request: Request,
                    ctx: ServerContext = Depends(context),
                    sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    """Carry the prompted slices through the volume (the first time encodes every slice it
    reaches; later, only slices whose inputs changed are decoded again). At most
    ``--max-propagations`` run at once (429 past it). It stops between slices after
    ``--propagation-timeout`` seconds (503 ``propagation_timeout``), when the client
    disconnects, on an undo (409 ``propagation_cancelled``) and when the session is deleted,
    evicted or expires (404): each time the session stays as it was before it. ``GET`` the
    session meanwhile for its ``progress``."""
    session = sessions.get(volume_id, session_id)
    async with sessions.using(session):
        with sessions.propagation_slot():
            deadline = time.monotonic() + ctx.config.propagation_timeout_s
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(ctx.engine.volume_pool,
                                          lambda: session.propagate(deadline=deadline))
            await _until_done(future, session, request)
        return info(session)


async def _until_done(future: "asyncio.Future[Any]", session: VolumeSession,
                      request: Request, poll_s: float = 0.2) -> Any:
    """Wait for a propagation; cancel it (between slices) when the client disconnects or this
    request is cancelled (shutdown), and wait for it to stop either way: the session's lock
    stays held until its thread is done with the session."""
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=poll_s)
            if done:
                return future.result()
            if await request.is_disconnected():
                session.cancel("the client disconnected")
    except asyncio.CancelledError:
        session.cancel("the request was cancelled")
        with contextlib.suppress(BaseException):
            await asyncio.shield(future)
        raise


@router.post("/{session_id}/undo", response_model=VolumeSessionInfo)
async def undo(volume_id: str, session_id: str,
               sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    """Undo the last prompt or propagation (409 when there is none). During a propagation
    it cancels that propagation instead (the step in flight, stopped at its next slice): the
    session stays as it was before it, and nothing else is undone."""
    session = sessions.get(volume_id, session_id)
    cancelled = session.cancel("undone")
    async with sessions.using(session):
        if not (cancelled and session.propagation()["outcome"] == "cancelled"):
            await asyncio.to_thread(session.undo)
        return info(session)


@router.post("/{session_id}/export", response_class=Response,
             responses={200: {"description": "the mask volume", "content": {
                 media: {} for media, _ in EXPORT_FORMATS.values()}}})
async def export(volume_id: str, session_id: str, body: ExportVolumeRequest,
                 sessions: VolumeSessionStore = Depends(session_store)) -> Response:
    """The whole result (every slice as shown) as a mask volume aligned with the input: NIfTI
    (same shape, affine and header) or, for DICOM input, a DICOM SEG referencing the series."""
    session = sessions.get(volume_id, session_id)
    async with sessions.using(session):
        data, media, name = await asyncio.to_thread(_export, session, body)
    return Response(data, media_type=media,
                    headers=attachment(name))


def _export(session: VolumeSession, body: ExportVolumeRequest) -> tuple[bytes, str, str]:
    masks = session.masks()
    if not masks.any():
        raise Conflict("the result is empty on every slice: prompt a slice with the target "
                       "(and propagate) first")
    voxels = session.sliced.to_voxels(masks)
    label = body.label or session.target[:64]  # DICOM SEG labels are at most 64 characters
    return export_mask(cast(StoredVolume, session.source), voxels, body.format, label)


def _prompt_fields(prompts) -> dict:
    if prompts is None:
        return {"box": None, "points": []}
    return {"box": None if prompts.box is None else Box.of(prompts.box),
            "points": [PointIn.of(p) for p in prompts.points]}
