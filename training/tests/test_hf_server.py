"""The ``hf`` rollout engine's server, in process, on a tiny random Qwen3-VL: vLLM's max-token
rule, stop ids, log-probs of the processed logits (checked against the model's own forward),
images against the prompt's image-pad runs, and all-or-nothing weight updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msagent_training.hf_server import (
    HFGenerationServer,
    RolloutInputError,
    WeightUpdateError,
    image_pad_runs,
    max_new_tokens,
    weights_digest,
)

IM_END = 151645


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import transformers

    from msagent_training.tiny import build_tiny_qwen3_vl

    path = build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-hf"), seed=3)
    model = transformers.AutoModelForImageTextToText.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa").eval()
    return model, transformers.AutoProcessor.from_pretrained(path)


def server_for(tiny, **kwargs):
    model, processor = tiny
    options = dict(prompt_length=512, response_length=24)
    options.update(kwargs)
    return HFGenerationServer(model, processor, **options)


def text_prompt(processor, text="Segment the bright ellipse."):
    messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[rendered], return_tensors="pt")["input_ids"][0].tolist()


def image_prompt(processor, size=64):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = processor(text=[rendered], images=[image], return_tensors="pt")["input_ids"][0].tolist()
    return ids, image


@pytest.mark.parametrize("prompt_len", [1, 100, 511, 512, 700, 1023])
def test_max_new_tokens_is_vllms_rule(prompt_len):
    # verl's vllm_async_server.generate: min(response, prompt + response - len(prompt)), >= 1,
    # within max_model_len - len(prompt)
    expected = max(1, min(min(300, 512 + 300 - prompt_len), 1024 - prompt_len))
    assert max_new_tokens(prompt_len, prompt_length=512, response_length=300,
                          max_model_len=1024) == expected


def test_an_explicit_max_tokens_replaces_the_budget_within_the_room():
    assert max_new_tokens(100, prompt_length=512, response_length=300, max_model_len=1024,
                          requested=700) == 700
    assert max_new_tokens(100, prompt_length=512, response_length=300, max_model_len=1024,
                          requested=5000) == 924
    assert max_new_tokens(100, prompt_length=512, response_length=300, max_model_len=1024,
                          requested=0) == 1


def test_malformed_prompts_are_refused(tiny):
    server = server_for(tiny)
    for ids in ([], [-1, 5], [151936]):
        with pytest.raises(RolloutInputError, match="token ids"):
            server.generate(ids, {"temperature": 0})
    with pytest.raises(RolloutInputError, match="audio"):
        server.generate([1, 2], {"temperature": 0}, audio_data=[b"x"])


def test_a_prompt_that_fills_the_context_is_refused():
    with pytest.raises(RolloutInputError, match="max_model_len"):
        max_new_tokens(1024, prompt_length=512, response_length=300, max_model_len=1024)


def test_image_pad_runs_are_counted_in_order():
    assert image_pad_runs([1, 9, 9, 2, 9, 3, 9, 9, 9], 9) == [2, 1, 3]
    assert image_pad_runs([], 9) == []


def test_log_probs_are_the_processed_logits_of_the_returned_tokens(tiny):
    model, processor = tiny
    ids = text_prompt(processor)
    torch.manual_seed(0)
    shipped = model.generation_config
    try:  # sampling defaults a checkpoint may ship must not apply on top of verl's request
        model.generation_config = shipped.__class__(**shipped.to_dict())
        model.generation_config.update(top_k=2, top_p=0.3, min_p=0.5, no_repeat_ngram_size=1)
        server = server_for(tiny)
        output = server.generate(ids, {"temperature": 0.7, "top_p": 1.0, "top_k": -1, "logprobs": True})
    finally:
        model.generation_config = shipped
    assert 1 <= len(output.token_ids) <= 24 and len(output.log_probs) == len(output.token_ids)
    assert output.stop_reason == "completed"
    with torch.no_grad():  # the actor's view: one forward over prompt + response, logits / T
        logits = model(input_ids=torch.tensor([ids + output.token_ids])).logits[0].float()
    response_logits = logits[len(ids) - 1:-1] / 0.7
    expected = torch.log_softmax(response_logits, -1).gather(-1, torch.tensor(output.token_ids)[:, None])
    np.testing.assert_allclose(output.log_probs, expected[:, 0].numpy(), atol=2e-4)


def test_image_prompts_use_the_actors_multimodal_positions(tiny):
    # verl's actor computes Qwen-VL's multimodal RoPE from the image-token mask; the server
    # must generate at the same positions (transformers falls back to text-only ones silently)
    model, processor = tiny
    ids, image = image_prompt(processor)
    output = server_for(tiny).generate(ids, {"temperature": 1.0, "top_k": -1, "logprobs": True},
                                       image_data=[image])
    tokens = torch.tensor([ids + output.token_ids])
    pixels = processor.image_processor(images=[image], return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=tokens, pixel_values=pixels["pixel_values"],
                       image_grid_thw=pixels["image_grid_thw"],
                       mm_token_type_ids=(tokens == model.config.image_token_id).long()).logits[0]
    expected = torch.log_softmax(logits[len(ids) - 1:-1].float(), -1).gather(
        -1, torch.tensor(output.token_ids)[:, None])[:, 0]
    np.testing.assert_allclose(output.log_probs, expected.numpy(), atol=2e-4)


def test_greedy_is_deterministic_and_stops_on_a_stop_id(tiny):
    model, processor = tiny
    server = server_for(tiny)
    ids = text_prompt(processor)
    greedy = server.generate(ids, {"temperature": 0, "logprobs": False})
    assert server.generate(ids, {"temperature": 0}).token_ids == greedy.token_ids
    assert greedy.log_probs is None
    stop = greedy.token_ids[2]  # a token the greedy reply emits: generation must end on it
    stopped = server.generate(ids, {"temperature": 0, "stop_token_ids": [stop]})
    first = greedy.token_ids.index(stop)
    assert stopped.token_ids == greedy.token_ids[:first + 1]


def test_the_response_cap_and_the_multi_turn_budget(tiny):
    _, processor = tiny
    ids = text_prompt(processor)
    never = {"temperature": 0, "stop_token_ids": []}
    server = server_for(tiny, response_length=5)
    server.eos_ids = []  # no stop at all: the cap alone ends generation
    assert len(server.generate(ids, never).token_ids) == 5
    budget = server_for(tiny, prompt_length=len(ids) - 3, response_length=8)
    budget.eos_ids = []
    assert len(budget.generate(ids, never).token_ids) == 5  # 8 - 3 used by the prompt
    assert len(budget.generate(ids, {**never, "max_tokens": 2}).token_ids) == 2  # vLLM: explicit wins


def test_images_must_match_the_image_pad_runs(tiny):
    model, processor = tiny
    server = server_for(tiny)
    ids, image = image_prompt(processor)
    assert server.generate(ids, {"temperature": 0}, image_data=[image]).token_ids
    pad = model.config.image_token_id
    first = ids.index(pad)
    with pytest.raises(RolloutInputError, match="do not match"):
        server.generate(ids[:first] + ids[first + 1:], {"temperature": 0}, image_data=[image])
    with pytest.raises(RolloutInputError, match="no images"):
        server.generate(ids, {"temperature": 0}, image_data=[])
    with pytest.raises(RolloutInputError, match="do not match"):
        server.generate(text_prompt(processor), {"temperature": 0}, image_data=[image])
    with pytest.raises(RolloutInputError, match="videos"):
        server.generate(ids, {"temperature": 0}, image_data=[image], video_data=[image])


def test_weight_updates_are_all_or_nothing(tiny):
    model, processor = tiny
    server = server_for(tiny, weights_digest_log=True)
    before = weights_digest(model.state_dict().items())
    name = "lm_head.weight"
    with pytest.raises(WeightUpdateError, match="does not have"):
        server.update_weights({name: torch.zeros_like(model.state_dict()[name]),
                               "model.no_such.weight": torch.zeros(2)})
    with pytest.raises(WeightUpdateError, match="wrong shape"):
        server.update_weights({name: torch.zeros(3, 3)})
    assert weights_digest(model.state_dict().items()) == before  # nothing was applied
    ids = text_prompt(processor)
    old = server.generate(ids, {"temperature": 0}).token_ids
    original = model.state_dict()[name].clone()
    try:
        new = original.roll(1, dims=0)
        report = server.update_weights({name: new}, global_steps=7)
        assert torch.equal(model.state_dict()[name], new)
        assert report["tensors"] == 1 and report["global_steps"] == 7
        assert report["digest"] == weights_digest(model.state_dict().items()) != before
        output = server.generate(ids, {"temperature": 0})
        assert output.extra_fields["global_steps"] == 7 and output.token_ids != old
    finally:
        server.update_weights({name: original})


def test_abort_returns_an_aborted_output_until_resumed(tiny):
    _, processor = tiny
    server = server_for(tiny)
    ids = text_prompt(processor)
    server.abort_all_requests()
    assert server.generate(ids, {"temperature": 0}).stop_reason == "aborted"
    server.resume_generation()
    assert server.generate(ids, {"temperature": 0}).stop_reason == "completed"


def test_weights_digest_sees_every_bit():
    a = {"w": torch.zeros(4), "b": torch.ones(2), "s": torch.tensor(0.5)}
    b = {"w": torch.zeros(4), "b": torch.ones(2), "s": torch.tensor(0.5)}
    assert weights_digest(a.items()) == weights_digest(reversed(list(b.items())))
    b["w"][0] = 1e-30
    assert weights_digest(a.items()) != weights_digest(b.items())
