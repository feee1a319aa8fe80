"""Upstream MedSAM-Agent's endpoint names and form fields, so its clients work unchanged.

``/session/create``, ``/session/add_click``, ``/session/add_bbox``, ``/session/segment``,
``/session/{id}/status``, ``DELETE /session/{id}``, ``/sessions``, ``/predict`` and
``/predict_with_state``, with the same multipart form fields and response keys. Sessions made
here follow upstream's semantics: each call decodes only its own prompt plus the previous
logits (``prompt_mode="latest"``). Masks are base64 PNGs (0/255); logits float32 base64.

As upstream's server, these routes accept boxes and clicks outside the image: coordinates are
clamped into it (``x`` to ``[0, width - 1]``, ``y`` to ``[0, height - 1]``) instead of the
422 that msagent's own ``/v1`` routes answer, so that upstream's RL tools, which send
``int(v * size / 1000)`` unchecked, always get a mask. ``clicks_history`` and
``total_clicks`` are upstream's: one entry per ``add_click`` and per ``add_bbox`` (as sent,
before clamping), none for ``/session/segment``; ``round_number`` counts all three.
"""

from __future__ import annotations

import json
import math
import time
import weakref
from typing import Any

import attrs
import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import BaseModel

from msagent.errors import InvalidInput
from msagent.io.wire import mask_png_b64, pack_array, unpack_array
from msagent.server.context import ServerContext, context, require_api_key
from msagent.server.services import ERRORS, open_session, read_upload, run_prompt
from msagent.server.sessions import Session
from msagent.types import BBox, MaskPrediction, Point, Prompts

router = APIRouter(tags=["upstream compatibility"], dependencies=[Depends(require_api_key)],
                   responses=ERRORS)


class CompatCreated(BaseModel):
    session_id: str
    message: str
    image_size: list[int]  # [width, height]


class CompatInteractive(BaseModel):
    session_id: str
    masks: list[str]
    category_pred: list[Any] = []
    round_number: int
    total_clicks: int
    message: str


class CompatPredict(BaseModel):
    masks: list[str]
    category_pred: list[Any] = []
    message: str
    logits: str | None = None
    logits_shape: list[int] | None = None


class CompatStatus(BaseModel):
    session_id: str
    round_number: int
    total_clicks: int
    clicks_history: list[Any]
    has_mask: bool
    created_at: str
    last_accessed: str
    image_size: list[int]


class CompatDeleted(BaseModel):
    session_id: str
    message: str
    remaining_sessions: int


class CompatSessions(BaseModel):
    total_sessions: int
    sessions: list[dict[str, Any]]


def parse_json(value: str | None, name: str) -> Any:
    if value is None or value.strip() in ("", "null"):
        return None
    if len(value) > 100_000:
        raise InvalidInput(f"{name} is {len(value):,} characters long; send at most 100,000")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{name} must be JSON, e.g. [10, 20, 110, 120]: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # nested too deep; an integer too long
        raise InvalidInput(f"{name} must be a flat JSON list of numbers ({type(exc).__name__})") from None


def _ints(values: Any, name: str) -> list[int]:
    flat = np.asarray(values, dtype=object).ravel().tolist() if isinstance(values, list) else None
    if not flat or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) and abs(v) < 2**31 for v in flat):
        raise InvalidInput(f"{name} must be a JSON list of finite numbers, got {repr(values)[:200]}")
    return [int(round(v)) for v in flat]


def parse_prompts(point_coords: str | None, point_labels: str | None, bbox: str | None) -> Prompts:
    """Upstream's JSON form fields → Prompts (pixel XY, floats rounded)."""
    box = None
    if (raw_box := parse_json(bbox, "bbox")) is not None:
        coords = _ints(raw_box, "bbox")
        if len(coords) != 4:
            raise InvalidInput(f"bbox must be [x1, y1, x2, y2], got {repr(raw_box)[:200]}")
        box = BBox.ordered(*coords)
    points: tuple[Point, ...] = ()
    if (raw_points := parse_json(point_coords, "point_coords")) is not None:
        coords = _ints(raw_points, "point_coords")
        if len(coords) % 2:
            raise InvalidInput(f"point_coords must be [[x, y], ...], got {repr(raw_points)[:200]}")
        raw_labels = parse_json(point_labels, "point_labels")
        labels = [1] * (len(coords) // 2) if raw_labels is None else _ints(raw_labels, "point_labels")
        if len(labels) != len(coords) // 2:
            raise InvalidInput(f"point_labels has {len(labels)} labels for {len(coords) // 2} points")
        points = tuple(Point(x, y, positive=label == 1)
                       for (x, y), label in zip(zip(coords[::2], coords[1::2]), labels))
    return Prompts(box=box, points=points)


def clamp_prompts(prompts: Prompts, image_size: tuple[int, int]) -> Prompts:
    """``prompts`` with every coordinate clamped into an image of (height, width)."""
    box = None if prompts.box is None else clamp_box(prompts.box, image_size)
    return Prompts(box=box, points=tuple(clamp_point(p, image_size) for p in prompts.points))


def clamp_point(point: Point, image_size: tuple[int, int]) -> Point:
    height, width = image_size
    return Point(min(max(point.x, 0), width - 1), min(max(point.y, 0), height - 1), point.positive)


def clamp_box(box: BBox, image_size: tuple[int, int]) -> BBox:
    height, width = image_size
    x1, x2 = (min(max(v, 0), width - 1) for v in (box.x1, box.x2))
    y1, y2 = (min(max(v, 0), height - 1) for v in (box.y1, box.y2))
    return BBox.ordered(x1, y1, x2, y2)


# Upstream's per-session ``clicks`` list (its status route returns it), kept beside the
# session rather than in it: it is a compatibility record, not episode state.
_CLICKS: weakref.WeakKeyDictionary[Session, list[Any]] = weakref.WeakKeyDictionary()


def _record(session: Session, entry: Any) -> None:
    _CLICKS.setdefault(session, []).append(entry)


def _clicks(session: Session) -> list[Any]:
    return _CLICKS.get(session, [])


def _interactive(session: Session, message: str) -> CompatInteractive:
    pred = session.state.prediction
    return CompatInteractive(session_id=session.id, masks=[] if pred is None else [mask_png_b64(pred.mask)],
                             round_number=session.actions, total_clicks=len(_clicks(session)),
                             message=message)


@router.post("/session/create", response_model=CompatCreated)
async def create(image: UploadFile = File(...), session_id: str | None = Form(None),
                 ctx: ServerContext = Depends(context)) -> CompatCreated:
    session = await open_session(ctx, image=image, image_id=None, session_id=session_id or None,
                                 prompt_mode="latest", multimask=None, replace=True)
    height, width = session.image_size
    return CompatCreated(session_id=session.id, message="Session created successfully",
                         image_size=[width, height])


@router.post("/session/add_click", response_model=CompatInteractive)
async def add_click(session_id: str = Form(...), point_x: int = Form(...), point_y: int = Form(...),
                    is_positive: bool = Form(True), multimask_output: bool = Form(False),
                    ctx: ServerContext = Depends(context)) -> CompatInteractive:
    session = ctx.store.get(session_id)
    point = Point(point_x, point_y, positive=is_positive)
    await run_prompt(ctx, session, clamp_point(point, session.image_size), multimask_output)
    _record(session, [point_x, point_y, point.label])
    return _interactive(session, f"Segmentation round {session.actions} completed")


@router.post("/session/add_bbox", response_model=CompatInteractive)
async def add_bbox(session_id: str = Form(...), bbox: str = Form(...),
                   multimask_output: bool = Form(False),
                   ctx: ServerContext = Depends(context)) -> CompatInteractive:
    session = ctx.store.get(session_id)
    prompts = parse_prompts(None, None, bbox)
    if prompts.box is None:
        raise InvalidInput("bbox must be [x1, y1, x2, y2]")
    await run_prompt(ctx, session, clamp_box(prompts.box, session.image_size), multimask_output)
    _record(session, f"bbox:{list(prompts.box.as_tuple())}")
    return _interactive(session, f"Segmentation round {session.actions} completed (bbox initialization)")


@router.post("/session/segment", response_model=CompatInteractive)
async def segment(session_id: str = Form(...), point_coords: str | None = Form(None),
                  point_labels: str | None = Form(None), bbox: str | None = Form(None),
                  use_previous_mask: bool = Form(True), multimask_output: bool = Form(False),
                  ctx: ServerContext = Depends(context)) -> CompatInteractive:
    session = ctx.store.get(session_id)
    prompts = clamp_prompts(parse_prompts(point_coords, point_labels, bbox), session.image_size)
    async with session.lock:
        prev = session.state.prediction if use_previous_mask else None
        pred = await ctx.engine.decode(session.embedding, prompts,
                                       None if prev is None else prev.low_res_logits, multimask_output)
        # upstream's /session/segment: a whole prompt set at once, not an episode step
        session.push(attrs.evolve(session.state, prompts=prompts, prediction=pred, added=None))
    return _interactive(session, f"Segmentation round {session.actions} completed")


@router.get("/session/{session_id}/status", response_model=CompatStatus)
async def status(session_id: str, ctx: ServerContext = Depends(context)) -> CompatStatus:
    session = ctx.store.get(session_id)
    height, width = session.image_size
    history = list(_clicks(session))
    now = time.time()
    last = now - ctx.store.idle_seconds(session)
    return CompatStatus(session_id=session.id, round_number=session.actions,
                        total_clicks=len(history), clicks_history=history,
                        has_mask=session.state.prediction is not None,
                        created_at=_iso(session.created_at), last_accessed=_iso(last),
                        image_size=[width, height])


@router.delete("/session/{session_id}", response_model=CompatDeleted)
async def delete(session_id: str, ctx: ServerContext = Depends(context)) -> CompatDeleted:
    ctx.store.delete(session_id)
    return CompatDeleted(session_id=session_id, message="Session deleted",
                         remaining_sessions=len(ctx.store))


@router.get("/sessions", response_model=CompatSessions)
async def sessions(ctx: ServerContext = Depends(context)) -> CompatSessions:
    now = time.time()
    listed = [{"session_id": s.id, "round_number": s.actions, "total_clicks": len(_clicks(s)),
               "created_at": _iso(s.created_at),
               "last_accessed": _iso(now - ctx.store.idle_seconds(s))} for s in ctx.store.list()]
    return CompatSessions(total_sessions=len(listed), sessions=listed)


def parse_text(text: str | None) -> str | None:
    """Upstream's ``text`` field: a JSON list of target names (the first is used) or a string."""
    value = parse_json(text, "text") if text and text.lstrip().startswith("[") else text
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidInput(f"text must be a target name or a JSON list of them, got {text!r}")
    return None if value is None else value.strip()[:500]


async def _one_shot(ctx: ServerContext, image: UploadFile, prompts: Prompts,
                    prev: np.ndarray | None, multimask: bool, text: str | None) -> MaskPrediction:
    target = parse_text(text)
    key, _, _ = await ctx.engine.add_image(await read_upload(image, ctx))
    embedding = await ctx.engine.embed(key)
    prompts = clamp_prompts(prompts, embedding.image_size)
    return await ctx.engine.decode(embedding, prompts, prev, multimask, target)


@router.post("/predict", response_model=CompatPredict)
async def predict(image: UploadFile = File(...), point_coords: str | None = Form(None),
                  point_labels: str | None = Form(None), bbox: str | None = Form(None),
                  text: str | None = Form(None), multimask_output: bool = Form(False),
                  ctx: ServerContext = Depends(context)) -> CompatPredict:
    prompts = parse_prompts(point_coords, point_labels, bbox)
    pred = await _one_shot(ctx, image, prompts, None, multimask_output, text)
    return CompatPredict(masks=[mask_png_b64(pred.mask)], message="Prediction completed")


@router.post("/predict_with_state", response_model=CompatPredict)
async def predict_with_state(
    image: UploadFile = File(...), previous_logits: str = Form(...),
    previous_logits_shape: str = Form("[1, 256, 256]"), point_coords: str | None = Form(None),
    point_labels: str | None = Form(None), bbox: str | None = Form(None),
    text: str | None = Form(None), multimask_output: bool = Form(False),
    ctx: ServerContext = Depends(context),
) -> CompatPredict:
    prompts = parse_prompts(point_coords, point_labels, bbox)
    shape = _ints(parse_json(previous_logits_shape, "previous_logits_shape") or [], "previous_logits_shape")
    prev = unpack_array({"dtype": "float32", "shape": shape, "data": previous_logits}, "previous_logits")
    pred = await _one_shot(ctx, image, prompts, prev, multimask_output, text)
    packed = pack_array(pred.low_res_logits[None], "float32")
    return CompatPredict(masks=[mask_png_b64(pred.mask)], message="Prediction completed",
                         logits=packed["data"], logits_shape=packed["shape"])


def _iso(unix: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(unix).isoformat()
