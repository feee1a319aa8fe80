"""Text prompts: template, offline tokenizer resolution, token ids → embedding."""

import pytest
import torch
from msagent_imisnet import text

from msagent.errors import WeightsNotFound


def test_template_normalises_targets_like_upstream_names():
    assert text.normalize_target(" Left_adrenal-gland  ") == "left adrenal gland"
    assert text.prompt_text("Liver.") == "A segmentation area of a liver."


@pytest.fixture
def offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.delenv(text.ENV_TOKENIZER, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_tokenizer_from_object_folder_or_env(offline, monkeypatch, tokenizer):
    assert text.resolve_tokenizer(tokenizer) is tokenizer
    folder = offline / "clip-tokenizer"
    tokenizer.save_pretrained(folder)
    ids = text.resolve_tokenizer(str(folder))("a liver")["input_ids"]
    assert ids == tokenizer("a liver")["input_ids"]
    monkeypatch.setenv(text.ENV_TOKENIZER, str(folder))
    assert text.resolve_tokenizer()("a liver")["input_ids"] == ids


def test_missing_tokenizer_is_none_unless_required(offline, monkeypatch):
    assert text.resolve_tokenizer() is None
    with pytest.raises(WeightsNotFound, match="openai/clip-vit-base-patch32"):
        text.resolve_tokenizer(required=True)
    with pytest.raises(WeightsNotFound, match="from tokenizer="):
        text.resolve_tokenizer(str(offline / "nowhere"))
    monkeypatch.setenv(text.ENV_TOKENIZER, str(offline))  # a folder without tokenizer files
    with pytest.raises(WeightsNotFound, match=r"\$MSAGENT_IMISNET_TOKENIZER"):
        text.resolve_tokenizer()


def test_tokenize_templates_pads_and_ends_with_the_end_token(tokenizer):
    ids, mask = text.tokenize(tokenizer, ["liver", "left kidney"], torch.device("cpu"))
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert (ids[:, 0] == 49406).all()
    lengths = mask.sum(1)
    assert ids[0, lengths[0] - 1] == ids[1, lengths[1] - 1] == 49407
    long_ids, _ = text.tokenize(tokenizer, ["x" * 500], torch.device("cpu"))
    assert long_ids.shape[1] == text.MAX_TOKENS and long_ids[0, -1] == 49407


def test_text_embedding_pools_at_the_end_token(reference):
    model = reference[0]
    a = torch.tensor([[49406, 1, 2, 49407, 49407]])
    b = torch.tensor([[49406, 1, 2, 49407, 5]])  # differs only after the end token
    with torch.inference_mode():
        ea, eb = model.embed_text(a), model.embed_text(b)
        ec = model.embed_text(torch.tensor([[49406, 3, 2, 49407, 49407]]))
    assert ea.shape == (1, 768)
    torch.testing.assert_close(ea, eb)  # causal attention: later tokens cannot matter
    assert not torch.allclose(ea, ec)
