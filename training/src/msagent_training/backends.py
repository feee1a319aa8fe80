"""Where the segmenter runs for the training tools, and how a tool call reaches it.

- ``placement: local`` — the segmenter is built once per process (one per agent-loop
  worker) with :func:`msagent.load_backbone`; encode/decode run in a worker thread so the
  agent loop's event loop never blocks. With ``backbone: remote`` the "segmenter" is a client
  of ``msagent serve`` and the embedding cache lives on the server.
- ``placement: ray_actor`` — one shared :class:`SegmenterActor` per Ray node (a named actor,
  created on first use), so every rollout on the node shares one model and one embedding
  cache: the n = 8 GRPO rollouts of an image cost one encode. Tools ``await`` the actor.

Both keep msagent's Segmenter contract: encode(original image) once, decode(prompts in pixel
XY of the original image, previous 256×256 logits) per call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
from msagent.backbones import BoundedLRU
from msagent.errors import InvalidInput, SegmenterError
from msagent.types import MaskPrediction, Prompts

log = logging.getLogger(__name__)
PLACEMENTS = ("local", "ray_actor")


@attrs.frozen
class BackendConfig:
    """The segmenter part of a tool's config (the ``config:`` block of the tool YAML).

    ``backbone``/``backbone_options``: as for :func:`msagent.load_backbone` (e.g.
    ``medsam2`` with ``{device: cuda}``, or ``remote`` with ``{url: ...}``).
    ``actor_options``: Ray options for the shared actor (``num_gpus``, ``num_cpus``,
    ``runtime_env``); ``actor_cache``: how many encoded images the actor keeps.
    """

    backbone: str = "litemedsam"
    backbone_options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    placement: str = attrs.field(default="local", validator=attrs.validators.in_(PLACEMENTS))
    actor_options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    actor_cache: int = 64

    @classmethod
    def from_tool_config(cls, config: Mapping[str, Any]) -> "BackendConfig":
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in fields and v is not None})

    @property
    def key(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True, default=str)


class SegmenterClient:
    """What a tool talks to: ``encode`` once per episode, ``decode`` per executed call."""

    multimask_default: bool = True

    async def encode(self, image: np.ndarray) -> Any:
        """Encode the original H×W×3 uint8 image; return a handle for :meth:`decode`."""
        raise NotImplementedError

    async def decode(self, handle: Any, image: np.ndarray, prompts: Prompts,
                     prev_logits: np.ndarray | None, multimask: bool,
                     text: str | None = None) -> MaskPrediction:
        """Decode ``prompts``; ``text`` (the target) goes to backbones with ``accepts_text``."""
        raise NotImplementedError


def _decode(segmenter, embedding, prompts, prev_logits, multimask, text) -> MaskPrediction:
    """:meth:`Segmenter.decode` as :class:`msagent.Agent` calls it (text only where accepted)."""
    extra = {"text": text} if text and segmenter.accepts_text else {}
    return segmenter.decode(embedding, prompts, prev_logits, multimask=multimask, **extra)


class LocalClient(SegmenterClient):
    """A segmenter in this process, through its async front doors (``aencode``/``adecode``:
    worker threads, or native I/O for the ``remote`` backbone)."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.multimask_default = segmenter.multimask_default

    async def encode(self, image: np.ndarray):
        return await self.segmenter.aencode(image)

    async def decode(self, handle, image, prompts, prev_logits, multimask, text=None):
        extra = {"text": text} if text and self.segmenter.accepts_text else {}
        return await self.segmenter.adecode(handle, prompts, prev_logits, multimask=multimask,
                                            **extra)


class SegmenterActor:
    """The per-node shared segmenter (wrapped with ``ray.remote`` by :func:`actor_client`).

    Keeps its own LRU of embeddings by content key, so decode requests carry only the key;
    a decode whose key was evicted answers None and the client resends the image.
    """

    def __init__(self, backbone: str, backbone_options: Mapping[str, Any], cache: int) -> None:
        import msagent

        self.segmenter = msagent.load_backbone(backbone, **dict(backbone_options))
        self._embeddings: BoundedLRU[str, Any] = BoundedLRU(cache)

    def multimask_default(self) -> bool:
        return self.segmenter.multimask_default

    def encode(self, image: np.ndarray) -> str:
        embedding = self.segmenter.encode(image)  # the segmenter's own cache dedupes encodes
        self._embeddings.put(embedding.key, embedding)
        return embedding.key

    def decode(self, key: str, prompts: Prompts, prev_logits: np.ndarray | None,
               multimask: bool, text: str | None = None) -> MaskPrediction | None:
        embedding = self._embeddings.get(key)
        if embedding is None:
            return None
        return _decode(self.segmenter, embedding, prompts, prev_logits, multimask, text)

    def cache_info(self) -> dict[str, int]:
        info = self.segmenter.cache_info()
        return {"hits": info.hits, "misses": info.misses, "size": len(self._embeddings)}


class ActorClient(SegmenterClient):
    """Talks to the node's :class:`SegmenterActor` without blocking the event loop."""

    def __init__(self, actor, multimask_default: bool) -> None:
        self.actor = actor
        self.multimask_default = multimask_default

    async def encode(self, image: np.ndarray) -> str:
        return await self.actor.encode.remote(image)

    async def decode(self, handle, image, prompts, prev_logits, multimask, text=None):
        prediction = await self.actor.decode.remote(handle, prompts, prev_logits, multimask, text)
        if prediction is None:  # evicted: encode again, then decode
            handle = await self.encode(image)
            prediction = await self.actor.decode.remote(handle, prompts, prev_logits, multimask,
                                                        text)
        if prediction is None:
            raise SegmenterError("the segmenter actor lost the embedding right after encoding; "
                                 "raise actor_cache in the tool config")
        return prediction


_CLIENTS: dict[str, SegmenterClient] = {}
_CLIENTS_LOCK = threading.Lock()


async def get_client(config: BackendConfig) -> SegmenterClient:
    """The process-wide client for ``config`` (built on first use in a worker thread, then
    shared by all tools of the process)."""
    client = _CLIENTS.get(config.key)
    return client if client is not None else await asyncio.to_thread(get_client_sync, config)


def get_client_sync(config: BackendConfig) -> SegmenterClient:
    """Blocking :func:`get_client`."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(config.key)
        if client is None:
            client = _CLIENTS[config.key] = _build(config)
        return client


def _build(config: BackendConfig) -> SegmenterClient:
    if config.placement == "local":
        import msagent

        log.info("loading segmenter %r in process", config.backbone)
        return LocalClient(msagent.load_backbone(config.backbone, **config.backbone_options))
    return actor_client(config)


def actor_client(config: BackendConfig) -> ActorClient:
    """Get or create this node's named segmenter actor (``msagent_segmenter_<backbone>_<node>``)."""
    import ray

    if not ray.is_initialized():
        raise InvalidInput("placement 'ray_actor' needs a running Ray (it runs inside verl's "
                           "workers); use placement 'local' outside Ray")
    node_id = ray.get_runtime_context().get_node_id()
    options = {"num_cpus": 1, "num_gpus": 0, **config.actor_options}
    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id,
                                                                             soft=False)
    actor = ray.remote(SegmenterActor).options(
        name=f"msagent_segmenter_{config.backbone}_{node_id[:12]}", get_if_exists=True,
        scheduling_strategy=strategy, max_concurrency=8, **options,
    ).remote(config.backbone, config.backbone_options, config.actor_cache)
    return ActorClient(actor, ray.get(actor.multimask_default.remote()))
