"""What the service's route modules share (and the web app's routes use): reading uploads,
opening a 2-D session, decoding a prompt into it, the documented error responses. Route
modules hold only routes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

import attrs
import numpy as np
from fastapi import UploadFile

from msagent.agent import episode
from msagent.agent.proposal import PROPOSAL, Proposal, best_candidate, wants_proposal
from msagent.agent.refine import check_initial_mask, initial_state
from msagent.backbones.segmenter import Embedding, check_proposal_text
from msagent.errors import InvalidInput
from msagent.io.wire import ImageTooLarge, decode_mask_upload
from msagent.server.context import ServerContext
from msagent.server.schemas import ErrorBody
from msagent.server.sessions import Session
from msagent.types import BBox, Point

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why} for status, why in [
        (400, "bad request"), (401, "missing or wrong API key"), (404, "unknown image or session"),
        (409, "conflicting state"), (413, "upload too large"), (422, "invalid request"),
        (429, "too many sessions"), (503, "backbone timed out")]}


def attachment(name: str) -> dict[str, str]:
    """The ``Content-Disposition`` header of a download named ``name`` (RFC 6266), for every
    route that sends one: an ASCII ``filename="..."`` for old clients (characters outside
    printable ASCII, quotes and backslashes become ``_``) and the name itself as
    ``filename*=UTF-8''...`` (RFC 5987 percent-encoding), which clients prefer. Any name is
    safe: a header holds Latin-1 only, and a raw non-Latin-1 name was a 500."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    encoded = quote(name.encode("utf-8", "replace"), safe="")
    return {"Content-Disposition":
            f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{encoded}"}


async def read_upload(upload: UploadFile, ctx: ServerContext) -> bytes:
    data = await upload.read(ctx.config.max_upload_bytes + 1)
    if len(data) > ctx.config.max_upload_bytes:
        raise ImageTooLarge(f"the upload is over this server's limit of "
                            f"{ctx.config.max_upload_bytes:,} bytes; compress or downsample it")
    return data


async def open_session(ctx: ServerContext, *, image: UploadFile | None, image_id: str | None,
                       session_id: str | None, prompt_mode: str, multimask: bool | None,
                       text: str | None = None, replace: bool = False,
                       initial_mask: np.ndarray | bytes | str | None = None) -> Session:
    """Create a session from an upload or a stored image's hash (encodes the image);
    ``initial_mask`` (checked, H×W bool; or an upload's bytes, decoded once the image's size
    is known, so a mask of another size is refused from its header) is a prediction to
    refine: the session's first state. ``initial_mask="proposal"`` makes that state the
    served backbone's proposal for ``text`` (:mod:`msagent.agent.proposal`; run in the
    decode pool): refused before the encode when the backbone cannot propose or ``text`` is
    missing; the text reaches later decodes only for a text-prompted backbone; when nothing
    matches, the session starts empty and its ``proposal`` says so."""
    if (image is None) == (image_id is None):
        raise InvalidInput("give exactly one of image (a file upload) and image_id (the hash of "
                           "an uploaded image)")
    session_id = session_id or uuid.uuid4().hex
    from_proposal = check_proposal_request(ctx, initial_mask, text, "text")
    if not from_proposal:
        ctx.engine.check_text(text)
    ctx.store.check_room(session_id, replace=replace)
    if image is not None:
        image_id, _, _ = await ctx.engine.add_image(await read_upload(image, ctx))
    assert image_id is not None  # exactly one of image and image_id: checked above
    mask = None
    if initial_mask is not None and not from_proposal:  # checked before the encode
        size = ctx.engine.images.get(image_id).shape[:2]
        if isinstance(initial_mask, bytes):
            initial_mask = await asyncio.to_thread(initial_mask_upload, initial_mask,
                                                   ctx.config.max_pixels, size)
        mask = await asyncio.to_thread(check_initial_mask, initial_mask, size)
    embedding = await ctx.engine.embed(image_id)
    proposed, score = None, None
    if from_proposal:
        assert text is not None  # check_proposal_request: a proposal needs the text
        proposal = await make_proposal(ctx, embedding, text)
        mask, score = proposal.mask, proposal.score
        proposed = {"target": text.strip(), **proposal.to_dict(text.strip())}
        if not ctx.engine.segmenter.accepts_text:
            text = None  # the proposal's text only: the backbone's decodes take none
    session = Session(id=session_id, image_id=image_id, embedding=embedding,
                      prompt_mode=prompt_mode, multimask=multimask, text=text, proposal=proposed)
    if mask is not None:
        prediction, prompts = await asyncio.to_thread(initial_state, ctx.engine.segmenter, mask)
        if score is not None:  # a proposal's mask keeps the backbone's score for it
            prediction = attrs.evolve(prediction, score=score)
        session.initial = episode.start(embedding, prompt_mode=prompt_mode, text=text,
                                        initial=prediction, prompts=prompts)
    return ctx.store.add(session, replace=replace)


def check_proposal_request(ctx: ServerContext, initial_mask: object, text: str | None,
                           field: str) -> bool:
    """Whether ``initial_mask`` asks for the backbone's proposal (the string "proposal"),
    checked before any work: the served backbone can propose (else 422 naming those that
    can) and the target text ``field`` is given and fits a proposal (non-empty, printable, at
    most :data:`~msagent.backbones.segmenter.MAX_PROPOSAL_TEXT` characters). Any other string
    is refused: an initial mask is a file upload."""
    if not isinstance(initial_mask, str):
        return False
    if not wants_proposal(initial_mask):
        shown = initial_mask if len(initial_mask) <= 40 else initial_mask[:40] + "…"
        raise InvalidInput(f"initial_mask must be a mask file (PNG/TIFF/BMP/.npy) or the word "
                           f"'{PROPOSAL}' (start from the backbone's proposal), got {shown!r}")
    ctx.engine.check_can_propose()
    if text is None or not text.strip():
        raise InvalidInput(f"initial_mask={PROPOSAL} needs the target in '{field}' (e.g. "
                           f"{field}=liver): the backbone proposes a mask from it")
    check_proposal_text(text)
    return True


async def make_proposal(ctx: ServerContext, embedding: Embedding, text: str) -> Proposal:
    """The served backbone's best candidate for ``text`` (in the engine's decode pool)."""
    candidates = await ctx.engine.propose(embedding, text)
    return best_candidate(ctx.engine.segmenter, candidates)


def initial_mask_upload(data: bytes, max_pixels: int,
                        size: tuple[int, int] | None = None) -> np.ndarray:
    """An uploaded initial mask (PNG/TIFF/BMP or .npy, header-checked) as an array, its
    foreground in any channel (:func:`msagent.io.wire.decode_mask_upload`). With ``size``
    (the image's height, width) a mask of another size is refused before it is decoded."""
    return decode_mask_upload(data, max_pixels=max_pixels, what="initial_mask", size=size)


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
