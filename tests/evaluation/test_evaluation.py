"""Evaluation: metric definitions, the NoC and CVPR protocols on phantoms with fake segmenters
of known behaviour, agent runs, failures, resume, concurrency."""

import asyncio
import json
import math

import numpy as np
import pytest

import msagent
from msagent import metrics
from msagent.errors import PolicyError
from msagent.evaluation import (
    EvalConfig,
    RecordStore,
    cvpr_click,
    evaluate,
    ritm_click,
    run_cvpr,
    run_noc,
)
from msagent.policies.expert import OracleBoxPolicy
from msagent.types import Case, MaskPrediction, Point

SQRT2 = math.sqrt(2)


def logits_of(mask):
    low = np.full((256, 256), -10.0, np.float32)
    small = np.where(mask, 10.0, -10.0)[:256, :256]
    low[: small.shape[0], : small.shape[1]] = small
    return low


# Not msagent.testing.BrightBackbone: the protocols' expected values rest on this mix (a positive
# click adds its bright component, a negative one cuts a disk) and on the recorded calls.
class Threshold(msagent.Segmenter):
    """Known behaviour: a box selects the bright pixels inside it; a positive click adds the
    bright connected component under it (or a disk of ``radius`` when set); a negative click
    removes a disk. Records every decode call."""

    name = "fake"
    multimask_default = False

    def __init__(self, radius=None):
        super().__init__()
        self.radius = radius
        self.calls = []

    def encode_image(self, image):
        return image.mean(axis=2) > 120

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        return [self.decode_one(embedding, p, prev, multimask=multimask)
                for p, prev in zip(prompt_sets, prev_logits)]

    def decode_one(self, embedding, prompts, prev_logits=None, *, multimask=False):
        import cv2

        self.calls.append((prompts, None if prev_logits is None else prev_logits.copy()))
        bright = embedding.features
        mask = np.zeros_like(bright)
        if prompts.box is not None:
            b = prompts.box
            mask[b.y1:b.y2 + 1, b.x1:b.x2 + 1] = bright[b.y1:b.y2 + 1, b.x1:b.x2 + 1]
        _, components = cv2.connectedComponents(bright.astype(np.uint8))
        yy, xx = np.mgrid[:bright.shape[0], :bright.shape[1]]
        for p in prompts.points:
            if self.radius is not None or not p.positive:
                disk = (yy - p.y) ** 2 + (xx - p.x) ** 2 <= (self.radius or 3) ** 2
                mask = mask | disk if p.positive else mask & ~disk
            elif bright[p.y, p.x]:
                mask |= components == components[p.y, p.x]
        return MaskPrediction(mask, logits_of(mask), 1.0)


class Empty(Threshold):
    def decode(self, embedding, prompts, prev_logits=None, *, multimask=False):
        self.calls.append((prompts, prev_logits))
        mask = np.zeros(embedding.image_size, bool)
        return MaskPrediction(mask, logits_of(mask), 0.0)


def image_of(mask):
    gray = np.where(mask, 200, 30).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


# -- metric definitions ---------------------------------------------------------------------

def test_nsd_is_surface_dice_on_pixel_corners():
    gt = np.zeros((12, 12), bool); gt[2:6, 2:6] = True
    # contour of a 4×4 square: 12 unit edges + 4 corner diagonals of length √2/2
    assert metrics.surface_distances(gt, gt)["lengths_gt"].sum() == pytest.approx(12 + 2 * SQRT2)
    pred = np.roll(gt, 2, axis=1)  # 2 px to the right
    # tolerance 1: per contour, the far side (3 units + 2 corners) and the mid point of the
    # opposite side (1 unit) are 2 px away
    far = 3 + SQRT2 + 1
    assert metrics.nsd(pred, gt, tolerance=1) == pytest.approx(1 - far / (12 + 2 * SQRT2))
    assert metrics.nsd(pred, gt, tolerance=2) == 1.0
    # spacing scales distances: 2 px at 0.5 mm/px is 1 mm
    assert metrics.nsd(pred, gt, tolerance=1, spacing=(0.5, 0.5)) == 1.0


def test_cvpr_auc_is_the_raw_trapezoid_over_clicks():
    assert metrics.curve_auc([1, 1, 1, 1, 1], normalize=False) == 4.0
    assert metrics.curve_auc([0, 0.5, 1, 1, 1], normalize=False) == pytest.approx(0.25 + 0.75 + 1 + 1)
    assert metrics.curve_auc([0.5, 0.5, 0.5]) == 0.5  # the normalised default is unchanged


# -- click rules ------------------------------------------------------------------------------

def test_ritm_tie_goes_to_the_false_positive_region():
    gt = np.zeros((30, 30), bool); gt[2:7, 2:7] = True
    pred = np.zeros_like(gt); pred[20:25, 20:25] = True    # equal 5×5 FN and FP squares
    assert ritm_click(gt, pred) == Point(22, 22, False)
    assert ritm_click(gt, gt) is None


def test_cvpr_click_takes_the_largest_error_component_not_the_deepest():
    gt = np.zeros((60, 120), bool)
    pred = gt.copy()
    gt[5:7, 5:105] = True           # a 200-px thin strip missed (depth 1)
    pred[30:42, 30:42] = True       # a 144-px square false positive (depth 6)
    click = cvpr_click(gt, pred)
    assert click.positive and click.y in (5, 6) and 5 <= click.x < 105
    assert not ritm_click(gt, pred).positive  # RITM goes for the deeper square


def test_ritm_click_is_the_one_click_rule():
    from msagent import clicker

    assert ritm_click is clicker.next_click


def test_cvpr_components_are_numbered_in_raster_order_as_cc3d_does():
    # Two 1-px error components of equal size: (x=2, y=0) comes first in raster order, so the
    # challenge (cc3d labels, np.argmax over sizes) clicks it. OpenCV's default 8-connected
    # labelling scans 2×2 blocks and numbered (x=0, y=1) first: msagent clicked that one.
    gt = np.array([[0, 0, 1], [0, 0, 0]], bool)
    pred = np.array([[0, 0, 0], [1, 0, 0]], bool)
    assert cvpr_click(gt, pred) == Point(2, 0, True)
    assert cvpr_click(pred, gt) == Point(2, 0, False)


def test_cvpr_click_takes_lists_and_ties_are_drawn_with_seed_42():
    gt = [[1, 1, 1, 1], [1, 1, 1, 1]]                  # every pixel at depth 1: 8 candidates
    assert cvpr_click(gt, [[0] * 4] * 2) == Point(2, 1, True)  # RandomState(42).choice(8) = 6


# -- protocols on phantoms --------------------------------------------------------------------

def blobs(sizes, height=64, width=160):
    """Separate bright squares of the given side lengths, left to right."""
    gt = np.zeros((height, width), bool)
    x = 2
    for side in sizes:
        gt[2:2 + side, x:x + side] = True
        x += side + 3
    return gt


def test_noc_counts_clicks_to_threshold_with_previous_logits():
    sides = [30, 20, 10, 8]         # areas 900, 400, 100, 64 of 1464
    gt = blobs(sides)
    segmenter = Threshold()
    case = Case("b", image_of(gt), "blobs", gt)
    out = run_noc(segmenter, case)
    areas = np.cumsum(np.square(sides)) / np.square(sides).sum()
    assert out.curves["iou"] == pytest.approx(list(areas))   # one blob per click, largest first
    assert out.values["noc85"] == 2 and out.values["noc90"] == 3  # IoU .61, .89, .96, 1
    assert out.stop_reason == "perfect" and out.turns == 4
    prompts, prev = zip(*segmenter.calls)
    assert all(p.box is None for p in prompts) and [len(p.points) for p in prompts] == [1, 2, 3, 4]
    assert prev[0] is None and all(p is not None for p in prev[1:])


def test_noc_is_capped_at_max_clicks():
    gt = blobs([20])
    segmenter = Empty()
    out = run_noc(segmenter, Case("e", image_of(gt), "blob", gt))
    assert out.values["noc85"] == 20 and out.values["noc90"] == 20
    assert len(out.curves["iou"]) == 20 and len(segmenter.calls) == 20


def test_cvpr_protocol_box_then_corrective_clicks():
    gt = np.zeros((80, 80), bool); gt[20:60, 20:60] = True
    image_mask = gt.copy(); image_mask[37:43, 37:43] = False   # a dark 6×6 hole the box misses
    segmenter = Threshold(radius=6)
    out = run_cvpr(segmenter, Case("h", image_of(image_mask), "square", gt))
    first = 2 * (1600 - 36) / (1600 + 1564)
    assert out.curves["dice"] == pytest.approx([first, 1, 1, 1, 1, 1])
    assert out.values["dsc_auc"] == 4.0 and out.values["nsd_auc"] == 4.0
    assert out.values["dice"] == 1.0 and out.values["nsd"] == 1.0
    click = segmenter.calls[1][0].points[0]
    assert click.positive and (click.y, click.x) in {(39, 39), (39, 40), (40, 39), (40, 40)}
    assert segmenter.calls[1][0].box is not None and segmenter.calls[1][1] is not None
    assert len(segmenter.calls) == 2          # perfect after one click: no more clicks


def test_cvpr_nsd_is_zero_below_dice_02():
    gt = np.zeros((40, 40), bool); gt[5:35, 5:35] = True
    out = run_cvpr(Empty(), Case("z", image_of(gt), "square", gt))
    assert out.curves["nsd"] == [0.0] * 6 and out.values["dsc_auc"] == 0.0


# -- whole runs ---------------------------------------------------------------------------------

def phantom_cases(n=4):
    from msagent.testing import make_phantom

    cases = []
    for i in range(n):
        image, gt = make_phantom(96, 128, center=(45 + 3 * i, 60 + 4 * i), radii=(25, 30), seed=i)
        cases.append(Case(f"p{i}", image, "ellipse", gt,
                          meta={"dataset": "phantoms", "modality": "synthetic",
                                "label": "odd" if i % 2 else "even"}))
    return cases


class BadLoad:
    id = "unreadable"

    def load(self):
        raise OSError("cannot read image file broken.png")


def test_evaluate_agents_and_protocols_with_failures(tmp_path):
    cases = phantom_cases(3) + [Case("mismatch", phantom_cases(1)[0].image, "x", np.ones((5, 5), bool)),
                                BadLoad(), Case("empty", phantom_cases(1)[0].image, "x",
                                                np.zeros((96, 128), bool))]
    summary = evaluate(cases, tmp_path, backbones=[Threshold()], policies=["expert", "oracle-box"],
                       protocols=["noc", "cvpr"], progress=False)
    box = summary["fake/oracle-box"]
    assert box["n_ok"] == 3 and box["n_errors"] == 2 and box["dice"] == 1.0 and box["turns_mean"] == 1
    assert set(box["errors"]) == {"InvalidMask", "OSError"}
    assert box["per_class"]["even"]["n"] == 2 and box["per_modality"]["synthetic"]["n"] == 3
    assert summary["fake/cvpr"]["dsc_auc"] == 4.0
    assert summary["fake/noc"]["noc85"] == 1.0       # one click floods the ellipse
    records = RecordStore(tmp_path / "records.jsonl").records()
    assert len(records) == 6 * 4
    skipped = [r for r in records if r.case_id == "empty"]
    assert {r.status for r in skipped} == {"skipped"}
    ok = next(r for r in records if r.case_id == "p0" and r.method == "expert")
    assert (tmp_path / ok.mask_file).is_file() and (tmp_path / ok.trajectory_file).is_file()
    assert ok.curves["dice"] == [1.0]
    for name in ("results.csv", "results.parquet", "summary.json", "report.html"):
        assert (tmp_path / name).is_file()
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "results.parquet")
    assert table.num_rows == 24 and "dice_curve" in table.column_names


class Scripted(msagent.Policy):
    """Box, then a stop; an async reply that sleeps, to overlap episodes; fails on 'p1'."""

    name = "scripted"

    def __init__(self):
        self.active = 0
        self.peak = 0

    def act(self, episode):
        if episode.image[0, 0, 0] == 255:
            raise PolicyError("HTTP 500 from the API")
        return OracleBoxPolicy().act(episode)

    async def aact(self, episode):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.02)
        self.active -= 1
        return self.act(episode)


def test_concurrent_api_episodes_and_api_errors(tmp_path):
    cases = phantom_cases(6)
    cases[1].image[0, 0] = 255                      # this case's API call fails
    policy = Scripted()
    policy.needs_ground_truth = True
    summary = evaluate(cases, tmp_path / "a", backbones=[Threshold()], policies=[policy],
                       concurrency=4, progress=False, report=False)
    assert policy.peak > 1
    s = summary["fake/scripted"]
    # a policy that never answered is an error (as msagent.segment raises), not a Dice-0 result
    assert s["n_ok"] == 5 and s["n_errors"] == 1 and s["errors"] == {"SegmentationFailed": 1}
    assert s["no_mask"] == 0 and "policy_error" not in s["stop_reasons"]
    sequential = evaluate(cases, tmp_path / "b", backbones=[Threshold()], policies=[policy],
                          progress=False, report=False)
    assert sequential["fake/scripted"]["dice"] == s["dice"]


class Interrupting(Threshold):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def decode(self, embedding, prompts, prev_logits=None, *, multimask=False):
        if len(self.calls) >= self.after:
            raise KeyboardInterrupt
        return super().decode(embedding, prompts, prev_logits, multimask=multimask)


def comparable(path):
    rows = [json.loads(line) for line in (path / "records.jsonl").read_text().splitlines()]
    return sorted((r["backbone"], r["method"], r["case_id"], r["dice"], r["iou"], r["nsd"],
                   json.dumps(r["curves"]), json.dumps(r["values"]), r["mask_file"]) for r in rows)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    cases = phantom_cases(4)
    kwargs = dict(policies=["expert", "oracle-box"], protocols=["cvpr"], progress=False, report=False)
    whole = Threshold()
    evaluate(cases, tmp_path / "full", backbones=[whole], **kwargs)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cases, tmp_path / "resumed", backbones=[Interrupting(after=7)], **kwargs)
    partial = (tmp_path / "resumed" / "records.jsonl").read_text().splitlines()
    assert 0 < len(partial) < 12
    with open(tmp_path / "resumed" / "records.jsonl", "a") as handle:
        handle.write('{"backbone": "fake", "meth')       # a torn line from a crash mid-write
    fresh = Threshold()
    evaluate(cases, tmp_path / "resumed", backbones=[fresh], **kwargs)
    assert comparable(tmp_path / "resumed") == comparable(tmp_path / "full")
    assert len((tmp_path / "resumed" / "records.jsonl").read_text().splitlines()) == 12
    assert 0 < len(fresh.calls) < len(whole.calls)   # only the missing units ran again


def test_resume_refuses_other_settings(tmp_path):
    evaluate(phantom_cases(1), tmp_path, backbones=[Threshold()], policies=["oracle-box"],
             progress=False, report=False)
    with pytest.raises(msagent.errors.InvalidInput, match="other settings"):
        evaluate(phantom_cases(1), tmp_path, backbones=[Threshold()], policies=["oracle-box"],
                 config=EvalConfig(max_turns=3), progress=False, report=False)


@pytest.mark.slow
def test_litemedsam_on_an_mni152_slice(tmp_path, litemedsam):
    from msagent import io
    from msagent.testing import mni152_slice

    image, brain = mni152_slice("brain", resolution=2)
    case = Case("mni", io.to_rgb_uint8(image), "brain in MRI", brain, meta={"spacing": [2.0, 2.0]})
    summary = evaluate([case], tmp_path, backbones=[litemedsam], policies=["oracle-box"],
                       protocols=["cvpr"], progress=False, report=False)
    assert summary["litemedsam/oracle-box"]["dice"] > 0.5  # LiteMedSAM single-mask, tight box
    cvpr = summary["litemedsam/cvpr"]
    assert cvpr["dsc_by_step"][0] == pytest.approx(summary["litemedsam/oracle-box"]["dice"], abs=1e-6)
    assert cvpr["dice"] >= cvpr["dsc_by_step"][0] - 0.05 and 0 < cvpr["dsc_auc"] <= 4


def test_cli_eval_on_a_folder_dataset_with_a_broken_file(tmp_path, capsys):
    datasets = pytest.importorskip("msagent.datasets")
    from msagent import io
    from msagent.cli import main
    from msagent.testing import make_phantom

    rows = []
    for i in range(3):
        image, gt = make_phantom(64, 80, center=(30, 40), radii=(15, 20 + i), seed=i)
        io.save_png(image, tmp_path / "data" / f"img{i}.png")
        io.save_mask_png(gt, tmp_path / "data" / f"mask{i}.png")
        rows.append({"image": f"img{i}.png", "mask": f"mask{i}.png", "target": "ellipse", "id": f"c{i}"})
    (tmp_path / "data" / "img2.png").write_bytes(b"not a png")
    datasets.write_folder(tmp_path / "data", rows)
    argv = ["eval", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--backbone", "mybackbone",
            "--policy", "oracle-box", "--protocol", "cvpr", "--no-report"]
    assert main(argv) == 1                              # one case failed: exit status 1
    table = capsys.readouterr().out
    assert "| mybackbone | oracle-box | 2 | 1.000 |" in table
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mybackbone/cvpr"]["n_errors"] == 1
    io.save_png(image, tmp_path / "data" / "img2.png")  # fixed: a rerun retries only that case
    assert main(argv) == 0
    records = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert len(records) == 6 + 2


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("MSAGENT_TEST_RAY"),
                    reason="starts a local Ray instance (~30 s): set MSAGENT_TEST_RAY=1")
def test_ray_gives_the_local_results(tmp_path):
    pytest.importorskip("ray")
    kwargs = dict(backbones=["mybackbone"], policies=["oracle-box"], protocols=["cvpr"],
                  progress=False, report=False)
    on_ray = evaluate(phantom_cases(4), tmp_path / "ray", ray_address="local", **kwargs)
    local = evaluate(phantom_cases(4), tmp_path / "local", **kwargs)
    assert comparable(tmp_path / "ray") == comparable(tmp_path / "local")
    assert on_ray["mybackbone/cvpr"]["dsc_auc"] == local["mybackbone/cvpr"]["dsc_auc"]
