"""msagent plugin: the ``sam`` backbone (the original Segment Anything, ViT-B/L/H)."""

import msagent


@msagent.hookimpl
def msagent_register_segmenters(register):
    # lazy(): torch and segment-anything are imported when the backbone is loaded
    register("sam", msagent.lazy("msagent_sam.segmenter:SamSegmenter"),
             "Segment Anything (ViT-B/L/H, 1024 px) via segment-anything; weights: checkpoint=, "
             "$MSAGENT_SAM_CHECKPOINT or the HF cache (ybelkada/segment-anything)")
