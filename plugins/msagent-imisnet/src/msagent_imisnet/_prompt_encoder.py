"""IMIS-Net's prompt encoder: SAM's, 768 wide, plus an optional text token.

Coordinates are model-input pixels (0–1024, XY). Sparse tokens are ordered
[points (+ one padding point when there is no box), box corners, text]; the dense embedding
is the downscaled previous logits or the learned "no mask" embedding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._layers import LayerNorm2d


class RandomFourierPE(nn.Module):
    """Positional encoding with a fixed random Gaussian frequency matrix (2×F)."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """``coords`` … ×2 in [0, 1] → … ×2F (sin, cos), always computed in float32."""
        proj = (2 * coords.float() - 1) @ self.positional_encoding_gaussian_matrix.float()
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """The encoding of every cell centre of an H×W grid: 2F×H×W."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode(torch.stack([xx, yy], dim=-1)).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Encode B×N×2 pixel XY coordinates of an input of ``size`` (H, W): B×N×2F."""
        scale = coords.new_tensor([size[1], size[0]], dtype=torch.float32)
        return self.encode(coords.float() / scale)


class PromptEncoder(nn.Module):
    """Embeds points, a box, the previous low-res logits and a text embedding.

    ``points``: (coords B×N×2 float, labels B×N int; 1 positive, 0 negative, -1 padding);
    ``boxes``: B×4 XYXY; ``masks``: B×1×256×256 logits; ``text``: B×768 (after
    ``text_out_dim``). Returns (sparse B×T×768 in float32, dense B×768×64×64).
    """

    def __init__(self, dim: int = 768, grid_size: int = 64, input_size: int = 1024,
                 mask_channels: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.grid_size = grid_size
        self.input_size = (input_size, input_size)
        self.pe_layer = RandomFourierPE(dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_channels // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_channels // 4),
            nn.GELU(),
            nn.Conv2d(mask_channels // 4, mask_channels, kernel_size=2, stride=2),
            LayerNorm2d(mask_channels),
            nn.GELU(),
            nn.Conv2d(mask_channels, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid: 1×768×64×64 (float32)."""
        return self.pe_layer.grid(self.grid_size, self.grid_size)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        coords = coords.float() + 0.5  # pixel centres
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        embedding = self.pe_layer.points(coords, self.input_size)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight.float(), embedding)
        embedding = embedding + (labels == 0) * self.point_embeddings[0].weight.float()
        return embedding + (labels == 1) * self.point_embeddings[1].weight.float()

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = self.pe_layer.points(boxes.float().reshape(-1, 2, 2) + 0.5, self.input_size)
        offsets = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return corners + offsets.float()

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None, text: torch.Tensor | None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next((t.shape[0] for t in (points[0] if points else None, boxes, masks, text)
                      if t is not None), 1)
        sparse = [torch.empty(batch, 0, self.dim, device=self.no_mask_embed.weight.device)]
        if points is not None:
            sparse.append(self.embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if text is not None:
            sparse.append(text.float()[:, None])
        if masks is not None:
            dense = self.mask_downscaling(masks.to(self.no_mask_embed.weight.dtype))
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                batch, -1, self.grid_size, self.grid_size)
        return torch.cat(sparse, dim=1), dense
