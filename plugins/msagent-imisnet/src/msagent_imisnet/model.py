"""The IMIS-Net ViT-B network, laid out so that the official ``IMISNet-B.pth`` state_dict
(527 tensors) loads strictly.

- ``image_encoder.sam_encoder``: timm's ``samvit_base_patch16`` (SAM ViT-B: patch 16, width
  768, depth 12, window 14, global attention in blocks 2/5/8/11, relative positions, 64×64
  absolute position embedding). Its own 256-channel neck is in the checkpoint but unused.
- ``image_encoder.neck``: 1×1 conv 768→768, LayerNorm2d, 3×3 conv, LayerNorm2d → B×768×64×64.
- ``prompt_encoder``, ``mask_decoder``: see :mod:`._prompt_encoder`, :mod:`._mask_decoder`.
- ``text_model.text_model``: a CLIP text transformer (``CLIPTextConfig()`` defaults) and
  ``text_out_dim``: Linear 512→768, giving the text prompt token.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layers import LayerNorm2d
from ._mask_decoder import MaskDecoder
from ._prompt_encoder import PromptEncoder

INPUT_SIZE = 1024
EMBED_DIM = 768
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class ImageEncoder(nn.Module):
    """timm's SAM ViT-B blocks followed by IMIS-Net's 768-channel neck.

    Input B×3×1024×1024 (normalised), output B×768×64×64.
    """

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.sam_encoder = timm.create_model("samvit_base_patch16", pretrained=False,
                                             num_classes=0)
        self.neck = nn.Sequential(
            nn.Conv2d(EMBED_DIM, EMBED_DIM, kernel_size=1, bias=False),
            LayerNorm2d(EMBED_DIM),
            nn.Conv2d(EMBED_DIM, EMBED_DIM, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(EMBED_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.layers import resample_abs_pos_embed_nhwc

        vit = self.sam_encoder
        x = vit.patch_embed(x)  # B×64×64×768 (NHWC)
        x = x + resample_abs_pos_embed_nhwc(vit.pos_embed, x.shape[1:3])
        x = vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))
        x = vit.blocks(x)
        return self.neck(x.permute(0, 3, 1, 2))


class CLIPText(nn.Module):
    """Holds the CLIP text transformer under the checkpoint's name ``text_model``.

    transformers 4.x nests the transformer in ``CLIPTextModel.text_model``; 5.x flattened it.
    Either way the parameters end up under ``text_model.text_model.*`` as in the checkpoint.
    """

    def __init__(self) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        model = CLIPTextModel(CLIPTextConfig())
        self.text_model = getattr(model, "text_model", model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                ) -> torch.Tensor:
        """Token ids B×L → the pooled (end-of-text token) output B×512."""
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output


class IMISNet(nn.Module):
    """The whole network. Use :meth:`embed_image`, :meth:`embed_text` and :meth:`decode`."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder()
        self.prompt_encoder = PromptEncoder(EMBED_DIM, INPUT_SIZE // 16, INPUT_SIZE)
        self.mask_decoder = MaskDecoder(EMBED_DIM)
        self.text_model = CLIPText()
        self.text_out_dim = nn.Linear(512, EMBED_DIM)

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×1024×1024 RGB on the 0–255 scale → B×768×64×64 image embeddings."""
        dtype = self.text_out_dim.weight.dtype
        mean = torch.tensor(PIXEL_MEAN, device=images.device).view(-1, 1, 1)
        std = torch.tensor(PIXEL_STD, device=images.device).view(-1, 1, 1)
        return self.image_encoder(((images.float() - mean) / std).to(dtype))

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   ) -> torch.Tensor:
        """CLIP token ids B×L → text prompt embeddings B×768."""
        return self.text_out_dim(self.text_model(input_ids, attention_mask))

    def decode(self, image_embedding: torch.Tensor,
               points: tuple[torch.Tensor, torch.Tensor] | None = None,
               boxes: torch.Tensor | None = None, masks: torch.Tensor | None = None,
               text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in 1024-input pixels (see :class:`PromptEncoder`) against a 1×768×64×64
        embedding → (logits B×4×256×256, IoU predictions B×4)."""
        sparse, dense = self.prompt_encoder(points, boxes, masks, text)
        return self.mask_decoder(image_embedding, self.prompt_encoder.dense_pe(), sparse, dense,
                                 text)


def build_imisnet() -> IMISNet:
    """An IMIS-Net ViT-B with freshly initialised weights (load a checkpoint into it)."""
    return IMISNet()
