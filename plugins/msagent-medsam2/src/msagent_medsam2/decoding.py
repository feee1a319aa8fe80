"""SAM2 image encoding and batched prompt decoding (torch), following ``SAM2ImagePredictor``.

Geometry is ``stretch``: the image is resized to S×S (S = the model's ``image_size``, 1024 or
512) without keeping the aspect ratio, prompts are scaled per axis by S/W and S/H, and masks
are the decoder's low-res logits resized straight back to H×W. The box enters the prompt
encoder as two corner points (labels 2 and 3) before the clicks, as in the predictor.

The decoder's low-res logits are S/4 per side (256 at 1024 px, 128 at 512 px). msagent's
contract carries 256×256 logits, so 128-px logits are widened by pixel repetition (nearest)
and narrowed back by 2×2 averaging (area) when fed in: the round trip is exact. Masks are
always computed from the native logits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from msagent.backbones import (
    LOW_RES,
    InputGeometry,
    MaskPrediction,
    Prompts,
    check_prev_logits,
    check_prompts,
)
from msagent.backbones.sam import select_best

BOX_LABELS = (2, 3)  # SAM2's labels of the top-left and bottom-right box corners
LOGIT_CLAMP = 32.0  # SAM2ImagePredictor clamps returned low-res logits to ±32


@attrs.frozen(eq=False)
class Sam2Features:
    """One image's SAM2 features: ``image_embed`` 1×256×(S/16)², and the decoder's projected
    high-res maps ``high_res_feats`` (1×32×(S/4)², 1×64×(S/8)²)."""

    image_embed: torch.Tensor
    high_res_feats: tuple[torch.Tensor, torch.Tensor]


def encode_batch(model, batch: torch.Tensor) -> list[Sam2Features]:
    """Run the image encoder on B×3×S×S normalised images (as ``SAM2Transforms`` makes them)."""
    backbone_out = model.forward_image(batch)
    _, feats, _, sizes = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        feats[-1] = feats[-1] + model.no_mem_embed
    maps = [f.permute(1, 2, 0).reshape(batch.shape[0], -1, h, w) for f, (h, w) in zip(feats, sizes)]
    return [Sam2Features(maps[-1][i:i + 1], (maps[0][i:i + 1], maps[1][i:i + 1]))
            for i in range(batch.shape[0])]


def resize_logits(logits: torch.Tensor, side: int) -> torch.Tensor:
    """B×1×h×w logits → B×1×side×side: widened by repetition, narrowed by area averaging."""
    if logits.shape[-1] == side and logits.shape[-2] == side:
        return logits
    mode = "nearest" if side > logits.shape[-1] else "area"
    return F.interpolate(logits, size=(side, side), mode=mode)


def stretch_upscale(logits: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """Native h×w logits → H×W bool mask (``SAM2Transforms.postprocess_masks``, no hole filling)."""
    full = F.interpolate(logits[None, None].float(), image_size, mode="bilinear",
                         align_corners=False)
    return (full[0, 0] > 0).cpu().numpy()


def point_batch(geometry: InputGeometry, prompt_sets: Sequence[Prompts],
                device) -> tuple[torch.Tensor, torch.Tensor]:
    """B×N×2 float32 coordinates (model-input pixels) and B×N int32 labels, box corners first."""
    coords, labels = [], []
    for prompts in prompt_sets:
        points, point_labels, box = geometry.prompt_arrays(prompts)
        xy = [box.reshape(2, 2)] if box is not None else []
        lab = [np.array(BOX_LABELS, np.int32)] if box is not None else []
        if points is not None:
            xy.append(points)
            lab.append(point_labels)
        coords.append(np.concatenate(xy).astype(np.float32))
        labels.append(np.concatenate(lab).astype(np.int32))
    return (torch.as_tensor(np.stack(coords), device=device),
            torch.as_tensor(np.stack(labels), device=device))


@torch.inference_mode()
def decode_sam2(model, features: Sam2Features, geometry: InputGeometry,
                prompt_sets: Sequence[Prompts], prev_logits: Sequence[np.ndarray | None],
                multimask: bool) -> list[MaskPrediction]:
    """Decode prompt sets against one image's features, batching sets of equal structure
    (box or not, number of clicks, mask input or not). One prediction per set, in order."""
    for prompts in prompt_sets:
        check_prompts(prompts, geometry.image_size)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, prompts in enumerate(prompt_sets):
        groups[(prompts.box is not None, len(prompts.points), prev_logits[index] is not None)] \
            .append(index)
    encoder, device = model.sam_prompt_encoder, features.image_embed.device
    results: list[MaskPrediction | None] = [None] * len(prompt_sets)
    for (_, _, has_mask), indices in groups.items():
        points = point_batch(geometry, [prompt_sets[i] for i in indices], device)
        masks = None
        if has_mask:
            prev = np.stack([check_prev_logits(prev_logits[i]) for i in indices])
            masks = resize_logits(torch.as_tensor(prev, device=device)[:, None],
                                  encoder.mask_input_size[0])
        sparse, dense = encoder(points=points, boxes=None, masks=masks)
        low_res, iou_pred, _, _ = model.sam_mask_decoder(
            image_embeddings=features.image_embed, image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask, repeat_image=len(indices) > 1,
            high_res_features=list(features.high_res_feats))
        best_logits, best_scores = select_best(low_res.float(), iou_pred.float())
        carried = resize_logits(best_logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)[:, None], LOW_RES)
        for row, index in enumerate(indices):
            results[index] = MaskPrediction(
                mask=stretch_upscale(best_logits[row], geometry.image_size),
                low_res_logits=carried[row, 0].cpu().numpy(), score=float(best_scores[row]))
    return results
