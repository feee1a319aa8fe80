"""verl issue #7899, reproduced with verl's own functions, and msagent's guard.

The batch goes through what verl's actor does with it: ``left_right_2_no_padding``
(verl/workers/utils/padding.py, where the nested position ids are built),
``maybe_fix_3d_position_ids`` (verl's workaround), ``chunk_tensordict`` (the micro-batches of
``prepare_micro_batches``) and ``to_padded_tensor`` to (B, 4, L) (the FSDP engine's no-padding
model inputs, verl/workers/engine/fsdp/transformer_impl.py:1293). Findings, per micro-batch:

- samples of different lengths: correct positions;
- two or more samples, all of one length: the micro-batch split raises (old log-probs), and
  ``unbind`` raises the "split_with_sizes" error of the issue (``update_actor``);
- one sample (a batch or a data-parallel share of one): **no error, wrong positions** — the
  log-probs are computed at other positions (measured below on the tiny Qwen3-VL);
- after :func:`msagent_training.position_ids.normalize_position_ids`: correct in every case.
"""

from __future__ import annotations

import pytest
import torch

from msagent_training.position_ids import PositionIdsLayoutError, canonical, normalize_position_ids

COMPONENTS = 4


def batch(lengths, total=8, response=3):
    """A left-right padded batch like the trainer's, with distinct mRoPE positions per sample."""
    from tensordict import TensorDict

    size = len(lengths)
    ids = torch.randint(0, 1000, (size, total), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(size, total, dtype=torch.long)
    positions = torch.zeros(size, COMPONENTS, total, dtype=torch.long)
    for i, length in enumerate(lengths):
        mask[i, total - length:] = 1
        for c in range(COMPONENTS):
            positions[i, c, total - length:] = torch.arange(length) + 10 * c + 100 * i
    data = TensorDict({"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                       "response_mask": torch.ones(size, response)}, batch_size=[size])
    truth = [positions[i, :, total - length:] for i, length in enumerate(lengths)]
    return data, truth


def engine_positions(data, micro_batch_size, guard):
    """The (B, 4, L) position ids verl's FSDP engine feeds the model, per micro-batch."""
    from verl.utils import tensordict_utils as tu
    from verl.utils.tensordict_utils import maybe_fix_3d_position_ids
    from verl.workers.utils.padding import left_right_2_no_padding

    nested = left_right_2_no_padding(data.clone())
    if guard:
        normalize_position_ids(nested)
    maybe_fix_3d_position_ids(nested)
    results = []
    for micro in tu.chunk_tensordict(nested, len(data) // micro_batch_size):
        maybe_fix_3d_position_ids(micro)
        longest = int(micro["input_ids"].offsets().diff().max())
        results.append(torch.nested.to_padded_tensor(
            micro["position_ids"], padding=0, output_size=(len(micro), COMPONENTS, longest)))
    return results


def matches(padded_micro_batches, truth, micro_batch_size):
    for index, sample in enumerate(truth):
        padded = padded_micro_batches[index // micro_batch_size][index % micro_batch_size]
        if not torch.equal(padded[:, :sample.shape[1]], sample):
            return False
    return True


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_mixed_lengths_are_right_with_or_without_the_guard(micro):
    data, truth = batch([5, 7, 6, 8])
    assert matches(engine_positions(data, micro, guard=False), truth, micro)
    assert matches(engine_positions(data, micro, guard=True), truth, micro)


def test_a_single_sample_gets_wrong_positions_silently():
    # a batch (or a data-parallel rank's share) of one sample: "equal lengths" trivially
    data, truth = batch([6])
    assert not matches(engine_positions(data, 1, guard=False), truth, 1)  # verl: no error
    assert matches(engine_positions(data, 1, guard=True), truth, 1)


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_equal_lengths_fail_in_the_micro_batch_split(micro):
    data, truth = batch([6, 6, 6, 6])
    with pytest.raises(RuntimeError):
        engine_positions(data, micro, guard=False)
    assert matches(engine_positions(data, micro, guard=True), truth, micro)


def test_update_actor_split_error_of_the_issue_and_the_guard():
    from verl.utils.tensordict_utils import maybe_fix_3d_position_ids
    from verl.workers.utils.padding import left_right_2_no_padding

    data, truth = batch([6, 6])
    nested = left_right_2_no_padding(data.clone())
    maybe_fix_3d_position_ids(nested)  # verl's train_mini_batch, first line
    with pytest.raises(RuntimeError):
        nested["position_ids"].unbind()
    guarded = normalize_position_ids(left_right_2_no_padding(data.clone()))
    maybe_fix_3d_position_ids(guarded)
    assert all(torch.equal(a, b) for a, b in zip(guarded["position_ids"].unbind(), truth, strict=True))


def test_canonical_input_passes_through_unchanged_and_unknown_layouts_are_refused():
    from verl.workers.utils.padding import left_right_2_no_padding

    data, _ = batch([5, 7])
    nested = left_right_2_no_padding(data.clone())["position_ids"]
    assert canonical(nested) is nested
    flat = torch.arange(6)
    assert canonical(flat) is flat
    components_differ = torch.nested.as_nested_tensor([torch.zeros(3, 2), torch.zeros(5, 2)],
                                                      layout=torch.jagged)
    with pytest.raises(PositionIdsLayoutError):
        canonical(components_differ)
    broken = torch.nested.nested_tensor_from_jagged(torch.zeros(5, 9), torch.tensor([0, 2, 4]),
                                                    jagged_dim=2)
    with pytest.raises(PositionIdsLayoutError, match="7899"):
        canonical(broken)


def test_a_broken_layout_that_looks_canonical_is_recognised_by_the_lengths():
    # two samples of 8 tokens, 4 components: (8, 8) values whose ragged dim verl already set to
    # 2 pass the shape test; the input ids' lengths tell them apart
    from verl.utils.tensordict_utils import maybe_fix_3d_position_ids
    from verl.workers.utils.padding import left_right_2_no_padding

    data, truth = batch([8, 8])
    nested = left_right_2_no_padding(data.clone())
    maybe_fix_3d_position_ids(nested)
    assert canonical(nested["position_ids"]) is nested["position_ids"]  # fooled without lengths
    normalize_position_ids(nested)
    assert all(torch.equal(a, b) for a, b in zip(nested["position_ids"].unbind(), truth, strict=True))


def test_wrong_positions_change_the_old_log_probs(tmp_path):
    """What the silent case costs: the tiny Qwen3-VL's log-probs of the same tokens at verl's
    positions (a one-sample batch) against the right ones."""
    import transformers

    from msagent_training.tiny import build_tiny_qwen3_vl

    path = build_tiny_qwen3_vl(tmp_path / "tiny", seed=1)
    model = transformers.AutoModelForImageTextToText.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa").eval()
    data, truth = batch([6])
    ids = data["input_ids"][:, 2:]

    def log_probs(positions):
        with torch.no_grad():
            logits = model(input_ids=ids, position_ids=positions.transpose(0, 1)).logits
        return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]

    right = log_probs(torch.stack(truth))
    verl = log_probs(torch.cat(engine_positions(data, 1, guard=False))[:, :, :6])
    guarded = log_probs(torch.cat(engine_positions(data, 1, guard=True))[:, :, :6])
    assert torch.allclose(guarded, right, atol=1e-6)
    difference = (verl - right).abs().max().item()
    print(f"\nold log-probs at verl's positions differ from the right ones by up to {difference:.3g}")
    assert difference > 1e-3
