"""The SDK for backbone authors: everything a backbone plugin may import from msagent.

A backbone subclasses :class:`Segmenter` and implements two primitives: ``encode_image`` (the
image encoder, uncached) and ``decode_prompts`` (a batch of prompt sets, already validated).
The base class owns the embedding cache, input checks, output checks and the sync/async front
doors. What SAM-family backbones share lives here too:

- :class:`InputGeometry` — image ↔ model-input geometry (resize, pad, per-axis prompt
  scaling, low-res crops), NumPy only;
- :mod:`msagent.backbones.sam` — the torch decode path of SAM-style prompt encoders and mask
  decoders (``decode_sam``, ``select_best``, ``upscale``, ``resolve_device``/``resolve_dtype``);
  imported by the plugin itself, so ``import msagent.backbones`` imports no torch;
- :mod:`msagent.backbones.weights` — checkpoint resolution (explicit path, environment
  variable, Hugging Face cache) and safe loading (``weights_only=True``);
- :mod:`msagent.backbones.propagation` — the 3-D propagation contract (:class:`Propagator`,
  :class:`Seed`, :class:`SliceStack`) a backbone with its own volume memory implements
  (calling :meth:`Propagator.checkpoint` between slices, so a caller can stop it:
  :class:`PropagationStopped`);
- :func:`check_prompts`, :func:`check_prev_logits`, ``LOW_RES`` — the prompt and mask-input
  contract;
- :class:`BoundedLRU` — the one bounded, thread-safe LRU (single-flight ``get_or_compute``)
  for a backbone's own caches (text embeddings, say).

:func:`msagent.testing.check_segmenter` is the conformance suite every backbone's tests run.
"""

from __future__ import annotations

from msagent._lru import BoundedLRU
from msagent.backbones import weights
from msagent.backbones.geometry import InputGeometry
from msagent.backbones.propagation import PropagationStopped, Propagator, Seed, SliceStack
from msagent.backbones.segmenter import LOW_RES, Embedding, Segmenter, check_prev_logits, check_prompts
from msagent.types import BBox, MaskPrediction, Point, Prompts

__all__ = [
    "LOW_RES",
    "BBox",
    "BoundedLRU",
    "Embedding",
    "InputGeometry",
    "MaskPrediction",
    "Point",
    "Prompts",
    "PropagationStopped",
    "Propagator",
    "Seed",
    "SliceStack",
    "Segmenter",
    "check_prev_logits",
    "check_prompts",
    "weights",
]
