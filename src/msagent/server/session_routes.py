"""v1 session routes: create, add box / point, undo, reset, mask, delete."""

from __future__ import annotations

import asyncio
import uuid
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from msagent.agent import episode
from msagent.agent.refine import check_initial_mask, initial_state
from msagent.errors import InvalidImage, InvalidInput
from msagent.io.wire import decode_upload, load_npy_bytes, png_bytes
from msagent.server.context import ServerContext, context, require_api_key
from msagent.server.errors import Conflict
from msagent.server.routes import ERRORS, read_upload
from msagent.server.schemas import (
    AddBox,
    AddPoint,
    Deleted,
    MaskFormat,
    SessionInfo,
    SessionList,
    SessionStep,
)
from msagent.server.sessions import Session
from msagent.server.views import finite, session_info, session_step
from msagent.types import BBox, Point, encode_mask

router = APIRouter(prefix="/v1/sessions", tags=["sessions"],
                   dependencies=[Depends(require_api_key)], responses=ERRORS)
MASK_RESPONSES = {200: {"description": "the mask as PNG (0/255) or as msagent's run-length code",
                        "content": {"image/png": {}, "application/json": {}}}}


async def open_session(ctx: ServerContext, *, image: UploadFile | None, image_id: str | None,
                       session_id: str | None, prompt_mode: str, multimask: bool | None,
                       text: str | None = None, replace: bool = False,
                       initial_mask: np.ndarray | None = None) -> Session:
    """Create a session from an upload or a stored image's hash (encodes the image);
    ``initial_mask`` (checked, H×W bool) is a prediction to refine: the session's first state."""
    if (image is None) == (image_id is None):
        raise InvalidInput("give exactly one of image (a file upload) and image_id (the hash of "
                           "an uploaded image)")
    session_id = session_id or uuid.uuid4().hex
    ctx.engine.check_text(text)
    ctx.store.check_room(session_id, replace=replace)
    if image is not None:
        image_id, _, _ = await ctx.engine.add_image(await read_upload(image, ctx))
    embedding = await ctx.engine.embed(image_id)
    session = Session(id=session_id, image_id=image_id, embedding=embedding,
                      prompt_mode=prompt_mode, multimask=multimask, text=text)
    if initial_mask is not None:
        mask = await asyncio.to_thread(check_initial_mask, initial_mask, embedding.image_size)
        if mask is not None:
            prediction, prompts = await asyncio.to_thread(initial_state, ctx.engine.segmenter, mask)
            session.initial = episode.start(embedding, prompt_mode=prompt_mode, text=text,
                                            initial=prediction, prompts=prompts)
    return ctx.store.add(session, replace=replace)


def initial_mask_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded initial mask (PNG/TIFF/BMP or .npy, header-checked) as an array."""
    from msagent.errors import InvalidMask

    if not data:
        raise InvalidMask("the initial_mask upload is empty")
    try:
        if data.startswith(b"\x93NUMPY"):
            return load_npy_bytes(data, max_pixels)
        return decode_upload(data, max_pixels=max_pixels)[:, :, 0]
    except InvalidImage as exc:
        raise InvalidMask(f"initial_mask: {exc}") from None


async def run_prompt(ctx: ServerContext, session: Session, prompt: BBox | Point,
                     multimask: bool | None) -> None:
    """Decode ``prompt`` on top of the session's state and push the new state."""
    async with session.lock:
        state = session.state
        request = state.request(prompt)  # the episode core's rule: prompts, previous logits
        pred = await ctx.engine.decode(
            session.embedding, request.prompts, request.prev_logits,
            session.multimask if multimask is None else multimask)
        session.push(state.after(prompt, pred))


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
    initial_mask: UploadFile | None = File(None, description=(
        "a prediction to refine (PNG/TIFF/BMP/.npy, the image's size, binary): the session "
        "starts from it; undo and reset go back to it")),
    ctx: ServerContext = Depends(context),
) -> SessionInfo:
    """Start a session on an image (uploaded now, or by the hash of an earlier upload),
    optionally from an existing mask to refine."""
    mask = None
    if initial_mask is not None and initial_mask.filename:
        data = await read_upload(initial_mask, ctx)
        mask = await asyncio.to_thread(initial_mask_upload, data, ctx.config.max_pixels)
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

