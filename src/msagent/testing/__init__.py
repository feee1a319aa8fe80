"""Test support, a product of its own: data with known answers (:mod:`.data`), the backbone
conformance suite (:mod:`.conformance`), deterministic stand-in backbones (:mod:`.backbones`)
and pytest fixtures (:mod:`.pytest_plugin`, loaded by pytest through msagent's ``pytest11``
entry point).

``mni152_slice`` needs nilearn (``pip install nilearn``), which ships the MNI152 T1 template
and its brain, grey- and white-matter masks, so no download is involved.
"""

from msagent.testing.backbones import (
    BandBackbone,
    BoxBackbone,
    BrightBackbone,
    ComponentBackbone,
    ProposingBackbone,
    logits_of,
)
from msagent.testing.conformance import CHECKS, ConformanceRun, check_segmenter, run_check
from msagent.testing.data import (
    CT_PHANTOM_ORGANS,
    CT_PHANTOM_SPACING,
    HF_REVISION,
    MNI_TARGETS,
    TUBE_AFFINE,
    add_to_hf_cache,
    make_ct_phantom,
    make_phantom,
    make_tube,
    mni152_slice,
    write_ct_phantom,
    write_dicom_series,
    write_msd_tubes,
    zyx_to_nifti,
)

__all__ = ["CHECKS", "CT_PHANTOM_ORGANS", "CT_PHANTOM_SPACING", "HF_REVISION", "MNI_TARGETS",
           "BandBackbone", "BoxBackbone", "BrightBackbone", "ProposingBackbone",
           "ComponentBackbone", "ConformanceRun", "add_to_hf_cache", "check_segmenter",
           "logits_of", "make_ct_phantom", "make_phantom", "make_tube", "mni152_slice", "run_check",
           "TUBE_AFFINE", "write_ct_phantom", "write_dicom_series", "write_msd_tubes", "zyx_to_nifti"]
