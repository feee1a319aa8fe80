"""Request and response bodies of the v1 API (pydantic; they make the OpenAPI spec).

Coordinates are pixel XY of the original image (x right, y down); boxes are XYXY with
inclusive corners (given in any order); point ``label`` is 1 for foreground, 0 for background.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from msagent.backbones.segmenter import MAX_PROPOSAL_TEXT
from msagent.types import BBox, Point, Prompts

#: the most candidates one ``POST /v1/propose`` answers (each carries a mask and 256×256 logits)
MAX_CANDIDATES = 16

MaskFormat = Literal["rle", "png", "none"]
ArrayDType = Literal["float16", "float32"]
IMAGE_ID = r"^[0-9a-f]{64}$"
Coordinate = Field(ge=-(2**31), le=2**31 - 1)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    detail: str = Field(description="what was wrong and what to do")
    code: str | None = Field(None, description="short machine-readable reason")
    errors: list[dict[str, Any]] | None = None


class Box(Strict):
    x1: int = Coordinate
    y1: int = Coordinate
    x2: int = Coordinate
    y2: int = Coordinate

    def to_bbox(self) -> BBox:
        return BBox.ordered(self.x1, self.y1, self.x2, self.y2)

    @classmethod
    def of(cls, box: BBox) -> "Box":
        return cls(x1=box.x1, y1=box.y1, x2=box.x2, y2=box.y2)


class PointIn(Strict):
    x: int = Coordinate
    y: int = Coordinate
    label: Literal[0, 1] = Field(1, description="1 foreground (positive), 0 background")

    def to_point(self) -> Point:
        return Point(self.x, self.y, positive=self.label == 1)

    @classmethod
    def of(cls, point: Point) -> "PointIn":
        return cls(x=point.x, y=point.y, label=point.label)


class PackedArray(Strict):
    """A float array: base64 of its C-order little-endian bytes."""

    dtype: ArrayDType = "float16"
    shape: list[int] = Field(min_length=1, max_length=4)
    data: str


class RLE(BaseModel):
    """msagent's run-length code: row-major runs over the H×W mask, starting with False."""

    size: list[int]
    counts: list[int]


class PromptSet(Strict):
    box: Box | None = None
    points: list[PointIn] = Field(default_factory=list, max_length=256)
    prev_logits: PackedArray | None = Field(
        None, description="the previous turn's 256×256 low-res logits (returned as `logits`)")
    text: str | None = Field(None, min_length=1, max_length=500, description=(
        "the target as text (e.g. 'liver'), for backbones that accept a text prompt"))

    def to_prompts(self) -> Prompts:
        return Prompts(box=None if self.box is None else self.box.to_bbox(),
                       points=tuple(p.to_point() for p in self.points))


class OutputOptions(Strict):
    multimask: bool | None = Field(None, description="keep the best of several candidates; "
                                                     "null: the backbone's default")
    mask_format: MaskFormat = "rle"
    return_logits: bool = True
    logits_dtype: ArrayDType = "float16"


class PredictRequest(PromptSet, OutputOptions):
    """One stateless decode: an uploaded image (``image_id``) or an inline one (``image_b64``:
    base64 of PNG/JPEG/TIFF/.npy bytes), the prompts, optionally the previous logits."""

    image_id: str | None = Field(None, pattern=IMAGE_ID, description="an uploaded image's hash")
    image_b64: str | None = None


class PredictBatchRequest(OutputOptions):
    """Several prompt sets against one uploaded image, decoded as one batch."""

    image_id: str = Field(pattern=IMAGE_ID, description="an uploaded image's hash")
    items: list[PromptSet] = Field(min_length=1, max_length=256)


class ProposeRequest(Strict):
    """Candidate masks for a text alone, from a backbone that can propose (``can_propose`` in
    ``/health``): every matching instance, best first, at most ``max_candidates``."""

    image_id: str = Field(pattern=IMAGE_ID, description="an uploaded image's hash")
    text: str = Field(min_length=1, max_length=MAX_PROPOSAL_TEXT, description=(
        "a short noun phrase naming the target, e.g. 'liver' (printable, at most "
        f"{MAX_PROPOSAL_TEXT} characters)"))
    max_candidates: int = Field(5, ge=1, le=MAX_CANDIDATES, description=(
        f"at most this many candidates (this server answers at most {MAX_CANDIDATES})"))
    mask_format: MaskFormat = "rle"
    return_logits: bool = True
    logits_dtype: ArrayDType = "float16"


class Prediction(BaseModel):
    score: float | None = Field(description="the backbone's predicted IoU of the mask")
    mask: RLE | None = None
    mask_png: str | None = Field(None, description="base64 PNG, 0 background / 255 foreground")
    logits: PackedArray | None = None
    area: int = Field(description="foreground pixels")


class PredictResponse(Prediction):
    image_id: str
    width: int
    height: int


class ProposeResponse(BaseModel):
    image_id: str
    width: int
    height: int
    candidates: list[Prediction] = Field(description="best first; empty: nothing matched")


class PredictBatchResponse(BaseModel):
    image_id: str
    width: int
    height: int
    predictions: list[Prediction]


class ImageInfo(BaseModel):
    image_id: str
    width: int
    height: int
    created: bool = Field(description="false if the server already had this image")


class AddBox(Box):
    multimask: bool | None = None
    mask_format: MaskFormat = "rle"


class AddPoint(PointIn):
    multimask: bool | None = None
    mask_format: MaskFormat = "rle"


class ProposalInfo(BaseModel):
    """What the backbone proposed for a session's start (``initial_mask=proposal``)."""

    target: str = Field(description="the text the backbone proposed from")
    source: str = Field(description="proposal:<backbone>, as on a trajectory's turn 0")
    matched: bool = Field(description="false: no candidate matched; the session started empty")
    score: float | None = Field(description="the kept candidate's score (null when none)")
    candidates: int = Field(description="how many candidates the backbone returned")
    note: str = Field(description="the same in words")


class SessionInfo(BaseModel):
    session_id: str
    image_id: str
    width: int
    height: int
    prompt_mode: Literal["accumulate", "latest"]
    multimask: bool
    turns: int = Field(description="states on the undo stack")
    actions: int = Field(description="prompts executed since creation (upstream's round number)")
    box: Box | None
    points: list[PointIn]
    text: str | None
    score: float | None
    has_mask: bool
    created_at: float = Field(description="Unix time")
    idle_s: float
    proposal: ProposalInfo | None = Field(None, description=(
        "set when the session started from the backbone's proposal (initial_mask=proposal)"))


class SessionStep(BaseModel):
    session: SessionInfo
    mask: RLE | None = None
    mask_png: str | None = None


class SessionList(BaseModel):
    total: int
    sessions: list[SessionInfo]


class Deleted(BaseModel):
    session_id: str
    remaining_sessions: int


class Health(BaseModel):
    status: Literal["ok"]
    backbone: str
    multimask_default: bool
    accepts_text: bool
    can_propose: bool = Field(False, description=(
        "the backbone proposes masks from text alone (POST /v1/propose, initial_mask=proposal)"))
    max_candidates: int = Field(MAX_CANDIDATES, description="the most candidates one "
                                                            "POST /v1/propose answers")
    version: str
    sessions: int = Field(description="live sessions, 2-D and volume sessions together")
    volume_sessions: int = Field(0, description="live volume (3-D) sessions of the web app")
    uptime_s: float
    model_loaded: bool = True
    model_type: str
    device: str
    active_sessions: int
    timestamp: str
