"""KV reuse: the cache extended turn by turn equals a full prefill of the same conversation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from msagent_qwen import chat, kv

from msagent import protocol
from msagent.policies.base import Episode
from msagent.types import Action, Step

BOX = ('The target is in the centre.\n<tool_call>\n{"name": "add_bbox", "arguments": '
       '{"bbox_2d": [300, 280, 720, 800]}}\n</tool_call>')
POINT = ('<tool_call>\n{"name": "add_point", "arguments": {"point_2d": [500, 560], '
         '"point_type": "negative"}}\n</tool_call>')


def full_prefill(policy, episode, extra=()):
    """(input ids, next-token logits) of the standard transformers path on the whole
    conversation (plus ``extra`` text tokens): the processor's tensors, positions computed by
    the model itself."""
    messages = protocol.build_messages(episode)
    text = chat.render(policy.processor, messages)
    inputs = policy.processor(text=[text], images=chat.images_of(messages), return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    if extra:
        tail = torch.tensor([list(extra)])
        inputs["input_ids"] = torch.cat([inputs["input_ids"], tail], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(tail, dtype=inputs["mm_token_type_ids"].dtype)], 1)
    with torch.inference_mode():
        out = policy.model(**inputs, use_cache=False, logits_to_keep=1)
    return ids, out.logits[0, -1].float()


def accept(episode, text, action, mask):
    episode.steps.append(Step(len(episode.steps), text, action, mask=mask, score=0.9))


def force_reply(monkeypatch, policy, text):
    """Make the next generation emit ``text`` (then end of turn) through the real decode loop."""
    queue = policy.tokenizer.encode(text, add_special_tokens=False) + [policy.stop_ids[-1]]
    monkeypatch.setattr(kv, "pick", lambda *a, **k: queue.pop(0))
    monkeypatch.setattr(policy, "max_new_tokens", len(queue))


def test_mrope_positions_match_the_models_own(policies, family, phantom):
    policy = policies[family]
    episode = Episode("pos", phantom[0], "blob", 5)
    messages = protocol.build_messages(episode)
    messages += [{"role": "assistant", "content": "x"},
                 protocol.user_message(protocol.policy_image(phantom[0], phantom[1]),
                                       protocol.FOLLOW_UP_TEXT)]
    inputs = policy.processor(text=[chat.render(policy.processor, messages)],
                              images=chat.images_of(messages), return_tensors="pt")
    expected, _ = policy.model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"])
    ids = inputs["input_ids"][0].tolist()
    cut = len(ids) - ids[::-1].index(151652) - 1  # before the 2nd image's <|vision_start|>
    first, nxt = kv.mrope_positions(ids[:cut], inputs["image_grid_thw"][:1],
                                    image_token_id=policy.model.config.image_token_id,
                                    merge_size=2)
    second, end = kv.mrope_positions(ids[cut:], inputs["image_grid_thw"][1:],
                                     image_token_id=policy.model.config.image_token_id,
                                     merge_size=2, start=nxt)
    assert torch.equal(torch.cat([first, second], dim=1), expected[:, 0])
    assert end == int(expected.max()) + 1


def test_reused_cache_equals_full_prefill_and_prefills_only_the_delta(policies, family, phantom,
                                                                      monkeypatch):
    policy = policies[family]
    image, mask = phantom
    episode = Episode(f"kv-{family}", image, "blob", 5)
    force_reply(monkeypatch, policy, BOX)
    first = policy.act(episode)
    assert first.text == BOX and first.usage["kv_reused"] is False
    state = policy._states[episode.id]
    context_1 = first.usage["context_tokens"]
    assert first.usage["prompt_tokens"] == context_1

    accept(episode, first.text, protocol.parse_action(first.text), mask)
    force_reply(monkeypatch, policy, POINT)
    second = policy.act(episode)
    ids, logits = full_prefill(policy, episode)
    reply_tokens = len(policy.tokenizer.encode(BOX, add_special_tokens=False))
    assert second.usage["kv_reused"] is True
    assert second.usage["context_tokens"] == len(ids)
    # only the delta: <|im_end|>\n<|im_start|>user\n + overlay image + text + generation prompt
    assert second.usage["prompt_tokens"] == len(ids) - context_1 - reply_tokens
    assert second.usage["prompt_tokens"] < 0.5 * len(ids)
    assert state.session.ids[:len(ids)] == ids
    torch.testing.assert_close(state.prompt_mark.logits, logits, atol=1e-4, rtol=1e-4)

    # third turn: the model's own (unscripted) reply, then accepted as a point
    monkeypatch.undo()
    third_mask = mask.copy()
    third_mask[:, :100] = False
    accept(episode, second.text, protocol.parse_action(second.text), third_mask)
    third = policy.act(episode)
    ids, logits = full_prefill(policy, episode)
    assert third.usage["context_tokens"] == len(ids) and state.session.ids[:len(ids)] == ids
    torch.testing.assert_close(state.prompt_mark.logits, logits, atol=1e-4, rtol=1e-4)
    total = first.usage["prompt_tokens"] + second.usage["prompt_tokens"] + third.usage["prompt_tokens"]
    assert total <= len(ids)

    # a rejected reply is rolled back: nothing prefilled, the same prompt again
    episode.steps.append(Step(len(episode.steps), third.text, error="no tool call"))
    episode.feedback = "no tool call"
    retry = policy.act(episode)
    assert retry.usage["prompt_tokens"] == 0 and retry.usage["sampled"] is True
    assert retry.usage["context_tokens"] == len(ids)
    assert state.session.ids[:len(ids)] == ids
    # the cropped cache continues exactly like a full prefill
    state.session.rollback(state.prompt_mark)
    token = policy.tokenizer.encode(" ok", add_special_tokens=False)
    cached = state.session.feed(token)
    _, reference = full_prefill(policy, episode, extra=token)
    torch.testing.assert_close(cached, reference, atol=1e-4, rtol=1e-4)
    policy.end_episode(episode)
    assert episode.id not in policy._states


@pytest.mark.parametrize("lead", ["stop", "\n\n"])
def test_a_reply_sampled_in_non_canonical_tokens_is_refed_canonically(policies, phantom,
                                                                      monkeypatch, lead):
    """'stop' sampled letter by letter, or a reply starting with newlines (which merge with
    the generation prompt's newline in a full tokenization): the cache still equals a full
    prefill of the re-rendered conversation."""
    policy = policies["qwen3_vl"]
    image, mask = phantom
    episode = Episode("canon", image, "blob", 5)
    pieces = [policy.tokenizer.convert_tokens_to_ids(c) for c in "stop"] if lead == "stop" else \
        policy.tokenizer.encode(lead, add_special_tokens=False)
    queue = pieces + policy.tokenizer.encode(POINT, add_special_tokens=False) + [policy.stop_ids[-1]]
    monkeypatch.setattr(kv, "pick", lambda *a, **k: queue.pop(0))
    monkeypatch.setattr(policy, "max_new_tokens", len(queue))
    first = policy.act(episode)
    assert first.text == lead + POINT
    accept(episode, first.text, Action("add_point", {"point_2d": [500, 560],
                                                     "point_type": "negative"}), mask)
    queue[:] = [policy.stop_ids[-1]]
    second = policy.act(episode)
    ids, logits = full_prefill(policy, episode)
    state = policy._states[episode.id]
    assert state.session.ids == ids and second.usage["context_tokens"] == len(ids)
    assert second.usage["kv_reused"] is True
    torch.testing.assert_close(state.prompt_mark.logits, logits, atol=1e-4, rtol=1e-4)
    policy.end_episode(episode)


def test_without_reuse_every_turn_prefills_the_whole_conversation(tiny_checkpoints, phantom,
                                                                  monkeypatch):
    import msagent

    policy = msagent.load_policy("qwen", model=str(tiny_checkpoints["qwen3_vl"]), device="cpu",
                                 reuse_kv=False, max_new_tokens=4, max_pixels=128 * 128)
    image, mask = phantom
    episode = Episode("noreuse", image, "blob", 5)
    force_reply(monkeypatch, policy, BOX)
    first = policy.act(episode)
    accept(episode, first.text, protocol.parse_action(first.text), mask)
    force_reply(monkeypatch, policy, POINT)
    second = policy.act(episode)
    ids, _ = full_prefill(policy, episode)
    assert second.usage["kv_reused"] is False and second.usage["prompt_tokens"] == len(ids)
    assert policy.open_episodes == 0


def test_greedy_decoding_is_deterministic_and_bounded(policies, phantom):
    policy = policies["qwen2_5_vl"]
    replies = []
    for n in range(2):
        episode = Episode(f"det{n}", phantom[0], "blob", 5)
        replies.append(policy.act(episode))
        policy.end_episode(episode)
    assert replies[0].text == replies[1].text
    assert replies[0].usage["completion_tokens"] <= policy.max_new_tokens + 1
    assert np.isfinite(replies[0].usage["latency_s"])
