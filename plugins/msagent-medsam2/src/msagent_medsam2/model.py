"""Building SAM2.1 models from their YAML configs (sam2's own, plus MedSAM2's 512-px one).

A model is built the way ``sam2.build_sam.build_sam2_video_predictor`` builds it
(``apply_postprocessing=True``: the single-mask output falls back to the most stable of the
multimask outputs; clicked masks enter the memory binarised), but from a config *file* with
OmegaConf, so our shipped ``sam2.1_hiera_t512.yaml`` needs no Hydra search path. Its class is
:class:`msagent_medsam2.propagation.StackVideoPredictor`, sam2's ``SAM2VideoPredictor`` able to
run on slices held in memory: one object with one set of weights serves both the image path
(which reads only the image encoder, prompt encoder and mask decoder, untouched by the video
settings, so image results are those of ``build_sam2``'s ``SAM2Base``) and native 3-D
propagation.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from msagent.errors import InvalidInput

from .weights import HubFile, WeightsSource

#: variant → sam2's config (inside the sam2 package) and the official checkpoint on the Hub
SAM2_VARIANTS = {
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml",
             HubFile("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", "tiny")),
    "small": ("configs/sam2.1/sam2.1_hiera_s.yaml",
              HubFile("facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt", "small")),
    "base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml",
                  HubFile("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt",
                          "base_plus")),
    "large": ("configs/sam2.1/sam2.1_hiera_l.yaml",
              HubFile("facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt", "large")),
}
VARIANT_ALIASES = {"t": "tiny", "s": "small", "b+": "base_plus", "base+": "base_plus",
                   "base-plus": "base_plus", "b": "base_plus", "l": "large"}
SAM2_SOURCE = WeightsSource("SAM2.1", "MSAGENT_SAM2_CHECKPOINT",
                            tuple(file for _, file in SAM2_VARIANTS.values()))

MEDSAM2_FILE = HubFile("wanglab/MedSAM2", "MedSAM2_latest.pt", "MedSAM2 latest")
MEDSAM2_SOURCE = WeightsSource("MedSAM2", "MSAGENT_MEDSAM2_CHECKPOINT", (MEDSAM2_FILE,))
#: MedSAM2 input size → (package, config): 1024 as MedSAM-Agent's server ran it, 512 as MedSAM2
MEDSAM2_CONFIGS = {1024: ("sam2", "configs/sam2.1/sam2.1_hiera_t.yaml"),
                   512: ("msagent_medsam2", "configs/sam2.1_hiera_t512.yaml")}

#: sam2.build_sam.build_sam2's ``apply_postprocessing`` overrides
POSTPROCESSING = {"dynamic_multimask_via_stability": True,
                  "dynamic_multimask_stability_delta": 0.05,
                  "dynamic_multimask_stability_thresh": 0.98}
#: what build_sam2_video_predictor sets on top (its ``fill_hole_area=8`` is set per device by
#: :func:`video_hole_area`), the class, and every seed a conditioning frame: a seed added on an
#: already tracked slice stays fixed instead of being tracked over (SAM2VideoPredictor's
#: ``add_all_frames_to_correct_as_cond``)
VIDEO = {"_target_": "msagent_medsam2.propagation.StackVideoPredictor",
         "binarize_mask_from_pts_for_mem_enc": True,
         "add_all_frames_to_correct_as_cond": True}
HOLE_AREA = 8  # build_sam2_video_predictor's fill_hole_area


def normalize_variant(variant: str | None) -> str | None:
    """``"tiny"``/``"t"``, ``"small"``/``"s"``, ``"base_plus"``/``"b+"``, ``"large"``/``"l"``."""
    if variant is None:
        return None
    key = variant.lower()
    key = VARIANT_ALIASES.get(key, key)
    if key not in SAM2_VARIANTS:
        raise InvalidInput(f"unknown SAM2.1 variant {variant!r}; use one of "
                         f"{', '.join(SAM2_VARIANTS)}")
    return key


def config_file(package: str, relative: str) -> Path:
    """The path of a config file shipped inside ``package``."""
    return Path(str(importlib.resources.files(package).joinpath(relative)))


def sam2_config(variant: str) -> Path:
    return config_file("sam2", SAM2_VARIANTS[variant][0])


def medsam2_config(image_size: int) -> Path:
    if image_size not in MEDSAM2_CONFIGS:
        raise InvalidInput(f"MedSAM2 runs at image_size 1024 (MedSAM-Agent's setting) or 512 "
                         f"(MedSAM2's own config), not {image_size}")
    return config_file(*MEDSAM2_CONFIGS[image_size])


def build_model(config: Path):
    """A randomly initialised ``StackVideoPredictor`` (a ``SAM2Base``) from a config file
    (weights are loaded after)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config)
    cfg = OmegaConf.merge(cfg, {"model": {"sam_mask_decoder_extra_args": POSTPROCESSING,
                                          **VIDEO}})
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def video_hole_area(device) -> int:
    """The video predictor's hole filling as it actually runs on ``device``: sam2 fills holes of
    up to 8 low-res pixels with its CUDA extension and, where that is missing or the tensors are
    on the CPU, warns and skips it; so 8 on CUDA with the extension built, else 0 (no warning,
    same masks)."""
    if getattr(device, "type", str(device)) != "cuda":
        return 0
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return 0
    return HOLE_AREA
