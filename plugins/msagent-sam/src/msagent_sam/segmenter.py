"""Segment Anything (ViT-B/L/H) as an msagent Segmenter, through the ``segment-anything`` package.

Pre- and post-processing are segment-anything's ``SamPredictor``'s, so masks, logits and
scores equal the official predictor's for the same weights and prompts:
- image: longest side resized to 1024 (``ResizeLongestSide``, PIL bilinear), normalised with
  SAM's pixel mean/std, zero-padded to 1024×1024;
- prompts: pixel XY scaled per axis by (resized size / original size);
- mask: 256×256 logits → 1024×1024 (bilinear) → crop the unpadded part → original H×W.
The 256×256 low-res logits cover the padded 1024 square, the frame SAM takes as mask input.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from msagent.backbones import Embedding, InputGeometry, MaskPrediction, Prompts, Segmenter
from msagent.backbones.sam import decode_sam, resolve_device, resolve_dtype
from msagent.backbones.weights import load_into
from msagent.errors import WeightsMismatch

from .weights import infer_variant, load_state_dict, normalize_variant, resolve_checkpoint

log = logging.getLogger(__name__)
INPUT_SIZE = 1024


@attrs.frozen
class SamGeometry(InputGeometry):
    """``longest_side`` geometry with segment-anything's per-axis prompt factors: the resized
    size is rounded, and SAM scales x by new_w/w and y by new_h/h (not one common factor)."""

    @property
    def scale_xy(self) -> tuple[float, float]:
        new_h, new_w = self.resized_hw
        height, width = self.image_size
        return new_w / width, new_h / height


def sam_upscale(logits: torch.Tensor, geometry: InputGeometry) -> np.ndarray:
    """SAM's ``postprocess_masks`` for one 256×256 logit map → H×W bool mask."""
    size = geometry.size
    full = F.interpolate(logits[None, None].float(), (size, size), mode="bilinear",
                         align_corners=False)
    new_h, new_w = geometry.resized_hw
    out = F.interpolate(full[..., :new_h, :new_w], geometry.image_size, mode="bilinear",
                        align_corners=False)
    return (out[0, 0] > 0).cpu().numpy()


class SamSegmenter(Segmenter):
    """The original Segment Anything model (1024-px ViT image encoder).

    Options: ``checkpoint`` (path to ``sam_vit_{b,l,h}_*.pth``), ``variant`` (``"vit_b"``,
    ``"vit_l"``, ``"vit_h"``; default: read off the checkpoint), ``device`` ("cpu", "cuda";
    default CUDA if available), ``dtype`` ("float16"/"bfloat16": autocast on CUDA; CPU runs
    float32), ``cache_size`` (embeddings kept). Weights resolve from ``checkpoint``,
    ``$MSAGENT_SAM_CHECKPOINT`` or the Hugging Face cache (see :mod:`msagent_sam.weights`).
    """

    name = "sam"
    multimask_default = True

    def __init__(self, checkpoint: str | os.PathLike | None = None, variant: str | None = None,
                 device: str | None = None, dtype: str | None = None,
                 cache_size: int = 16) -> None:
        super().__init__(cache_size=cache_size)
        from segment_anything import sam_model_registry
        from segment_anything.utils.transforms import ResizeLongestSide

        wanted = normalize_variant(variant)
        path = resolve_checkpoint(checkpoint, wanted)
        state = load_state_dict(path)
        found = infer_variant(state, path)
        if wanted is not None and found != wanted:
            raise WeightsMismatch(f"{path} holds SAM {found} weights but variant={variant!r} was "
                                  f"asked; pass variant={found!r} or leave variant unset")
        model = sam_model_registry[found]()
        load_into(model, state, path, what="Segment Anything")
        self.variant = found
        self.checkpoint = path
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        self.transform = ResizeLongestSide(INPUT_SIZE)
        log.info("loaded SAM %s from %s on %s", found, path, self.device)

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """SamPredictor's input: 3×1024×1024 float32, normalised and zero-padded."""
        resized = self.transform.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()
        return self.model.preprocess(tensor[None])[0]

    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        return self.encode_images([image])[0]

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Batched image encoder (uncached); 1×256×64×64 features per image."""
        batch = torch.stack([self.preprocess(image) for image in images])
        with self._autocast():
            features = self.model.image_encoder(batch)
        return [features[i:i + 1] for i in range(len(images))]

    def input_geometry(self, image_size: tuple[int, int]) -> InputGeometry:
        """1024-px longest side, padded bottom/right, SAM's per-axis prompt factors."""
        return SamGeometry(image_size, INPUT_SIZE)

    def decode_prompts(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None], *,
                       multimask: bool) -> list[MaskPrediction]:
        """Decode prompt sets against one embedding; sets of equal structure (box or not, number
        of clicks, mask input or not) go through the decoder as one batch."""
        prev = list(prev_logits)
        geometry = self.input_geometry(embedding.image_size)
        with self._autocast():
            return decode_sam(self.model.prompt_encoder, self.model.mask_decoder,
                              embedding.features, geometry, prompt_sets, prev, multimask,
                              upscale_fn=sam_upscale)
