"""IMIS-Net's mask decoder: SAM's two-way transformer decoder at width 768, with semantic
tokens and a text term added to every mask.

Token order into the transformer: [IoU (1), mask (4), semantic (4), sparse prompts...].
Mask 0 is the single-mask output, masks 1–3 the multimask candidates.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layers import MLP, LayerNorm2d, TwoWayTransformer

NUM_MASK_TOKENS = 4


class MaskDecoder(nn.Module):
    """Predicts B×4×256×256 mask logits and B×4 IoU scores.

    The semantic head (category recognition against a category table that ships separately)
    is kept for loading the checkpoint but not evaluated.
    """

    def __init__(self, dim: int = 768, iou_hidden: int = 256, semantic_dim: int = 512) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(depth=2, dim=dim, num_heads=8, mlp_dim=2048)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(NUM_MASK_TOKENS, dim)
        self.semantic_tokens = nn.Embedding(NUM_MASK_TOKENS, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(NUM_MASK_TOKENS))
        self.text_output = nn.Linear(dim, dim // 8)
        self.iou_prediction_head = MLP(dim, iou_hidden, NUM_MASK_TOKENS, 3)
        self.semantic_prediction_head = MLP(dim, iou_hidden, semantic_dim, 3)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                sparse: torch.Tensor, dense: torch.Tensor,
                text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``image_embedding`` 1×768×64×64 (or B×…), ``image_pe`` 1×768×64×64, ``sparse``
        B×T×768, ``dense`` B×768×64×64, ``text`` B×768 or None.
        Returns (logits B×4×256×256, IoU predictions B×4)."""
        dtype = self.iou_token.weight.dtype
        batch = sparse.shape[0]
        output_tokens = torch.cat(
            [self.iou_token.weight, self.mask_tokens.weight, self.semantic_tokens.weight])
        tokens = torch.cat([output_tokens[None].expand(batch, -1, -1), sparse.to(dtype)], dim=1)
        src = image_embedding.to(dtype) + dense.to(dtype)
        hs, src = self.transformer(src, image_pe.to(dtype), tokens)
        b, c, h, w = src.shape[0], src.shape[2], *image_embedding.shape[-2:]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        mask_tokens = hs[:, 1:1 + NUM_MASK_TOKENS]
        hyper = torch.stack([mlp(mask_tokens[:, i])
                             for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        flat = upscaled.reshape(b, c, h * w)
        masks = hyper @ flat
        if text is not None:
            masks = masks + self.text_output(text.to(dtype)[:, None]) @ flat
        iou = self.iou_prediction_head(hs[:, 0])
        return masks.reshape(b, NUM_MASK_TOKENS, h, w), iou
