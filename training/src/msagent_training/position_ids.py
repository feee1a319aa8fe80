"""Canonical 3-D (mRoPE) position ids for verl's V1 trainer: a guard against verl issue #7899.

verl carries each sample's Qwen-VL position ids, shape (C, L_i) with C = 4 components, as one
jagged nested tensor. ``torch.nested.as_nested_tensor`` (verl/workers/utils/padding.py:67)
picks the ragged dimension from the data: for samples of different lengths it is the sequence
(canonical: ``_ragged_idx == 2``, values (C, ΣL)); when *every* sample of the batch has the
same length it is the component dimension (``_ragged_idx == 1``, values (B·C, L), offsets of
step C). verl's ``maybe_fix_3d_position_ids`` (verl/utils/tensordict_utils.py:910) then sets
``_ragged_idx = 2`` without looking, which leaves the second layout inconsistent: the next
``unbind`` fails ("split_with_sizes expects split_sizes to sum exactly to ...") in
``update_actor``. Upstream: verl-project/verl#7899 (open; fixes proposed in #7901, #7767).

:func:`normalize_position_ids` rebuilds the canonical layout from the component-packed one
(before or after verl's blind fix, told apart by the input ids' lengths) before verl's code
sees the batch; canonical input passes through unchanged, any other layout is refused. msagent's worker
(:class:`msagent_training.cpu_trainer.GuardedTrainingWorker`) calls it on every batch, on CPUs
and GPUs alike. What verl does without it is measured in ``training/tests/test_position_ids.py``
and written down in ``training/README.md``.
"""

from __future__ import annotations

from typing import Any

import torch

KEY = "position_ids"


class PositionIdsLayoutError(ValueError):
    """Nested 3-D position ids in a layout that is neither canonical nor a known broken one."""


def canonical(position_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The canonical jagged layout (ragged sequence dimension) of 3-D nested position ids.

    ``lengths`` are the samples' token counts (the offsets of the batch's nested ``input_ids``);
    with them a broken layout that merely looks canonical is recognised too.
    """
    if not (position_ids.is_nested and position_ids.dim() == 3):
        return position_ids
    values, offsets = position_ids.values(), position_ids.offsets()
    batch = offsets.numel() - 1
    steps = offsets.diff()
    total = int(offsets[-1])
    lengths_agree = lengths is None or torch.equal(steps.cpu(), lengths.cpu())
    if position_ids._ragged_idx == 2 and values.dim() == 2 and values.shape[1] == total and lengths_agree:
        return position_ids  # canonical
    if values.dim() == 2 and values.shape[0] == total and batch and bool((steps == steps[0]).all()):
        # packed along the components: (B·C, L) with offsets 0, C, 2C, ... (equal lengths)
        components, length = int(steps[0]), values.shape[1]
        if lengths is None or bool((lengths == length).all()):
            samples = values.reshape(batch, components, length)
            return _jagged(samples.permute(1, 0, 2).reshape(components, batch * length),
                           torch.arange(0, batch * length + 1, length, device=offsets.device))
    raise PositionIdsLayoutError(
        f"3-D position ids with values {tuple(values.shape)}, offsets {offsets.tolist()[:8]} and "
        f"ragged dim {position_ids._ragged_idx} match no known layout (verl issue #7899)")


def normalize_position_ids(data: Any) -> Any:
    """Replace ``data["position_ids"]`` (a TensorDict or dict) by its canonical layout."""
    if KEY not in data.keys():
        return data
    ids = data["input_ids"] if "input_ids" in data.keys() else None
    lengths = ids.offsets().diff() if ids is not None and ids.is_nested else None
    fixed = canonical(data[KEY], lengths)
    if fixed is not data[KEY]:
        data[KEY] = fixed
    return data


def _jagged(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return torch.nested.nested_tensor_from_jagged(values.contiguous(), offsets, jagged_dim=2)
