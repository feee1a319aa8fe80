"""SAM2.1 and MedSAM2 as msagent Segmenters, through the ``sam2`` package.

Both run ``SAM2Base``'s image encoder once per image and its ``sam_prompt_encoder`` /
``sam_mask_decoder`` per prompt set (see :mod:`msagent_medsam2.decoding`); pre- and
post-processing are ``SAM2ImagePredictor``'s, so results equal the official predictor's.
Through a volume they propagate natively, with SAM2's video memory
(:meth:`_Sam2Segmenter.native_propagator`, :mod:`msagent_medsam2.propagation`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from msagent.backbones import (
    Embedding,
    InputGeometry,
    MaskPrediction,
    Prompts,
    Propagator,
    Segmenter,
    SliceStack,
)
from msagent.backbones.sam import resolve_device, resolve_dtype
from msagent.backbones.weights import load_into
from msagent.errors import WeightsMismatch

from .decoding import Sam2Features, decode_sam2, encode_batch
from .model import (
    MEDSAM2_SOURCE,
    SAM2_SOURCE,
    SAM2_VARIANTS,
    build_model,
    medsam2_config,
    normalize_variant,
    sam2_config,
    video_hole_area,
)
from .weights import infer_variant, load_state_dict, resolve_checkpoint

log = logging.getLogger(__name__)


class _Sam2Segmenter(Segmenter):
    """Shared encode/decode of a loaded ``SAM2Base`` (stretch geometry at ``image_size``)."""

    multimask_default = True

    def __init__(self, model, checkpoint: Path, device: str | None, dtype: str | None,
                 cache_size: int) -> None:
        super().__init__(cache_size=cache_size)
        from sam2.utils.transforms import SAM2Transforms

        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        self.model.fill_hole_area = video_hole_area(self.device)
        self.image_size = int(model.image_size)
        with warnings.catch_warnings():  # SAM2Transforms scripts its resize (deprecated API)
            warnings.simplefilter("ignore", FutureWarning)
            self.transforms = SAM2Transforms(resolution=self.image_size, mask_threshold=0.0)

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """SAM2ImagePredictor's input: B×3×S×S, stretched to S×S, ImageNet-normalised."""
        return self.transforms.forward_batch(list(images)).to(self.device)

    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> Sam2Features:
        return self.encode_images([image])[0]

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> list[Sam2Features]:
        """Batched image encoder (uncached); one :class:`Sam2Features` per image."""
        batch = self.preprocess(images)
        with self._autocast():
            return encode_batch(self.model, batch)

    def input_geometry(self, image_size: tuple[int, int]) -> InputGeometry:
        """Each axis stretched to the model's input size (SAM2's transforms)."""
        return InputGeometry(image_size, self.image_size, mode="stretch")

    def decode_prompts(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None], *,
                       multimask: bool) -> list[MaskPrediction]:
        prev = list(prev_logits)
        geometry = self.input_geometry(embedding.image_size)
        with self._autocast():
            return decode_sam2(self.model, embedding.features, geometry, prompt_sets, prev,
                               multimask)

    def native_propagator(self, stack: SliceStack) -> Propagator:
        """SAM2's video memory through ``stack`` (a
        :class:`~msagent_medsam2.propagation.Sam2VideoPropagator`: seeds as conditioning
        frames, tracked forward and backward as MedSAM2's 3-D inference does; each slice
        encoded once). Its frames are preprocessed as sam2's video loader does (PIL resize),
        not as the image path does, so it keeps its own features."""
        from .propagation import Sam2VideoPropagator

        return Sam2VideoPropagator(self, stack)


def _load(config: Path, path: Path, state: dict):
    model = build_model(config)
    load_into(model, state, path, what="SAM2")
    return model


class SAM2Segmenter(_Sam2Segmenter):
    """SAM2.1 (Hiera tiny/small/base_plus/large, 1024 px).

    Options: ``checkpoint`` (path to ``sam2.1_hiera_*.pt``), ``variant`` (``"tiny"``,
    ``"small"``, ``"base_plus"``, ``"large"``; default: read off the checkpoint), ``device``,
    ``dtype`` ("float16"/"bfloat16": autocast on CUDA), ``cache_size``. Weights resolve from
    ``checkpoint``, ``$MSAGENT_SAM2_CHECKPOINT`` or the Hugging Face cache
    (``facebook/sam2.1-hiera-<variant>``; without ``variant`` the first cached of tiny, small,
    base_plus, large).
    """

    name = "sam2"

    def __init__(self, checkpoint: str | os.PathLike | None = None, variant: str | None = None,
                 device: str | None = None, dtype: str | None = None,
                 cache_size: int = 16) -> None:
        wanted = normalize_variant(variant)
        files = [SAM2_VARIANTS[wanted][1]] if wanted else None
        path = resolve_checkpoint(SAM2_SOURCE, checkpoint, files)
        state = load_state_dict(path)
        found = infer_variant(state, path)
        if wanted is not None and found != wanted:
            raise WeightsMismatch(f"{path} holds SAM2.1 {found} weights but variant={variant!r} "
                                  f"was asked; pass variant={found!r} or leave variant unset")
        self.variant = found
        super().__init__(_load(sam2_config(found), path, state), path, device, dtype, cache_size)
        log.info("loaded SAM2.1 %s from %s on %s", found, path, self.device)


class MedSAM2Segmenter(_Sam2Segmenter):
    """MedSAM2 (SAM2.1 Hiera-tiny fine-tuned on medical images; ``MedSAM2_latest.pt``).

    Options: ``checkpoint``, ``image_size`` (1024: sam2's ``sam2.1_hiera_t.yaml``, the setting
    MedSAM-Agent's segmentation server ran, the default; 512: MedSAM2's own
    ``sam2.1_hiera_t512.yaml``, shipped with this plugin), ``device``, ``dtype``,
    ``cache_size``. Weights resolve from ``checkpoint``, ``$MSAGENT_MEDSAM2_CHECKPOINT`` or the
    Hugging Face cache (``wanglab/MedSAM2``, ``MedSAM2_latest.pt``).
    """

    name = "medsam2"

    def __init__(self, checkpoint: str | os.PathLike | None = None, image_size: int = 1024,
                 device: str | None = None, dtype: str | None = None,
                 cache_size: int = 16) -> None:
        config = medsam2_config(int(image_size))
        path = resolve_checkpoint(MEDSAM2_SOURCE, checkpoint)
        state = load_state_dict(path)
        found = infer_variant(state, path)
        if found != "tiny":
            raise WeightsMismatch(f"{path} holds SAM2.1 {found} weights; MedSAM2 is Hiera-tiny. "
                                  "For other SAM2.1 sizes use backbone 'sam2'")
        super().__init__(_load(config, path, state), path, device, dtype, cache_size)
        log.info("loaded MedSAM2 (%d px) from %s on %s", self.image_size, path, self.device)
