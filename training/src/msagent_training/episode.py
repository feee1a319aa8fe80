"""One state per trajectory, shared by the three tools across verl's create/execute/release.

verl's ``ToolAgentLoop`` creates and releases a tool instance for every call, and each tool
class has one instance per agent-loop worker. The episode — the original image, the ground
truth, the accumulated prompts, the previous low-res logits and the per-step IoU/Dice — lives
in a process-wide :class:`EpisodeStore` keyed per trajectory (``agent_data.msagent_episode``,
set by our agent loop: :func:`msagent_training.tools.episode_id`); the agent loop drops it when
the trajectory ends. The small per-step record the reward needs is
mirrored into ``agent_data.extra_fields`` under :data:`RECORD_KEYS`, which verl merges into
the reward function's ``extra_info``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
from msagent import protocol, types
from msagent.agent.episode import EpisodeState
from msagent.backbones import BoundedLRU
from msagent.errors import InvalidInput, PolicyOutputError
from msagent.types import MaskPrediction, Prompts
from PIL import Image

log = logging.getLogger(__name__)

#: extra_fields keys written for every trajectory (uniform keys, so verl can batch them):
#: the call kind of every assistant turn ("invalid" when it had no valid call), and the IoU,
#: Dice and predicted score after every executed add_* call.
CALLS, IOUS, DICES, SCORES = "msagent_calls", "msagent_ious", "msagent_dices", "msagent_scores"
RECORD_KEYS = (CALLS, IOUS, DICES, SCORES)
INVALID = "invalid"


@attrs.define(eq=False)
class ToolEpisode:
    """The segmentation state of one trajectory.

    ``image`` is the original H×W×3 uint8 image (the segmenter always works on it),
    ``ground_truth`` an H×W bool mask or None, ``handle`` what the segmenter client returned
    for the encoded image. ``lock`` serializes the tool calls of one trajectory.
    """

    case_id: str
    target: str
    image: np.ndarray
    ground_truth: np.ndarray | None
    handle: Any = None
    core: EpisodeState | None = None  # msagent's episode state: prompts in force, last prediction
    ious: list[float] = attrs.field(factory=list)
    dices: list[float] = attrs.field(factory=list)
    scores: list[float] = attrs.field(factory=list)
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def prompts(self) -> Prompts:
        return Prompts() if self.core is None else self.core.prompts

    @property
    def prediction(self) -> MaskPrediction | None:
        return None if self.core is None else self.core.prediction


class EpisodeStore:
    """Process-wide ``request_id → ToolEpisode`` map, bounded: first in, first out (a read is
    not a use), the oldest dropped with a warning."""

    def __init__(self, max_episodes: int = 4096) -> None:
        self.max_episodes = max_episodes
        self._items: BoundedLRU[str, ToolEpisode] = BoundedLRU(max_episodes)
        self._lock = threading.Lock()  # look-up and insert as one step

    def get(self, request_id: str) -> ToolEpisode | None:
        return self._items.peek(request_id)

    def put(self, request_id: str, state: ToolEpisode) -> ToolEpisode:
        """Store ``state`` unless one exists already; return the stored one."""
        with self._lock:
            existing = self._items.peek(request_id)
            if existing is not None:
                return existing
            for dropped, _ in self._items.put(request_id, state):
                log.warning("episode store full (%d): dropped %s; is the agent loop releasing "
                            "episodes?", self.max_episodes, dropped)
            return state

    def pop(self, request_id: str) -> ToolEpisode | None:
        return self._items.pop(request_id)

    def __len__(self) -> int:
        return len(self._items)


#: the store every tool and agent loop of this process shares
EPISODES = EpisodeStore()


def record(extra_fields: dict[str, Any]) -> dict[str, Any]:
    """Make sure ``extra_fields`` has every :data:`RECORD_KEYS` list; return it."""
    for key in RECORD_KEYS:
        extra_fields.setdefault(key, [])
    return extra_fields


def call_kind(text: str) -> str:
    """The tool a reply calls under msagent's protocol, or :data:`INVALID`."""
    try:
        return protocol.parse_action(text).kind
    except PolicyOutputError:
        return INVALID


def decode_image(value: Any) -> np.ndarray:
    """H×W×3 uint8 RGB from PNG/JPEG bytes, ``{"bytes": ...}``, a path, a PIL image or an array."""
    if isinstance(value, Mapping):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        value = Image.open(io.BytesIO(value))
    elif isinstance(value, str):
        value = Image.open(value)
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB"))
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return array
    raise InvalidInput(f"cannot read an RGB image from {type(value).__name__}; pass PNG bytes, "
                       "a path or an H×W×3 uint8 array in create_kwargs['image']")


def decode_mask(value: Any) -> np.ndarray | None:
    """H×W bool from msagent's run-length JSON (:func:`msagent.types.encode_mask`), PNG bytes
    (nonzero = foreground), a path, a PIL image or an array."""
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return types.decode_mask(json.loads(value)).astype(bool)
    if isinstance(value, Mapping) and "counts" in value:
        return types.decode_mask(value).astype(bool)
    if isinstance(value, Mapping):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        value = Image.open(io.BytesIO(value))
    elif isinstance(value, str):
        value = Image.open(value)
    array = np.asarray(value.convert("L") if isinstance(value, Image.Image) else value)
    if array.ndim != 2:
        raise InvalidInput(f"ground truth must be an H×W mask, got shape {array.shape}")
    return array > 0
