"""msagent plugin: the ``medsam2`` and ``sam2`` backbones (through the ``sam2`` package)."""

import msagent


@msagent.hookimpl
def msagent_register_segmenters(register):
    # lazy(): torch, hydra and sam2 are imported when a backbone is loaded, not when listed
    register("medsam2", msagent.lazy("msagent_medsam2.segmenter:MedSAM2Segmenter"),
             "MedSAM2 (SAM2.1 Hiera-T, MedSAM2_latest.pt), 1024 px as in MedSAM-Agent or "
             "image_size=512; weights: checkpoint=, $MSAGENT_MEDSAM2_CHECKPOINT or the HF cache")
    register("sam2", msagent.lazy("msagent_medsam2.segmenter:SAM2Segmenter"),
             "SAM2.1 (Hiera tiny/small/base_plus/large, 1024 px); weights: checkpoint=, "
             "$MSAGENT_SAM2_CHECKPOINT or the HF cache (facebook/sam2.1-hiera-*)")
