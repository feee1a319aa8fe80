"""verl's own RLHFDataset and MultiTurnSFTDataset load the parquet files we build."""

from __future__ import annotations

import numpy as np
import pytest
from msagent import protocol
from omegaconf import OmegaConf

from msagent_training.episode import decode_mask
from msagent_training.testing import png_array

IMAGE_PAD = "<|image_pad|>"
TOKENS_PER_IMAGE = (512 // 32) ** 2  # 16-px patches, 2×2 merge


@pytest.fixture(scope="module")
def rl_dataset(parquet_dir, tiny_processor, tmp_path_factory):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer, processor = tiny_processor
    config = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 1024,
                               "filter_overlong_prompts": True, "filter_overlong_prompts_workers": None,
                               "image_patch_size": 16, "return_raw_chat": True,
                               "cache_dir": str(tmp_path_factory.mktemp("verl-cache"))})
    return RLHFDataset(str(parquet_dir / "rl.parquet"), tokenizer, config, processor)


@pytest.fixture(scope="module")
def sft_dataset(parquet_dir, tiny_processor):
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    tokenizer, processor = tiny_processor
    config = OmegaConf.create({"messages_key": "messages", "pad_mode": "no_padding",
                               "max_length": 4096, "truncation": "error"})
    return MultiTurnSFTDataset(str(parquet_dir / "sft.parquet"), tokenizer, config, processor)


def test_rl_rows_load_in_rlhf_dataset(rl_dataset, cases):
    assert len(rl_dataset) == len(cases)  # none filtered as over-long
    for item, case in zip(rl_dataset, cases, strict=True):
        system, user = item["raw_prompt"]
        # verl turns the system text into one text part; the template renders both alike
        assert system == {"role": "system",
                          "content": [{"type": "text", "text": protocol.SYSTEM_PROMPT}]}
        image_part, text_part = user["content"]
        assert image_part["type"] == "image" and image_part["image"].size == (512, 512)
        assert np.array_equal(np.asarray(image_part["image"].convert("RGB")),
                              np.asarray(protocol.policy_image(case.image)))
        assert text_part == {"type": "text", "text": protocol.first_user_text(case.target)}
        assert item["agent_name"] == "msagent" and item["index"] == item["extra_info"]["index"]
        kwargs = item["tools_kwargs"]
        assert set(kwargs) == {"add_bbox", "add_point", "stop_action"}
        for name in ("add_bbox", "add_point"):
            create = kwargs[name]["create_kwargs"]
            assert create["case_id"] == case.id and create["target"] == case.target
            assert np.array_equal(png_array(create["image"]["bytes"]), case.image)
            assert np.array_equal(decode_mask(create["ground_truth"]), case.ground_truth)
        assert kwargs["stop_action"]["create_kwargs"]["image"] is None


def test_sft_rows_load_with_loss_on_assistant_tokens_only(sft_dataset, expert_runs, tiny_processor):
    tokenizer, _ = tiny_processor
    image_pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    for index, (_, trajectory) in enumerate(expert_runs):
        item = sft_dataset[index]
        ids, loss = item["input_ids"], item["loss_mask"].bool()
        replies = [s.raw_text for s in trajectory.steps if s.action is not None and s.error is None]
        trained = tokenizer.decode(ids[loss].tolist())
        assert trained == "".join(reply + "<|im_end|>\n" for reply in replies)
        assert not (ids[loss] == image_pad).any()
        images = 1 + sum(1 for s in trajectory.steps if s.executed)
        assert int((ids == image_pad).sum()) == images * TOKENS_PER_IMAGE
        grid = item["multi_modal_inputs"]["image_grid_thw"]
        assert grid.tolist() == [[1, 32, 32]] * images
        assert item["position_ids"].shape == (4, ids.shape[0])  # text + 3 M-RoPE rows


def test_sft_and_rl_render_the_first_turn_identically(sft_dataset, rl_dataset, tiny_processor):
    """The RL prompt tokens (verl's continuous-token builder) are a prefix of the SFT chat."""
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    tokenizer, processor = tiny_processor
    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen3_vl",
                                              processor=processor)
    raw = rl_dataset[0]["raw_prompt"]
    images = [part["image"] for part in raw[1]["content"] if part["type"] == "image"]
    prompt_ids = builder.build_initial_tokens(raw, images=images)
    sft_ids = sft_dataset[0]["input_ids"].tolist()
    generation_prompt = tokenizer.encode("<|im_start|>assistant\n")
    assert prompt_ids == sft_ids[:len(prompt_ids)]
    assert prompt_ids[-len(generation_prompt):] == generation_prompt


def test_cli_builds_rl_parquet_from_a_dataset_folder(cases, tmp_path):
    import pyarrow.parquet as pq
    from msagent.datasets import write_folder
    from PIL import Image

    from msagent_training.data.__main__ import main

    rows = []
    for case in cases:
        Image.fromarray(case.image).save(tmp_path / f"{case.id}.png")
        Image.fromarray(case.ground_truth.astype(np.uint8) * 255).save(tmp_path / f"{case.id}_m.png")
        rows.append({"image": f"{case.id}.png", "mask": f"{case.id}_m.png", "target": case.target})
    write_folder(tmp_path, rows)
    out = tmp_path / "out" / "rl.parquet"
    assert main(["rl", "--dataset", str(tmp_path), "--out", str(out), "--limit", "2"]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 2 and set(table.column("agent_name").to_pylist()) == {"msagent"}
    assert table.column("extra_info").to_pylist()[1]["target"] == cases[1].target
    assert main(["rl", "--out", str(out)]) == 2  # needs a source
