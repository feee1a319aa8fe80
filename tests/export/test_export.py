import io as _io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from msagent import protocol
from msagent.cli import main
from msagent.datasets import make_mni152_dataset, open_dataset
from msagent.errors import InvalidInput
from msagent.export import parse_conversation
from msagent.export.conversation import shown_steps
from msagent.export.job import export_rl_prompts, export_trajectories
from msagent.generation import generate, read_trajectories
from msagent.types import decode_mask

# -- pinned schemas: what verl 0.9 and LLaMA-Factory read ----------------------------------------
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
IMAGES = pa.list_(pa.struct([("bytes", pa.binary())]))
VERL_SFT_SCHEMA = pa.schema([("messages", pa.list_(MESSAGE)), ("images", IMAGES),
                             ("id", pa.string()), ("data_source", pa.string())])
_CREATE = pa.struct([("case_id", pa.string()), ("target", pa.string()),
                     ("image", pa.struct([("bytes", pa.binary())])), ("ground_truth", pa.string())])
_TOOL = pa.struct([("create_kwargs", _CREATE)])
VERL_RL_SCHEMA = pa.schema([
    ("data_source", pa.string()), ("prompt", pa.list_(MESSAGE)), ("images", IMAGES),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
    ("extra_info", pa.struct([
        ("index", pa.int64()), ("case_id", pa.string()), ("target", pa.string()),
        ("dataset", pa.string()), ("modality", pa.string()), ("class", pa.string()),
        ("split", pa.string()), ("image_sha256", pa.string()), ("height", pa.int64()),
        ("width", pa.int64()), ("need_tools_kwargs", pa.bool_()),
        ("tools_kwargs", pa.struct([("add_bbox", _TOOL), ("add_point", _TOOL),
                                    ("stop_action", _TOOL)]))]))])
LLAMAFACTORY_FILE_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object", "required": ["system", "messages", "images"],
        "properties": {
            "system": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 2, "items": {
                "type": "object", "required": ["role", "content"], "additionalProperties": False,
                "properties": {"role": {"enum": ["user", "assistant"]}, "content": {"type": "string"}}}},
            "images": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"\.png$"}},
        }}}
LLAMAFACTORY_INFO_SCHEMA = {
    "type": "object", "additionalProperties": {
        "type": "object", "required": ["file_name", "formatting", "columns", "tags"],
        "properties": {
            "file_name": {"type": "string"}, "formatting": {"const": "sharegpt"},
            "columns": {"type": "object", "required": ["messages", "images"],
                        "properties": {"messages": {"const": "messages"}, "images": {"const": "images"},
                                       "system": {"const": "system"}}},
            "tags": {"type": "object", "required": ["role_tag", "content_tag", "user_tag", "assistant_tag"],
                     "properties": {"role_tag": {"const": "role"}, "content_tag": {"const": "content"},
                                    "user_tag": {"const": "user"}, "assistant_tag": {"const": "assistant"}}}}}}


@pytest.fixture(scope="module")
def trajectory_set(tmp_path_factory, litemedsam):
    """Real LiteMedSAM trajectories on MNI152 slices (117×99, not square), kept and dropped."""
    root = tmp_path_factory.mktemp("export")
    data = make_mni152_dataset(root / "mni", slices=(40,))
    generate(data, root / "set", backbone=litemedsam, shard_size=2, progress=False,
             generator_options={"box_ratio": 1.0, "max_actions": 3, "resamples": 1,
                                "min_final_iou": 0.3})
    records = list(read_trajectories(root / "set"))
    assert len(records) == 3 and any(r.kept for r in records)
    return root / "set", records


def _png(entry) -> np.ndarray:
    return np.asarray(Image.open(_io.BytesIO(entry["bytes"])).convert("RGB"))


def _expected_images(record):
    image = record.image()
    steps = shown_steps(record.trajectory)
    masks = [s.mask for s in steps[:-1] if s.executed]
    return [np.asarray(protocol.policy_image(image, size=512))] + \
        [np.asarray(protocol.policy_image(image, m, 512)) for m in masks]


@pytest.mark.slow
def test_verl_sft_rows_parse_back_into_the_trajectories(trajectory_set, tmp_path):
    source, records = trajectory_set
    summary = export_trajectories(source, tmp_path / "sft", "verl-sft", progress=False)
    kept = [r for r in records if r.kept]
    assert summary.rows == len(kept) and summary.parts == 2
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "sft").glob("part-*.parquet"))])
    assert table.schema == VERL_SFT_SCHEMA
    for row, record in zip(table.to_pylist(), kept):
        assert row["id"] == f"{record.case_id}#0" and row["data_source"] == "msagent/mni152"
        parsed = parse_conversation(row["messages"])
        steps = shown_steps(record.trajectory)
        assert parsed.target == record.trajectory.target
        assert parsed.actions == [s.action for s in steps]  # kind, 0-999 arguments and raw text
        assert row["messages"][0]["content"] == protocol.SYSTEM_PROMPT
        assert row["messages"][1]["content"] == "<image>" + protocol.first_user_text(record.row["target"])
        assert row["messages"][-1]["role"] == "assistant"
        # verl's MultiTurnSFTDataset: one image per <image>, in order
        placeholders = sum(len(re.findall("<image>", m["content"])) for m in row["messages"])
        assert placeholders == len(row["images"]) == parsed.images
        got = [_png(img) for img in row["images"]]
        assert all(img.shape == (512, 512, 3) for img in got)
        assert all(np.array_equal(a, b) for a, b in zip(got, _expected_images(record)))
        for action, step in zip(parsed.actions, steps):  # the documented 0-999 mapping
            if not action.is_stop:
                prompt = protocol.action_to_prompt(action, record.trajectory.image_size)
                assert protocol.action_to_prompt(step.action, (117, 99)) == prompt


@pytest.mark.slow
def test_structured_tool_calls_render_back_to_the_inline_text(trajectory_set, tmp_path):
    source, records = trajectory_set
    export_trajectories(source, tmp_path / "sft", "verl-sft", tool_format="structured", progress=False)
    inline = export_trajectories(source, tmp_path / "inline", "verl-sft", progress=False)
    rows = pq.read_table(tmp_path / "sft" / "part-00000.parquet").to_pylist()
    plain = pq.read_table(inline.out / "part-00000.parquet").to_pylist()
    for row, ref in zip(rows, plain):
        for message, original in zip(row["messages"], ref["messages"]):
            if message["role"] != "assistant":
                assert message["tool_calls"] is None
                continue
            (call,) = message["tool_calls"]
            assert isinstance(call["function"]["arguments"], str)  # JSON text, uniform in parquet
            rendered = (f'{message["content"]}\n<tool_call>\n{{"name": "{call["function"]["name"]}", '
                        f'"arguments": {call["function"]["arguments"]}}}\n</tool_call>')
            assert rendered == original["content"]


@pytest.mark.slow
def test_llamafactory_files_validate_and_parse_back(trajectory_set, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    source, records = trajectory_set
    out = tmp_path / "lf"
    assert main(["export", str(source), "--format", "llamafactory", "--out", str(out), "--quiet"]) == 0
    info = json.loads((out / "dataset_info.json").read_text())
    jsonschema.validate(info, LLAMAFACTORY_INFO_SCHEMA)
    entries = []
    for part in sorted((out / info["msagent_sft"]["file_name"]).glob("part-*.json")):
        data = json.loads(part.read_text())
        jsonschema.validate(data, LLAMAFACTORY_FILE_SCHEMA)
        entries.extend(data)
    kept = [r for r in records if r.kept]
    assert len(entries) == len(kept)
    for entry, record in zip(entries, kept):
        roles = [m["role"] for m in entry["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)  # sharegpt: alternating, user first
        assert sum(m["content"].count("<image>") for m in entry["messages"]) == len(entry["images"])
        parsed = parse_conversation([{"role": "system", "content": entry["system"]}] + entry["messages"])
        assert parsed.actions == [s.action for s in shown_steps(record.trajectory)]
        got = [np.asarray(Image.open(out / p).convert("RGB")) for p in entry["images"]]
        assert all(np.array_equal(a, b) for a, b in zip(got, _expected_images(record)))


@pytest.mark.slow
def test_verl_rl_prompts_from_the_set_and_from_the_dataset_agree(trajectory_set, tmp_path):
    source, records = trajectory_set
    from_set = export_trajectories(source, tmp_path / "rl", "verl-rl", progress=False)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "rl").glob("*.parquet"))])
    assert table.schema == VERL_RL_SCHEMA and from_set.rows == 3
    rows = table.to_pylist()
    for row, record in zip(rows, records):
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["prompt"][1]["content"] == "<image>" + protocol.first_user_text(record.row["target"])
        assert _png(row["images"][0]).shape == (512, 512, 3)
        gt = decode_mask(json.loads(row["reward_model"]["ground_truth"]))
        assert np.array_equal(gt, record.ground_truth())
        extra = row["extra_info"]
        assert extra["case_id"] == record.case_id and extra["target"] == record.row["target"]
        for tool in ("add_bbox", "add_point"):
            create = extra["tools_kwargs"][tool]["create_kwargs"]
            assert np.array_equal(_png(create["image"]), record.image())
            assert create["ground_truth"] == row["reward_model"]["ground_truth"]
        assert extra["tools_kwargs"]["stop_action"]["create_kwargs"]["image"] is None
    dataset = open_dataset(json.loads((source / "manifest.json").read_text())["sources"][0])
    direct = export_rl_prompts(dataset, tmp_path / "rl-direct", progress=False)
    assert pq.read_table(direct.out / "part-00000.parquet").to_pylist() == rows


@pytest.mark.slow
def test_export_resumes_and_refuses_other_settings(trajectory_set, tmp_path):
    source, _ = trajectory_set
    first = export_trajectories(source, tmp_path / "sft", "verl-sft", progress=False)
    (tmp_path / "sft" / "part-00001.parquet").unlink()  # as if interrupted before this part
    again = export_trajectories(source, tmp_path / "sft", "verl-sft", progress=False)
    assert (first.parts_written, again.parts_written, again.rows) == (2, 1, first.rows)
    with pytest.raises(InvalidInput, match="image_size"):
        export_trajectories(source, tmp_path / "sft", "verl-sft", image_size=448, progress=False)
    with pytest.raises(InvalidInput, match="multiple of 32"):
        export_trajectories(source, tmp_path / "other", "verl-sft", image_size=500, progress=False)


# -- --layout upstream: rows upstream MedSAM-Agent's MedSAMDataset, tools and reward read ---------

def _upstream_reader(row: dict, item: int = 0) -> dict:
    """What upstream's MedSAMDataset.__getitem__ takes from a row (RL-verl/recipe/medsam_agent/
    medsam_dataset.py, written from its documented row schema), plus its reward's binarisation
    (medsam_reward.py: masks > 127)."""
    target = row["extra_info"]["target_description"]            # KeyError on msagent's layout
    originals = [Image.open(_io.BytesIO(entry["bytes"])).convert("RGB")
                 for entry in row["images"] if isinstance(entry, dict) and "bytes" in entry]
    policy = [image.resize((512, 512), Image.BILINEAR) for image in originals]
    truth = row["reward_model"]["ground_truth"]
    gt = Image.open(_io.BytesIO(truth["bytes"])) if isinstance(truth, dict) and "bytes" in truth \
        else truth
    return {"target": target, "tool_image": np.asarray(originals[0]), "policy_image": policy[0],
            "gt": np.asarray(gt), "index": row["extra_info"].get("id", item),
            "data_source": row["data_source"]}


def _upstream_iou(pred: np.ndarray, gt) -> float:
    pred, gt = np.asarray(pred) > 127, np.asarray(gt) > 127
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


@pytest.mark.slow
def test_upstream_layout_rows_load_in_upstreams_dataset_and_score_a_perfect_mask_1(
        trajectory_set, tmp_path):
    from msagent.export import upstream

    source, records = trajectory_set
    summary = export_trajectories(source, tmp_path / "up", "verl-rl", layout="upstream",
                                  progress=False)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "up").glob("*.parquet"))])
    assert table.schema == upstream.rl_schema() and summary.rows == 3
    for item, (row, record) in enumerate(zip(table.to_pylist(), records)):
        read = _upstream_reader(row, item)
        assert read["target"] == record.row["target"] and read["index"] == record.row["case_index"]
        assert read["tool_image"].shape == (117, 99, 3)          # the original, not 512×512
        assert np.array_equal(read["tool_image"], record.image())
        assert read["policy_image"].size == (512, 512)
        perfect = record.ground_truth().astype(np.uint8) * 255
        assert set(np.unique(read["gt"])) <= {0, 255} and _upstream_iou(perfect, read["gt"]) == 1.0
        assert row["prompt"][1]["content"] == "<image>" + protocol.first_user_text(read["target"])
        assert read["data_source"].startswith("msagent")
    # msagent's own layout is what upstream could not read (issue 15): pinned as a difference
    own = export_trajectories(source, tmp_path / "own", "verl-rl", progress=False)
    row = pq.read_table(own.out / "part-00000.parquet").to_pylist()[0]
    with pytest.raises(KeyError, match="target_description"):
        _upstream_reader(row)


@pytest.mark.slow
def test_upstream_layout_from_a_dataset_and_the_cli(tmp_path):
    data = make_mni152_dataset(tmp_path / "mni", slices=(40, 45))
    direct = export_rl_prompts(open_dataset(data), tmp_path / "direct", layout="upstream",
                               progress=False)
    rows = pq.read_table(direct.out / "part-00000.parquet").to_pylist()
    assert [_upstream_reader(r)["index"] for r in rows] == list(range(len(rows)))
    assert main(["export", "--dataset", str(data), "--format", "verl-rl", "--layout", "upstream",
                 "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert pq.read_table(tmp_path / "cli" / "part-00000.parquet").to_pylist() == rows
    manifest = json.loads((tmp_path / "cli" / "export.json").read_text())
    assert manifest["layout"] == "upstream"
    own = export_rl_prompts(open_dataset(data), tmp_path / "own", progress=False)
    assert "layout" not in json.loads((own.out / "export.json").read_text())  # old exports resume


def test_upstream_layout_is_for_verl_rl_only(tmp_path):
    with pytest.raises(InvalidInput, match="verl-rl only"):
        export_trajectories(tmp_path, tmp_path / "x", "verl-sft", layout="upstream", progress=False)
    with pytest.raises(InvalidInput, match="layout must be"):
        export_trajectories(tmp_path, tmp_path / "x", "verl-rl", layout="verl", progress=False)
    with pytest.raises(InvalidInput, match="agent_name"):
        export_trajectories(tmp_path, tmp_path / "x", "verl-rl", layout="upstream",
                            agent_name="a", progress=False)
