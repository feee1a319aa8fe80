"""msagent plugin: the ``imisnet`` backbone (IMIS-Net ViT-B, own implementation)."""

import msagent


@msagent.hookimpl
def msagent_register_segmenters(register):
    # lazy(): torch, timm and transformers load with the backbone, not when plugins are listed
    register("imisnet", msagent.lazy("msagent_imisnet.segmenter:IMISNetSegmenter"),
             "IMIS-Net ViT-B (1024 px) with box, point and text prompts; "
             "weights IMISNet-B.pth from a path, $MSAGENT_IMISNET_CHECKPOINT or the HF cache")
