"""IMIS-Net as an msagent Segmenter (encode once, decode many; optional text prompt)."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from msagent.backbones import (
    BoundedLRU,
    Embedding,
    InputGeometry,
    MaskPrediction,
    Prompts,
    Segmenter,
    check_prev_logits,
    check_prompts,
)
from msagent.backbones.sam import resolve_device, resolve_dtype
from msagent.errors import SegmenterError

from .model import INPUT_SIZE, IMISNet, build_imisnet
from .text import TOKENIZER_HINT, resolve_tokenizer, tokenize
from .weights import load_into, load_state_dict, resolve_checkpoint

log = logging.getLogger(__name__)


def preprocess(image: np.ndarray) -> np.ndarray:
    """IMIS-Net's input: H×W×3 uint8 stretched to 1024×1024 with PIL's NEAREST (no aspect
    kept, no padding), still uint8 on the 0–255 scale (normalised inside the network)."""
    return np.asarray(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.NEAREST))


def upscale(logits: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """B×256×256 logits → B×H×W bool: bilinear to 1024, then to the original size,
    foreground where sigmoid > 0.5 (as upstream)."""
    full = F.interpolate(logits[:, None].float(), size=(INPUT_SIZE, INPUT_SIZE),
                         mode="bilinear", align_corners=False)
    full = F.interpolate(full, size=tuple(image_size), mode="bilinear", align_corners=False)
    return (torch.sigmoid(full[:, 0]) > 0.5).cpu().numpy()


class IMISNetSegmenter(Segmenter):
    """IMIS-Net ViT-B (1024 px input) with box, point, mask and text prompts.

    Options: ``checkpoint`` (path to ``IMISNet-B.pth``; else ``$MSAGENT_IMISNET_CHECKPOINT``
    or the HF/ModelScope cache), ``device`` ("cpu", "cuda"; default CUDA when available),
    ``dtype`` ("float32" | "float16" | "bfloat16", CUDA only), ``cache_size`` (embeddings),
    ``use_text_prompt`` (None: use the episode's target as a text prompt when a CLIP tokenizer
    is available; True: require one; False: never), ``tokenizer`` (a tokenizer object or
    folder; see :func:`msagent_imisnet.text.resolve_tokenizer`), ``encode_batch_size``.

    Decoding always yields IMIS-Net's three multimask candidates and keeps the one with the
    best predicted IoU (``multimask=False`` gives the single-mask token instead). With text
    prompts on it can propose (``can_propose``): a text-only decode is one candidate.
    """

    multimask_default = True
    accepts_text = True
    #: proposals from text: a text-only decode (:meth:`propose_masks`); per instance, only
    #: with text prompts on (a tokenizer loaded)
    can_propose = True

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | None = None,
                 dtype: str | None = None, cache_size: int = 16, *,
                 use_text_prompt: bool | None = None, tokenizer: Any = None,
                 encode_batch_size: int = 2, text_cache_size: int = 64) -> None:
        super().__init__(cache_size=cache_size)
        if encode_batch_size < 1:
            raise ValueError(f"encode_batch_size must be >= 1, got {encode_batch_size}")
        path = resolve_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        model = build_imisnet()
        load_into(model, load_state_dict(path), path)
        self.checkpoint = path
        gaussian = model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
        self.model: IMISNet = model.to(self.device, self.dtype).eval()
        # positional frequencies stay float32 under fp16/bf16 (the encoding is computed in fp32)
        self.model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix = \
            gaussian.to(self.device, torch.float32)
        self.encode_batch_size = encode_batch_size
        self.tokenizer = None
        if use_text_prompt is not False:
            self.tokenizer = resolve_tokenizer(tokenizer, required=use_text_prompt is True)
            if self.tokenizer is None:
                log.warning("IMIS-Net text prompts are off: %s", TOKENIZER_HINT)
        self.accepts_text = self.can_propose = self.tokenizer is not None
        self._text_cache: BoundedLRU[str, torch.Tensor] = BoundedLRU(text_cache_size)
        log.info("loaded IMIS-Net from %s on %s (%s)", path, self.device, self.dtype)

    # -- encoder ---------------------------------------------------------------
    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        return self.encode_images([image])[0]

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Batched image encoder (uncached): 1×768×64×64 features per image, in chunks of
        ``encode_batch_size``."""
        from tqdm.auto import tqdm

        out: list[torch.Tensor] = []
        size = self.encode_batch_size
        starts = range(0, len(images), size)
        for start in tqdm(starts, desc="IMIS-Net encode", disable=len(starts) < 4):
            batch = np.stack([preprocess(img) for img in images[start:start + size]])
            tensor = torch.as_tensor(batch, device=self.device).permute(0, 3, 1, 2)
            features = self.model.embed_image(tensor)
            out.extend(features[i:i + 1] for i in range(features.shape[0]))
        return out

    # -- text --------------------------------------------------------------------
    @torch.inference_mode()
    def text_embedding(self, text: str) -> torch.Tensor:
        """The 768-d text prompt token for ``text`` (cached per string)."""
        if self.tokenizer is None:
            raise SegmenterError("text prompts are off for this IMIS-Net segmenter "
                                 "(use_text_prompt=False or no tokenizer). " + TOKENIZER_HINT)
        return self._text_cache.get_or_compute(text, lambda: self._embed_text(text))

    def _embed_text(self, text: str) -> torch.Tensor:
        ids, mask = tokenize(self.tokenizer, [text], self.device)
        return self.model.embed_text(ids, mask)[0]

    # -- proposals from text ----------------------------------------------------------
    def propose_masks(self, embedding: Embedding, text: str, *,
                      max_candidates: int) -> list[MaskPrediction]:
        """IMIS-Net's text prompt alone (no box or click): one candidate, the best of its three
        masks by predicted IoU, with that score; none when the mask is empty. IMIS-Net finds
        one region per prompt, not every instance."""
        prediction = self.decode_prompts(embedding, [Prompts(text=text)], [None], multimask=True)[0]
        return [prediction] if prediction.mask.any() else []

    # -- decoder -----------------------------------------------------------------
    def input_geometry(self, image_size: tuple[int, int]) -> InputGeometry:
        """Each axis stretched to IMIS-Net's 1024-px input."""
        return InputGeometry(image_size, INPUT_SIZE, mode="stretch")

    @torch.inference_mode()
    def decode_prompts(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None], *,
                       multimask: bool) -> list[MaskPrediction]:
        """Decode box/points (pixel XY of the original image), the previous 256×256 logits and
        the target text (``prompts.text``, e.g. "liver", when a tokenizer is loaded; a set may
        then have no box or point), batching sets of equal structure."""
        count = len(prompt_sets)
        prev = list(prev_logits)
        texts = [p.text if self.accepts_text else None for p in prompt_sets]
        for prompts, target in zip(prompt_sets, texts):
            _check(prompts, target, embedding.image_size)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, prompts in enumerate(prompt_sets):
            groups[(prompts.box is not None, len(prompts.points), prev[i] is not None,
                    texts[i] is not None)].append(i)
        geometry = self.input_geometry(embedding.image_size)
        results: list[MaskPrediction | None] = [None] * count
        for indices in groups.values():
            logits, scores = self._decode_group(
                embedding.features, geometry, [prompt_sets[i] for i in indices],
                [prev[i] for i in indices], [texts[i] for i in indices], multimask)
            masks = upscale(logits, embedding.image_size)
            low_res = logits.float().cpu().numpy()
            for row, index in enumerate(indices):
                results[index] = MaskPrediction(mask=masks[row], low_res_logits=low_res[row],
                                                score=float(scores[row]))
        return results

    def _decode_group(self, features: torch.Tensor, geometry: InputGeometry,
                      prompt_sets: list[Prompts], prev: list[np.ndarray | None],
                      texts: list[str | None], multimask: bool,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of same-structure prompt sets → (kept logits B×256×256, scores B)."""
        arrays = [geometry.prompt_arrays(p) for p in prompt_sets]
        device = features.device
        points = boxes = masks = text = None
        if arrays[0][0] is not None:
            points = (torch.as_tensor(np.stack([a[0] for a in arrays]), device=device),
                      torch.as_tensor(np.stack([a[1] for a in arrays]), device=device))
        if arrays[0][2] is not None:
            boxes = torch.as_tensor(np.stack([a[2] for a in arrays]), device=device)
        if prev[0] is not None:
            stacked = np.stack([check_prev_logits(p) for p in prev])[:, None]
            masks = torch.as_tensor(stacked, device=device, dtype=self.dtype)
        if texts[0] is not None:
            text = torch.stack([self.text_embedding(t) for t in texts])
        logits, iou = self.model.decode(features, points, boxes, masks, text)
        if not multimask:
            return logits[:, 0].float(), iou[:, 0].float()
        best = iou[:, 1:].float().argmax(dim=1) + 1
        rows = torch.arange(logits.shape[0], device=device)
        return logits[rows, best].float(), iou[rows, best].float()


def _check(prompts: Prompts, text: str | None, image_size: tuple[int, int]) -> None:
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise SegmenterError(f"text must be a non-empty string such as 'liver', got {text!r}")
    if prompts.empty and text is None:
        raise SegmenterError("decode needs a box, a point or text=")
    if not prompts.empty:
        check_prompts(prompts, image_size)
