"""Image ↔ model-input geometry shared by the SAM-family backbones (NumPy only).

Two resize conventions occur in practice:
- ``longest_side``: scale so the longest side equals ``size`` (aspect kept), pad bottom/right
  to size×size (SAM, LiteMedSAM);
- ``stretch``: resize each axis to ``size`` (aspect not kept; SAM2, IMIS-Net).
Prompt coordinates are mapped with the same per-axis factors, so non-square images stay
correct. Low-res logits (256×256) cover the padded input square in ``longest_side`` mode.
"""

from __future__ import annotations

import attrs
import cv2
import numpy as np

from msagent.types import Prompts


@attrs.frozen
class InputGeometry:
    """How an image of ``image_size`` (H, W) maps onto a ``size``×``size`` model input."""

    image_size: tuple[int, int]
    size: int
    mode: str = attrs.field(default="longest_side",
                            validator=attrs.validators.in_(("longest_side", "stretch")))

    @property
    def scale_xy(self) -> tuple[float, float]:
        height, width = self.image_size
        if self.mode == "stretch":
            return self.size / width, self.size / height
        factor = self.size / max(height, width)
        return factor, factor

    @property
    def resized_hw(self) -> tuple[int, int]:
        """The image's size inside the model input (before padding)."""
        height, width = self.image_size
        if self.mode == "stretch":
            return self.size, self.size
        factor = self.size / max(height, width)
        # at least one pixel: a 1×600 or 3000×2 image would otherwise resize to a side of 0
        return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))

    def resize_image(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """The image resized (and, in longest_side mode, zero-padded) to size×size."""
        new_h, new_w = self.resized_hw
        resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        out = np.zeros((self.size, self.size, image.shape[2]), dtype=resized.dtype)
        out[:new_h, :new_w] = resized
        return out

    def prompt_arrays(self, prompts: Prompts) -> tuple[np.ndarray | None, np.ndarray | None,
                                                        np.ndarray | None]:
        """(points N×2 float32, labels N int32, box 4 float32) in model-input pixels."""
        sx, sy = self.scale_xy
        points = labels = box = None
        if prompts.points:
            points = np.array([[p.x * sx, p.y * sy] for p in prompts.points], np.float32)
            labels = np.array([p.label for p in prompts.points], np.int32)
        if prompts.box is not None:
            b = prompts.box
            box = np.array([b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy], np.float32)
        return points, labels, box

    def low_res_crop(self, low_res: int = 256) -> tuple[int, int]:
        """The (h, w) of the valid (unpadded) part of low-res logits."""
        new_h, new_w = self.resized_hw
        return (max(1, round(new_h * low_res / self.size)), max(1, round(new_w * low_res / self.size)))

    def mask_logits(self, mask: np.ndarray, low_res: int = 256, magnitude: float = 10.0) -> np.ndarray:
        """A binary H×W mask (original image frame) as ``low_res``×``low_res`` float32 logits in
        this geometry's frame: the inverse of how low-res logits are upscaled to a mask. In
        ``longest_side`` mode the mask fills the unpadded part (:meth:`low_res_crop`) and the
        padding is background; in ``stretch`` mode it fills the whole square. Foreground is
        ``+magnitude``, background ``-magnitude`` (SAM2 turns an input mask into logits the same
        way, ×20 − 10). A cell is foreground when at least half of it is; a mask too thin for
        that keeps every cell it touches, so it never vanishes."""
        crop_h, crop_w = (low_res, low_res) if self.mode == "stretch" else self.low_res_crop(low_res)
        coverage = cv2.resize(np.asarray(mask, np.float32), (crop_w, crop_h), interpolation=cv2.INTER_AREA)
        inside = coverage >= 0.5
        if not inside.any() and np.any(mask):
            inside = coverage > 0
        out = np.full((low_res, low_res), -magnitude, np.float32)
        out[:crop_h, :crop_w] = np.where(inside, magnitude, -magnitude)
        return out

