"""v1 session routes: create, add box / point, undo, reset, mask, delete."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from msagent.io.wire import png_bytes
from msagent.server.context import ServerContext, context, require_api_key
from msagent.server.errors import Conflict
from msagent.server.schemas import (
    AddBox,
    AddPoint,
    Deleted,
    MaskFormat,
    SessionInfo,
    SessionList,
    SessionStep,
)
from msagent.server.services import ERRORS, open_session, read_upload, run_prompt
from msagent.server.views import finite, session_info, session_step
from msagent.types import encode_mask

router = APIRouter(prefix="/v1/sessions", tags=["sessions"],
                   dependencies=[Depends(require_api_key)], responses=ERRORS)
MASK_RESPONSES = {200: {"description": "the mask as PNG (0/255) or as msagent's run-length code",
                        "content": {"image/png": {}, "application/json": {}}}}


@router.post("", response_model=SessionInfo, status_code=201)
async def create_session(
    image: UploadFile | None = File(None, description="PNG, JPEG, TIFF, BMP or .npy"),
    image_id: str | None = Form(None, pattern=r"^[0-9a-f]{64}$",
                                description="hash of an image uploaded before"),
    session_id: str | None = Form(None, pattern=r"^[A-Za-z0-9._:-]{1,128}$",
                                  description="default: a random id"),
    prompt_mode: Literal["accumulate", "latest"] = Form("accumulate"),
    multimask: bool | None = Form(None, description="default: the backbone's"),
    text: str | None = Form(None, min_length=1, max_length=500,
                            description="the target, for backbones that accept a text prompt"),
    initial_mask: UploadFile | str | None = File(None, description=(
        "a prediction to refine (PNG/TIFF/BMP/.npy, the image's size, binary): the session "
        "starts from it; undo and reset go back to it. Or the word 'proposal' (a plain form "
        "field): the session starts from the backbone's proposal for `text` (a backbone "
        "with can_propose in /health); when nothing matches it starts empty and `proposal` "
        "in the response says so")),
    ctx: ServerContext = Depends(context),
) -> SessionInfo:
    """Start a session on an image (uploaded now, or by the hash of an earlier upload),
    optionally from an existing mask to refine or from the backbone's proposal for ``text``."""
    mask: bytes | str | None = None
    if isinstance(initial_mask, str):
        mask = initial_mask  # "proposal" (open_session refuses any other word)
    elif initial_mask is not None and initial_mask.filename:
        mask = await read_upload(initial_mask, ctx)  # decoded once the image's size is known
    session = await open_session(ctx, image=image, image_id=image_id, session_id=session_id,
                                 prompt_mode=prompt_mode, multimask=multimask, text=text,
                                 initial_mask=mask)
    return session_info(session, ctx.store, ctx.multimask_default)


@router.get("", response_model=SessionList)
async def list_sessions(ctx: ServerContext = Depends(context)) -> SessionList:
    sessions = [session_info(s, ctx.store, ctx.multimask_default) for s in ctx.store.list()]
    return SessionList(total=len(sessions), sessions=sessions)


@router.get("/{session_id}", response_model=SessionInfo)
async def get_session(session_id: str, ctx: ServerContext = Depends(context)) -> SessionInfo:
    return session_info(ctx.store.get(session_id), ctx.store, ctx.multimask_default)


@router.delete("/{session_id}", response_model=Deleted)
async def delete_session(session_id: str, ctx: ServerContext = Depends(context)) -> Deleted:
    ctx.store.delete(session_id)
    return Deleted(session_id=session_id, remaining_sessions=len(ctx.store))


@router.post("/{session_id}/box", response_model=SessionStep)
async def add_box(session_id: str, body: AddBox, ctx: ServerContext = Depends(context)) -> SessionStep:
    """Add (or replace) the box and decode; returns the new state and mask."""
    session = ctx.store.get(session_id)
    await run_prompt(ctx, session, body.to_bbox(), body.multimask)
    return session_step(session, ctx.store, ctx.multimask_default, body.mask_format)


@router.post("/{session_id}/point", response_model=SessionStep)
async def add_point(session_id: str, body: AddPoint,
                    ctx: ServerContext = Depends(context)) -> SessionStep:
    """Add a click (label 1 foreground, 0 background) and decode."""
    session = ctx.store.get(session_id)
    await run_prompt(ctx, session, body.to_point(), body.multimask)
    return session_step(session, ctx.store, ctx.multimask_default, body.mask_format)


@router.post("/{session_id}/undo", response_model=SessionStep)
async def undo(session_id: str, mask_format: MaskFormat = Query("rle"),
               ctx: ServerContext = Depends(context)) -> SessionStep:
    """Drop the last prompt's state (409 when there is none)."""
    session = ctx.store.get(session_id)
    async with session.lock:
        session.undo()
    return session_step(session, ctx.store, ctx.multimask_default, mask_format)


@router.post("/{session_id}/reset", response_model=SessionStep)
async def reset(session_id: str, ctx: ServerContext = Depends(context)) -> SessionStep:
    """Forget all prompts and the mask (the image stays encoded)."""
    session = ctx.store.get(session_id)
    async with session.lock:
        session.reset()
    return session_step(session, ctx.store, ctx.multimask_default, "none")


@router.get("/{session_id}/mask", responses=MASK_RESPONSES, response_class=Response)
async def get_mask(session_id: str, format: Literal["png", "rle"] = Query("png"),
                   ctx: ServerContext = Depends(context)) -> Response:
    """The current mask: PNG (0 background, 255 foreground) or run-length code; 409 before the
    first prompt. The score is in the ``X-Mask-Score`` header."""
    session = ctx.store.get(session_id)
    pred = session.state.prediction
    if pred is None:
        raise Conflict(f"session {session_id!r} has no mask yet; add a box or a point first")
    headers = {"X-Mask-Score": f"{float(pred.score):.6g}"}
    if format == "rle":  # encoding a large mask takes seconds: off the event loop
        rle = await asyncio.to_thread(encode_mask, pred.mask)
        return JSONResponse({**rle, "score": finite(pred.score)}, headers=headers)
    return Response(await asyncio.to_thread(png_bytes, pred.mask), media_type="image/png",
                    headers=headers)

