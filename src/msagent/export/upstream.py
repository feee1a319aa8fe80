"""RL prompt rows in upstream MedSAM-Agent's layout (``msagent export --format verl-rl
--layout upstream``), for its own ``MedSAMDataset``, RL tools and reward.

Upstream's dataset class (``RL-verl/recipe/medsam_agent/medsam_dataset.py``) reads, per row:

- ``extra_info.target_description``: the target text (a plain string; upstream builds the
  system prompt and first user message from it — the same strings as
  :data:`msagent.protocol.SYSTEM_PROMPT` and :func:`msagent.protocol.first_user_text`);
- ``images``: a list of ``{"bytes": ...}``, the **original** image (upstream converts it to
  RGB, hands it to its segmentation tools as is and resizes a copy to 512×512 for the
  policy);
- ``reward_model.ground_truth``: ``{"bytes": PNG}``, the mask as a 0/255 8-bit PNG of the
  original size (upstream's reward binarises at > 127);
- ``extra_info.id``: the row's index; ``data_source``.

The row also keeps ``prompt`` (system + first user turn with ``<image>``, as msagent's own
layout; verl's base class reads the column, upstream replaces it), ``ability`` and the case
fields (``case_id``, ``dataset``, ``modality``, ``class``, ``split``, ``height``, ``width``).
Upstream's dataset sets ``agent_name`` and the tools' ``create_kwargs`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from msagent import protocol
from msagent.export.conversation import IMAGE_TOKEN
from msagent.generation.shards import png_bytes
from msagent.types import Case

LAYOUTS = ("msagent", "upstream")


def mask_png(mask: np.ndarray) -> bytes:
    """A mask as upstream stores it: 8-bit grey PNG, 0 background, 255 foreground."""
    return png_bytes(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)


def rl_row(*, index: int, case_id: str, target: str, image: np.ndarray, ground_truth: np.ndarray,
           meta: Mapping[str, Any], data_source: str) -> dict[str, Any]:
    """The upstream-layout RL row of one case (``image`` H×W×3 uint8, ``ground_truth`` H×W)."""
    image = np.asarray(image)
    return {
        "data_source": data_source,
        "prompt": [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                   {"role": "user", "content": IMAGE_TOKEN + protocol.first_user_text(target)}],
        "images": [{"bytes": png_bytes(image)}],
        "ability": "interactive_segmentation",
        "reward_model": {"style": "rule", "ground_truth": {"bytes": mask_png(ground_truth)}},
        "extra_info": {
            "id": int(index), "target_description": target, "case_id": case_id,
            "dataset": str(meta.get("dataset", "")), "modality": str(meta.get("modality", "")),
            "class": str(meta.get("class", "")), "split": str(meta.get("split", "")),
            "height": int(image.shape[0]), "width": int(image.shape[1])},
    }


def case_row(case: Case, index: int, data_source: str = "msagent") -> dict[str, Any]:
    """:func:`rl_row` of a :class:`~msagent.types.Case` (for data builders)."""
    return rl_row(index=index, case_id=case.id, target=case.target, image=case.image,
                  ground_truth=cast(np.ndarray, case.ground_truth), meta=case.meta, data_source=data_source)


def rl_schema():
    """The Arrow schema of upstream-layout RL rows."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    blob = pa.struct([("bytes", pa.binary())])
    extra = pa.struct([
        ("id", pa.int64()), ("target_description", pa.string()), ("case_id", pa.string()),
        ("dataset", pa.string()), ("modality", pa.string()), ("class", pa.string()),
        ("split", pa.string()), ("height", pa.int64()), ("width", pa.int64())])
    return pa.schema([("data_source", pa.string()), ("prompt", pa.list_(message)),
                      ("images", pa.list_(blob)), ("ability", pa.string()),
                      ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", blob)])),
                      ("extra_info", extra)])
