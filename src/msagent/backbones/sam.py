"""Prompt encoding, batched mask decoding and upscaling for SAM-style decoders (torch).

Shared by the backbones whose prompt encoder and mask decoder follow segment-anything's
interfaces (``PromptEncoder(points=, boxes=, masks=)``, ``MaskDecoder(image_embeddings=,
image_pe=, sparse_prompt_embeddings=, dense_prompt_embeddings=, multimask_output=)``).
Imported only by torch-based plugins; ``import msagent`` never imports it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from msagent.backbones.geometry import InputGeometry
from msagent.backbones.segmenter import LOW_RES, check_prev_logits, check_prompts
from msagent.types import MaskPrediction, Prompts


def _group_key(prompts: Prompts) -> tuple[bool, int]:
    return prompts.box is not None, len(prompts.points)


def prompt_batch(geometry: InputGeometry, prompt_sets: Sequence[Prompts], device) -> dict:
    """Stack prompt sets of one structure (same box presence, same point count) as tensors."""
    # one structure: an array is None in every set or in none
    arrays = [geometry.prompt_arrays(p) for p in prompt_sets]
    points = boxes = None
    if arrays[0][0] is not None:
        coords = torch.as_tensor(np.stack([a[0] for a in arrays]), device=device)  # type: ignore[misc]
        labels = torch.as_tensor(np.stack([a[1] for a in arrays]), device=device)  # type: ignore[misc]
        points = (coords, labels)
    if arrays[0][2] is not None:
        boxes = torch.as_tensor(np.stack([a[2] for a in arrays]), device=device)  # type: ignore[misc]
    return {"points": points, "boxes": boxes}


@torch.inference_mode()
def decode_sam(prompt_encoder, mask_decoder, image_embedding: torch.Tensor,
               geometry: InputGeometry, prompt_sets: Sequence[Prompts],
               prev_logits: Sequence[np.ndarray | None], multimask: bool,
               dtype: torch.dtype = torch.float32,
               upscale_fn: Callable[[torch.Tensor, InputGeometry], np.ndarray] | None = None,
               ) -> list[MaskPrediction]:
    """Decode prompt sets against one image embedding (1×C×h×w), batching sets of equal
    structure. Returns one prediction per prompt set, in order.

    ``upscale_fn`` turns the kept 256×256 logits into the H×W mask (default :func:`upscale`;
    a backbone passes its official post-processing where that differs)."""
    upscale_fn = upscale if upscale_fn is None else upscale_fn
    for prompts in prompt_sets:
        check_prompts(prompts, geometry.image_size)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, prompts in enumerate(prompt_sets):
        groups[(_group_key(prompts), prev_logits[index] is not None)].append(index)
    results: list[MaskPrediction | None] = [None] * len(prompt_sets)
    device = image_embedding.device
    for (_, has_mask), indices in groups.items():
        batch = prompt_batch(geometry, [prompt_sets[i] for i in indices], device)
        masks = None
        if has_mask:
            masks = torch.as_tensor(np.stack([check_prev_logits(prev_logits[i])  # type: ignore[misc]
                                              for i in indices]),
                                    device=device)[:, None].to(dtype)
        if batch["boxes"] is not None:
            batch["boxes"] = batch["boxes"].to(dtype)
        sparse, dense = prompt_encoder(points=batch["points"], boxes=batch["boxes"], masks=masks)
        low_res, iou_pred = mask_decoder(
            image_embeddings=image_embedding.to(dtype),
            image_pe=prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=multimask,
        )
        best_logits, best_scores = select_best(low_res.float(), iou_pred.float())
        for row, index in enumerate(indices):
            logits = best_logits[row]
            results[index] = MaskPrediction(
                mask=upscale_fn(logits, geometry), low_res_logits=logits.cpu().numpy(),
                score=float(best_scores[row]))
    return cast(list[MaskPrediction], results)  # every index is in one group


def select_best(low_res: torch.Tensor, iou_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From B×K×256×256 logits and B×K predicted IoUs keep the best candidate per row."""
    best = iou_pred.argmax(dim=1)
    rows = torch.arange(low_res.shape[0], device=low_res.device)
    return low_res[rows, best], iou_pred[rows, best]


def upscale(logits: torch.Tensor, geometry: InputGeometry) -> np.ndarray:
    """256×256 low-res logits → H×W bool mask of the original image (crop padding, bilinear)."""
    crop_h, crop_w = geometry.low_res_crop(LOW_RES)
    valid = logits[None, None, :crop_h, :crop_w].float()
    full = F.interpolate(valid, size=geometry.image_size, mode="bilinear", align_corners=False)
    return (full[0, 0] > 0).cpu().numpy()


def resolve_device(device: str | None) -> torch.device:
    """``None`` → CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU; on CUDA the requested ``"float16"``/``"bfloat16"`` (default float32)."""
    if dtype is None or device.type == "cpu":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]
