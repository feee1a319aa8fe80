"""msagent plugin: the ``sam3`` backbone (SAM 3 through transformers)."""

import msagent


@msagent.hookimpl
def msagent_register_segmenters(register):
    # lazy(): torch and transformers are imported when the backbone is loaded, not when listed
    register("sam3", msagent.lazy("msagent_sam3.segmenter:Sam3Segmenter"),
             "SAM 3 (concept proposals from text, boxes/points, native video propagation); "
             "weights: checkpoint=, $MSAGENT_SAM3_CHECKPOINT or the HF cache (facebook/sam3, gated)")
