"""Routes of the web page's volume sessions (:mod:`msagent.volume.session`): upload a volume once,
prompt any slice, propagate through the volume, undo, show each slice's result, export it.

Under ``/v1/volumes/{volume_id}/sessions``: ``POST`` starts one, ``GET``/``DELETE .../{sid}``,
``POST .../{sid}/slices/{index}/prompts`` (a box or a click on that slice), ``GET
.../{sid}/slices/{index}/mask``, ``POST .../{sid}/propagate``, ``POST .../{sid}/undo`` and
``POST .../{sid}/export`` (NIfTI or DICOM SEG of the whole volume). ``install(app)`` adds
them and a :class:`~msagent.volume.session.VolumeSessionStore` at
``app.state.msagent_volume_sessions``; the session's errors map to HTTP here (:data:`HTTP`).
Every route needs the API key when the server has one; the backbone is the server's.
"""

from __future__ import annotations

import asyncio
from typing import Literal, cast

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from msagent.errors import InvalidInput
from msagent.io.wire import png_bytes
from msagent.server.context import ServerContext, context, require_api_key
from msagent.server.errors import Conflict, ServerError, error_response
from msagent.server.schemas import RLE, Box, PointIn, Strict
from msagent.server.services import ERRORS
from msagent.server.views import finite
from msagent.types import encode_mask
from msagent.volume.session import (
    NothingToDo,
    SliceOutOfRange,
    VolumeSession,
    VolumeSessionError,
    VolumeSessionNotFound,
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
        NothingToDo: (409, "conflict", "")}


async def _session_error(request: Request, exc: VolumeSessionError) -> JSONResponse:
    status, code, hint = next((v for cls, v in HTTP.items() if isinstance(exc, cls)),
                              (400, "bad_request", ""))
    return error_response(status, code, f"{exc}; {hint}" if hint else str(exc))


def install(app: FastAPI) -> None:
    """Add these routes to ``app`` with a fresh volume-session store."""
    app.state.msagent_volume_sessions = VolumeSessionStore()
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
        version=session.version, slices=rows, encodes=session.encodes, decodes=session.decodes)


@router.post("", response_model=VolumeSessionInfo, status_code=201)
async def create(volume_id: str, body: VolumeSessionRequest, ctx: ServerContext = Depends(context),
                 volumes: VolumeStore = Depends(volume_store),
                 sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    """Start a volume session: the plane's slices windowed once, no slice encoded yet."""
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
    stack = await asyncio.to_thread(build_stack, stored.volume, plane=body.plane, window=window,
                                    max_voxels=ctx.config.max_voxels)
    session = VolumeSession(stack, segmenter, method=body.propagation, target=target,
                            text=target if segmenter.accepts_text else None,
                            volume_id=stored.id, source=stored)
    sessions.put(session)
    return info(session)


@router.get("/{session_id}", response_model=VolumeSessionInfo)
async def get(volume_id: str, session_id: str,
              sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    return info(sessions.get(volume_id, session_id))


@router.delete("/{session_id}", status_code=204, response_class=Response)
async def delete(volume_id: str, session_id: str,
                 sessions: VolumeSessionStore = Depends(session_store)) -> Response:
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
async def propagate(volume_id: str, session_id: str,
                    sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    """Carry the prompted slices through the volume (the first time encodes every slice it
    reaches; later, only slices whose inputs changed are decoded again). Runs in a worker
    thread and is not bounded by the request timeout."""
    session = sessions.get(volume_id, session_id)
    async with sessions.using(session):
        await asyncio.to_thread(session.propagate)
        return info(session)


@router.post("/{session_id}/undo", response_model=VolumeSessionInfo)
async def undo(volume_id: str, session_id: str,
               sessions: VolumeSessionStore = Depends(session_store)) -> VolumeSessionInfo:
    """Undo the last prompt or propagation (409 when there is none)."""
    session = sessions.get(volume_id, session_id)
    async with sessions.using(session):
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
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


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
