"""The voxel limit: how large a volume msagent decodes, checked from headers before any data.

A NIfTI header or a DICOM series' headers state the volume's shape; a few hundred kilobytes
of compressed zeros can claim gigabytes. :func:`check_voxels` refuses a volume over the limit
before its data are read. The limit is ``max_voxels`` when given, else the environment
variable ``MSAGENT_MAX_VOXELS``, else :data:`DEFAULT_MAX_VOXELS` (2**29 voxels, e.g.
512 × 512 × 2048; 2 GiB as float32). The server keeps several uploads in memory and has a
lower default, :data:`DEFAULT_SERVER_MAX_VOXELS` (2**27, e.g. 512**3); ``msagent serve
--max-voxels N`` (or ``$MSAGENT_MAX_VOXELS``) sets it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from msagent.errors import InvalidImage, InvalidInput

ENV_MAX_VOXELS = "MSAGENT_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 2**29
#: the server keeps several volumes in memory, so it accepts less by default (512**3 voxels).
DEFAULT_SERVER_MAX_VOXELS = 2**27


def max_voxels_limit(max_voxels: int | None = None, default: int = DEFAULT_MAX_VOXELS) -> int:
    """``max_voxels``, else ``$MSAGENT_MAX_VOXELS``, else ``default``."""
    if max_voxels is not None:
        value: int | str = max_voxels
    else:
        value = os.environ.get(ENV_MAX_VOXELS, default)
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{ENV_MAX_VOXELS}={value!r} is not a whole number of voxels") from None
    if limit < 1:
        raise InvalidInput(f"the voxel limit must be at least 1, got {limit}")
    return limit


def check_voxels(shape: Sequence[int], itemsize: int, what: str,
                 max_voxels: int | None = None) -> int:
    """Refuse ``shape`` (from a header) when it is empty or over the voxel limit; return the
    voxel count. ``itemsize`` is the bytes per voxel once decoded: the limit counts voxels of
    up to 4 bytes, and wider ones (float64, int64) count in proportion, so the limit bounds
    the decoded bytes too."""
    dims = [int(n) for n in shape]
    if not dims or any(n < 1 for n in dims):
        raise InvalidImage(f"{what} declares the shape {tuple(dims)}: an empty volume")
    count = math.prod(dims)
    limit = max_voxels_limit(max_voxels)
    if count * max(1.0, itemsize / 4) > limit:
        raise InvalidImage(
            f"{what} declares {' × '.join(map(str, dims))} = {count:,} voxels "
            f"({count * itemsize / 2**20:,.0f} MiB decoded), over the limit of {limit:,} "
            "(voxels of up to 4 bytes; wider ones count in proportion); "
            f"crop or downsample it, or raise the limit ({ENV_MAX_VOXELS}, or "
            "msagent serve --max-voxels)")
    return count
