"""Turning predictions and sessions into response bodies."""

from __future__ import annotations

import math

import numpy as np

from msagent.io.wire import mask_png_b64, pack_array
from msagent.server.schemas import (
    Box,
    PackedArray,
    PointIn,
    Prediction,
    ProposalInfo,
    SessionInfo,
    SessionStep,
)
from msagent.server.sessions import Session, SessionStore
from msagent.types import MaskPrediction, encode_mask


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def mask_fields(mask: np.ndarray | None, mask_format: str) -> dict:
    if mask is None or mask_format == "none":
        return {}
    if mask_format == "png":
        return {"mask_png": mask_png_b64(mask)}
    return {"mask": encode_mask(mask)}


def prediction(pred: MaskPrediction, mask_format: str, return_logits: bool,
               logits_dtype: str) -> Prediction:
    logits = PackedArray(**pack_array(pred.low_res_logits, logits_dtype)) if return_logits else None
    return Prediction(score=finite(pred.score), logits=logits, area=int(np.count_nonzero(pred.mask)),
                      **mask_fields(pred.mask, mask_format))


def session_info(session: Session, store: SessionStore, default_multimask: bool) -> SessionInfo:
    state = session.state
    height, width = session.image_size
    return SessionInfo(
        session_id=session.id, image_id=session.image_id, width=width, height=height,
        prompt_mode=session.prompt_mode,
        multimask=default_multimask if session.multimask is None else session.multimask,
        turns=len(session.history), actions=session.actions,
        box=None if state.prompts.box is None else Box.of(state.prompts.box),
        points=[PointIn.of(p) for p in state.prompts.points], text=session.text,
        score=None if state.prediction is None else finite(state.prediction.score),
        has_mask=state.prediction is not None, created_at=session.created_at,
        idle_s=store.idle_seconds(session),
        proposal=None if session.proposal is None else ProposalInfo(**session.proposal))


def session_step(session: Session, store: SessionStore, default_multimask: bool,
                 mask_format: str) -> SessionStep:
    pred = session.state.prediction
    return SessionStep(session=session_info(session, store, default_multimask),
                       **mask_fields(None if pred is None else pred.mask, mask_format))
