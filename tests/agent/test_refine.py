"""Refining an existing mask: the initial mask's checks, its logits in the backbone's frame, the
episode that starts from it (agent, expert, LLM prompt variant, reward), the server session and
the CLI."""

from __future__ import annotations

import numpy as np
import pytest

import msagent
from msagent import metrics, protocol
from msagent.agent.refine import DEGRADATIONS, Degradation, check_initial_mask
from msagent.backbones import InputGeometry
from msagent.errors import InvalidMask
from msagent.testing import make_phantom
from msagent.types import BBox


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 12), bool), "is 10×12 (H×W) but the image is 40×50"),
    (np.zeros((4, 40, 50), bool), "has shape (4, 40, 50)"),
    (np.linspace(0, 1, 2000).reshape(40, 50), "must be binary"),
    (np.ones((40, 50), bool), "covers the whole image"),
    (np.full((40, 50), "1"), "bool or numeric"),
])
def test_bad_initial_masks_are_refused_with_the_shapes(bad, message):
    with pytest.raises(InvalidMask, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_initial_mask(bad, (40, 50))


def test_an_empty_initial_mask_is_no_initial_mask_and_0_255_is_binary():
    assert check_initial_mask(np.zeros((40, 50), np.uint8), (40, 50)) is None
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:30] = 255
    assert check_initial_mask(mask, (40, 50)).sum() == 15 * 25


@pytest.mark.parametrize("shape, size, mode", [((117, 99), 256, "longest_side"), ((60, 200), 1024, "longest_side"),
                                               ((117, 99), 1024, "stretch"), ((60, 200), 512, "stretch")])
def test_mask_logits_round_trip_through_the_backbone_frame(shape, size, mode):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from msagent.backbones.sam import upscale

    _, mask = make_phantom(*shape, center=(shape[0] // 2, shape[1] // 3), radii=(shape[0] // 3, shape[1] // 5))
    geometry = InputGeometry(shape, size, mode)
    logits = geometry.mask_logits(mask)
    assert logits.shape == (256, 256) and logits.dtype == np.float32 and set(np.unique(logits)) == {-10, 10}
    tensor = torch.from_numpy(logits)
    if mode == "longest_side":
        back = upscale(tensor, geometry)  # the LiteMedSAM / SAM path from logits to a mask
        crop_h, crop_w = geometry.low_res_crop()
        assert (logits[crop_h:] == -10).all() and (logits[:, crop_w:] == -10).all()  # padding
    else:
        back = (F.interpolate(tensor[None, None], shape, mode="bilinear", align_corners=False)[0, 0] > 0).numpy()
    assert metrics.iou(back, mask) > 0.93


def test_a_thin_mask_never_vanishes():
    mask = np.zeros((300, 40), bool)
    mask[:, 20] = True
    assert (InputGeometry((300, 40), 256).mask_logits(mask) > 0).any()


@pytest.fixture(scope="module")
def brain(mni_slice):
    image, gt = mni_slice
    return msagent.io.to_rgb_uint8(image), gt


@pytest.mark.slow
@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_the_expert_never_ends_below_the_initial_mask(litemedsam, brain, kind):
    image, gt = brain
    initial = Degradation(kind, 0.15).apply(gt, np.random.default_rng(1))
    trajectory = msagent.Agent(msagent.load_policy("expert"), litemedsam).run(
        image, "brain", gt, initial_mask=initial, initial_source=f"degraded:{kind}")
    start = trajectory.initial
    assert start.source == f"degraded:{kind}" and start.dice == pytest.approx(metrics.dice(initial, gt))
    assert metrics.dice(trajectory.final_mask, gt) >= start.dice
    assert trajectory.stop_reason in ("stop", "max_turns")
    again = msagent.Trajectory.from_json(trajectory.to_json())
    assert np.array_equal(again.initial.mask, initial) and again.initial.iou == start.iou


# Not an msagent.testing stand-in: a backbone with a mask input (input_geometry) that records
# the prev_logits each decode got.
class Recorder(msagent.Segmenter):
    """A backbone with a mask input that records what each decode got."""

    multimask_default = False

    def __init__(self):
        super().__init__()
        self.calls = []

    def encode_image(self, image):
        return 0

    def input_geometry(self, image_size):
        return InputGeometry(image_size, 256)

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self.calls += list(zip(prompt_sets, prev_logits))
        return [msagent.MaskPrediction(np.ones(embedding.image_size, bool), np.zeros((256, 256), np.float32), 1.0)
                for _ in prompt_sets]


class Scripted(msagent.Policy):
    def __init__(self, replies):
        self.replies, self.messages = list(replies), []

    def act(self, episode):
        self.messages.append(protocol.build_messages(episode))
        return msagent.Reply(self.replies.pop(0))


CLICK = protocol.point_action(msagent.Point(10, 10), (40, 50), "more here").raw_text
STOP = protocol.stop_action("looks right").raw_text


def test_the_initial_mask_is_the_first_decodes_mask_input_and_the_policys_first_image():
    image = np.zeros((40, 50, 3), np.uint8)
    initial = np.zeros((40, 50), bool)
    initial[8:30, 6:40] = True
    seg, policy = Recorder(), Scripted([CLICK, STOP])
    trajectory = msagent.Agent(policy, seg).run(image, "kidney", initial_mask=initial)
    (prompts, prev), = seg.calls
    assert prompts.box == BBox(6, 8, 39, 29) and len(prompts.points) == 1  # the mask's box in force
    np.testing.assert_array_equal(prev, seg.mask_logits(initial))
    first = policy.messages[0][1]["content"]
    assert first[1]["text"] == ("The target to be segmented is: kidney.\n"
                                "The image shows an existing segmentation of it as a green overlay. "
                                "Now, please analyze the image and the overlay, then decide your first "
                                "action to correct the mask. If it is already accurate, you can call "
                                "'stop_action' to finish.")
    assert np.array_equal(np.asarray(first[0]["image"]), np.asarray(protocol.policy_image(image, initial)))
    assert trajectory.turns == 1 and trajectory.initial.iou is None  # no ground truth given


def test_stopping_at_once_keeps_the_initial_mask_and_without_one_is_refused():
    image = np.zeros((40, 50, 3), np.uint8)
    initial = np.zeros((40, 50), bool)
    initial[8:30, 6:40] = True
    kept = msagent.Agent(Scripted([STOP]), Recorder()).run(image, "kidney", initial_mask=initial)
    assert kept.stop_reason == "stop" and np.array_equal(kept.final_mask, initial)
    none = msagent.Agent(Scripted([STOP, STOP]), Recorder()).run(image, "kidney")
    assert none.stop_reason == "stopped_without_mask"


def test_a_backbone_without_a_mask_input_starts_from_the_box():
    class NoMask(Recorder):
        def input_geometry(self, image_size):
            return None

    seg = NoMask()
    initial = np.zeros((40, 50), bool)
    initial[8:30, 6:40] = True
    msagent.Agent(Scripted([CLICK, STOP]), seg).run(np.zeros((40, 50, 3), np.uint8), "x", initial_mask=initial)
    (prompts, prev), = seg.calls
    assert prompts.box == BBox(6, 8, 39, 29) and prev is None


def test_the_reward_counts_from_the_initial_mask():
    reward = msagent.MedSAMReward()
    plain = reward.from_values(has_interaction=True, ends_with_stop=True, ious=[0.6, 0.75], dices=[0.7, 0.8])
    refined = reward.from_values(has_interaction=True, ends_with_stop=True, ious=[0.75], dices=[0.8],
                                 initial=(0.6, 0.7))
    assert refined.bonus == pytest.approx(plain.bonus) and refined.turns == 1
    assert refined.penalty == pytest.approx(0.01)  # one call's step cost, no regression
    worse = reward.from_values(has_interaction=True, ends_with_stop=True, ious=[0.5], dices=[0.6],
                               initial=(0.7, 0.8))
    assert worse.penalty == pytest.approx(0.2 + 0.01)  # ending below the initial mask is penalised
    kept = reward.from_values(has_interaction=False, ends_with_stop=True, ious=[], dices=[], initial=(0.7, 0.8))
    assert kept.iou == 0.7 and kept.turns == 0


@pytest.mark.slow
def test_segment_and_the_cli_refine_and_refuse_a_wrong_size(litemedsam, tmp_path, capsys):
    from msagent.cli import main

    image, gt = make_phantom(64, 80, center=(32, 40), radii=(16, 24))
    initial = Degradation("dilate", 0.2).apply(gt, np.random.default_rng(0))
    result = msagent.segment(image, "ellipse", backbone=litemedsam, policy="expert", ground_truth=gt,
                             initial_mask=initial)
    assert metrics.dice(result.mask, gt) >= result.trajectory.initial.dice
    for name, array in (("img.png", image), ("gt.png", gt.astype(np.uint8) * 255),
                        ("initial.png", initial.astype(np.uint8) * 255),
                        ("small.png", np.zeros((8, 8), np.uint8))):
        msagent.io.save_png(array, tmp_path / name)
    common = ["segment", str(tmp_path / "img.png"), "ellipse", "--backbone", "litemedsam",
              "--policy", "expert", "--ground-truth", str(tmp_path / "gt.png")]
    assert main([*common, "--initial-mask", str(tmp_path / "initial.png"),
                 "--trajectory", str(tmp_path / "t.json")]) == 0
    assert msagent.Trajectory.from_json((tmp_path / "t.json").read_text()).initial is not None
    capsys.readouterr()
    assert main([*common, "--initial-mask", str(tmp_path / "small.png")]) == 2
    assert "the initial mask is 8×8 (H×W) but the image is 64×80" in capsys.readouterr().err


@pytest.mark.slow
def test_a_server_session_starts_from_an_uploaded_mask(litemedsam):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from msagent.io.wire import png_bytes
    from msagent.server import ServerConfig, create_app
    from msagent.types import decode_mask

    image, gt = make_phantom(64, 80, center=(32, 40), radii=(16, 24))
    initial = Degradation("erode", 0.2).apply(gt, np.random.default_rng(0))
    files = {"image": ("i.png", png_bytes(image), "image/png"),
             "initial_mask": ("m.png", png_bytes(initial.astype(np.uint8) * 255), "image/png")}
    with TestClient(create_app(litemedsam, ServerConfig(batch_window_ms=0))) as client:
        created = client.post("/v1/sessions", files=files)
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        start = client.get(f"/v1/sessions/{sid}/mask", params={"format": "rle"}).json()
        assert np.array_equal(decode_mask(start), initial)
        step = client.post(f"/v1/sessions/{sid}/point", json={"x": 40, "y": 32, "label": 1}).json()
        assert step["session"]["box"] is not None and len(step["session"]["points"]) == 1
        assert client.post(f"/v1/sessions/{sid}/undo").status_code == 200
        back = client.get(f"/v1/sessions/{sid}/mask", params={"format": "rle"}).json()
        assert np.array_equal(decode_mask(back), initial)  # undo stops at the initial mask
        wrong = {**files, "initial_mask": ("m.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png")}
        refused = client.post("/v1/sessions", files=wrong)
        assert refused.status_code == 422 and "8×8" in refused.json()["detail"]
