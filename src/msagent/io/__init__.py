"""Reading and writing images, masks and (with ``msagent[medical]``) medical volumes."""

from .images import (
    DEFAULT_MAX_PIXELS,
    load_array,
    max_pixels_limit,
    save_mask_png,
    save_png,
    to_mask,
    to_rgb_uint8,
)

__all__ = ["DEFAULT_MAX_PIXELS", "load_array", "max_pixels_limit", "save_mask_png", "save_png",
           "to_mask", "to_rgb_uint8"]
