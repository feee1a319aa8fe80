"""v1 routes: health, metrics, images and the stateless predict endpoints."""

from __future__ import annotations

import datetime
import time
from typing import Any

from fastapi import APIRouter, Depends, File, Query, UploadFile

from msagent._version import __version__
from msagent.backbones.segmenter import check_proposal_text
from msagent.errors import InvalidInput
from msagent.io.wire import decode_b64, unpack_array
from msagent.server.context import ServerContext, context, require_api_key
from msagent.server.schemas import (
    Health,
    ImageInfo,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    ProposeRequest,
    ProposeResponse,
)
from msagent.server.services import ERRORS, read_upload
from msagent.server.views import prediction

public = APIRouter(tags=["server"])
router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERRORS)


@public.get("/health", response_model=Health)
async def health(ctx: ServerContext = Depends(context)) -> Health:
    """Liveness and what this server runs (open without an API key)."""
    segmenter = ctx.engine.segmenter
    volume = sum(count() for count in ctx.session_counts.values())
    sessions = len(ctx.store) + volume
    return Health(status="ok", backbone=segmenter.name or type(segmenter).__name__,
                  multimask_default=ctx.multimask_default,
                  accepts_text=bool(segmenter.accepts_text),
                  can_propose=bool(getattr(segmenter, "can_propose", False)),
                  version=__version__, sessions=sessions,
                  volume_sessions=volume,
                  uptime_s=round(time.time() - ctx.started, 3), model_type=segmenter.name or "",
                  device=str(getattr(segmenter, "device", "unknown")), active_sessions=sessions,
                  timestamp=datetime.datetime.now(datetime.UTC).isoformat())


@public.get("/metrics", dependencies=[Depends(require_api_key)], responses=ERRORS)
async def metrics(ctx: ServerContext = Depends(context)) -> dict[str, Any]:
    """Sessions, embedding-cache hits and misses, encode/decode latency, batch sizes."""
    cache = ctx.engine.segmenter.cache_info()
    store = ctx.store
    return {
        "sessions": {"active": len(store), "created": store.created, "deleted": store.deleted,
                     "expired": store.expired, "max": store.max_sessions,
                     **{f"{kind}_active": count() for kind, count in ctx.session_counts.items()}},
        "cache": {"hits": cache.hits, "misses": cache.misses, "size": cache.size,
                  "maxsize": cache.maxsize},
        "images": {"stored": len(ctx.engine.images), "max": ctx.config.max_images},
        "batching": {"enabled": ctx.engine.batcher.batching,
                     "window_ms": ctx.engine.batcher.window * 1000, "max_batch": ctx.config.max_batch},
        **ctx.metrics.snapshot(),
    }


@router.post("/images", response_model=ImageInfo)
async def upload_image(file: UploadFile = File(description="PNG, JPEG, TIFF, BMP or .npy"),
                       encode: bool = Query(False, description="also run the image encoder now"),
                       ctx: ServerContext = Depends(context)) -> ImageInfo:
    """Store an image by its content hash (the id to use in sessions and predict)."""
    key, image, created = await ctx.engine.add_image(await read_upload(file, ctx))
    if encode:
        await ctx.engine.embed(key)
    return ImageInfo(image_id=key, width=image.shape[1], height=image.shape[0], created=created)


@router.get("/images/{image_id}", response_model=ImageInfo)
async def image_info(image_id: str, ctx: ServerContext = Depends(context)) -> ImageInfo:
    """Whether the server holds an image (404 if not: upload it)."""
    image = ctx.engine.images.get(image_id)
    return ImageInfo(image_id=image_id, width=image.shape[1], height=image.shape[0], created=False)


@router.post("/images/{image_id}/encode", response_model=ImageInfo)
async def encode_image(image_id: str, ctx: ServerContext = Depends(context)) -> ImageInfo:
    """Run (or reuse, through the shared cache) the image encoder on a stored image."""
    image = ctx.engine.images.get(image_id)
    await ctx.engine.embed(image_id)
    return ImageInfo(image_id=image_id, width=image.shape[1], height=image.shape[0], created=False)


async def resolve_image(request: PredictRequest, ctx: ServerContext) -> str:
    if (request.image_id is None) == (request.image_b64 is None):
        raise InvalidInput("give exactly one of image_id (an uploaded image's hash) and "
                           "image_b64 (base64 image bytes)")
    if request.image_id is not None:
        return request.image_id
    key, _, _ = await ctx.engine.add_image(decode_b64(request.image_b64, "image_b64"))
    return key


@router.post("/predict", response_model=PredictResponse)
async def predict(request: PredictRequest, ctx: ServerContext = Depends(context)) -> PredictResponse:
    """One stateless decode: image + prompts (+ the previous logits) → mask, score, logits."""
    ctx.engine.check_text(request.text)
    key = await resolve_image(request, ctx)
    prompts = request.to_prompts()
    ctx.engine.check(prompts, ctx.engine.images.get(key).shape[:2], request.text)  # before encoding
    prev = None if request.prev_logits is None else unpack_array(request.prev_logits.model_dump())
    embedding = await ctx.engine.embed(key)
    pred = await ctx.engine.decode(embedding, prompts, prev, request.multimask, request.text)
    height, width = embedding.image_size
    out = prediction(pred, request.mask_format, request.return_logits, request.logits_dtype)
    return PredictResponse(image_id=key, width=width, height=height, **dict(out))


@router.post("/propose", response_model=ProposeResponse)
async def propose(request: ProposeRequest, ctx: ServerContext = Depends(context)) -> ProposeResponse:
    """Candidate masks for a text alone (no box or click), best first: every instance of the
    target the served backbone finds (a backbone with ``can_propose``; 422 otherwise, naming
    those that can). An empty list: nothing matched. Each candidate has its mask, its score
    and its low-res logits (a later decode's ``prev_logits``)."""
    ctx.engine.check_can_propose()
    check_proposal_text(request.text)  # before the encode
    embedding = await ctx.engine.embed(request.image_id)
    candidates = await ctx.engine.propose(embedding, request.text, request.max_candidates)
    height, width = embedding.image_size
    return ProposeResponse(
        image_id=request.image_id, width=width, height=height,
        candidates=[prediction(c, request.mask_format, request.return_logits, request.logits_dtype)
                    for c in candidates])


@router.post("/predict/batch", response_model=PredictBatchResponse)
async def predict_batch(request: PredictBatchRequest,
                        ctx: ServerContext = Depends(context)) -> PredictBatchResponse:
    """Several prompt sets against one uploaded image, decoded as one batch, in order."""
    prev = [None if item.prev_logits is None else
            unpack_array(item.prev_logits.model_dump(), f"items[{i}].prev_logits")
            for i, item in enumerate(request.items)]
    embedding = await ctx.engine.embed(request.image_id)
    preds = await ctx.engine.decode_many(embedding, [item.to_prompts() for item in request.items],
                                         prev, request.multimask, [item.text for item in request.items])
    height, width = embedding.image_size
    return PredictBatchResponse(
        image_id=request.image_id, width=width, height=height,
        predictions=[prediction(p, request.mask_format, request.return_logits, request.logits_dtype)
                     for p in preds])
