"""msagent.testing as a product: named conformance checks, stand-in backbones, pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import msagent
from msagent.testing import (
    CHECKS,
    CT_PHANTOM_ORGANS,
    BandBackbone,
    BoxBackbone,
    BrightBackbone,
    ComponentBackbone,
    check_segmenter,
    make_ct_phantom,
    make_phantom,
    make_tube,
    write_ct_phantom,
)
from msagent.types import BBox, Point, Prompts


@pytest.mark.parametrize("backbone", [BoxBackbone, BrightBackbone, ComponentBackbone, BandBackbone])
def test_every_stand_in_passes_the_conformance_suite(backbone):
    check_segmenter(backbone(), thin=True)


def test_a_failure_names_the_check_that_failed():
    class Flaky(BoxBackbone):
        def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
            out = super().decode_prompts(embedding, prompt_sets, prev_logits, multimask=multimask)
            self.flip = not getattr(self, "flip", False)
            if self.flip:
                out[0].mask[0, 0] = not out[0].mask[0, 0]
            return out

    with pytest.raises(AssertionError, match="conformance check 'decode_is_deterministic' failed: "
                                             "Flaky: decode must be deterministic"):
        check_segmenter(Flaky())
    assert list(CHECKS)[:2] == ["encode_returns_an_embedding", "encode_hits_the_cache"]


def test_the_stand_ins_segment_what_they_say():
    image, mask = make_phantom()
    box = BBox(60, 45, 180, 135)
    bright = BrightBackbone()
    prediction = bright.decode(bright.encode(image), Prompts(box=box))
    assert np.array_equal(prediction.mask, mask)  # the ellipse fits in the box
    boxes = BoxBackbone()
    prediction = boxes.decode(boxes.encode(image), Prompts(box=box, points=(Point(60, 45, False),)))
    assert prediction.mask.sum() == 121 * 91 - 1 and boxes.encodes == boxes.decodes == 1
    component = ComponentBackbone(clicks_alone=False)
    embedding = component.encode(image)
    assert not component.decode(embedding, Prompts(points=(Point(120, 90),))).mask.any()
    assert np.array_equal(ComponentBackbone().decode(embedding, Prompts(points=(Point(120, 90),))).mask, mask)
    with pytest.raises(RuntimeError, match="a bug in the backbone"):
        BoxBackbone(fail=True).encode(image)


def test_make_tube_is_a_bright_disk_through_the_slices():
    volume, mask = make_tube(8, shift_at=4, shift=10)
    assert volume.shape == mask.shape == (8, 40, 80)
    assert (volume[mask] == 200).all() and mask[:4, 20, 20].all() and mask[4:, 20, 30].all()


def test_the_phantom_fixture_is_make_phantoms_default(phantom):
    image, mask = make_phantom()
    assert np.array_equal(phantom[0], image) and np.array_equal(phantom[1], mask)


def test_hf_cache_is_empty_and_in_the_environment(hf_cache, tmp_path):
    assert os.environ["HF_HUB_CACHE"] == str(hf_cache.root) and os.environ["HF_HOME"] == str(hf_cache.home)
    assert not any(hf_cache.root.iterdir())
    source = tmp_path / "w.pt"
    source.write_bytes(b"weights")
    path = hf_cache("org/model", "w.pt", source)
    assert path.read_bytes() == b"weights" and path.is_relative_to(hf_cache.root)
    assert (hf_cache.root / "models--org--model" / "refs" / "main").exists()


class _OnePolicy:
    @staticmethod
    @msagent.hookimpl
    def msagent_register_policies(register):
        from msagent.policies.expert import ExpertPolicy

        register("isolated-only", ExpertPolicy, "for one test")


def test_isolated_registry_is_fresh_and_restored(isolated_registry):
    from msagent.plugins import get_registry

    registry = isolated_registry(_OnePolicy, load_entrypoints=False)
    assert get_registry() is registry and "isolated-only" in msagent.list_policies()


def test_no_test_sees_another_tests_registry():
    assert "isolated-only" not in msagent.list_policies()


def test_the_pytest_plugin_imports_nothing_heavy():
    code = ("import sys, msagent.testing.pytest_plugin; "
            "print(sorted(m for m in ('torch', 'nilearn', 'fastapi', 'transformers') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_ct_phantom_reads_back_as_made_and_is_a_built_in_dataset(tmp_path, monkeypatch):
    from msagent.datasets import open_dataset
    from msagent.volume.stack import build_stack, label_stack

    volume, labels = make_ct_phantom((12, 64, 64))
    assert volume.dtype == np.int16 and labels.shape == (12, 64, 64)
    assert set(np.unique(labels)) == {0, *CT_PHANTOM_ORGANS}
    write_ct_phantom(tmp_path / "ph", (12, 64, 64))
    sliced = build_stack(tmp_path / "ph" / "imagesTr" / "ct_phantom_0000.nii.gz")
    assert np.array_equal(label_stack(tmp_path / "ph" / "labelsTr" / "ct_phantom.nii.gz", sliced,
                                      "labels"), labels > 0)
    monkeypatch.setenv("MSAGENT_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("msagent.testing.data.write_ct_phantom.__defaults__", ((12, 64, 64),))
    cases = open_dataset("ct-phantom", volumes=True).refs
    assert sorted(c.meta["class"] for c in cases) == sorted(n for n, _ in CT_PHANTOM_ORGANS.values())
    assert {c.meta["window"] for c in cases} == {"abdomen"}


def test_the_band_stand_in_grows_from_its_prompts():
    image, mask = make_phantom()
    band = BandBackbone()
    embedding = band.encode(image)
    grown = band.decode(embedding, Prompts(box=BBox(60, 45, 180, 135))).mask
    assert (grown & mask).sum() / mask.sum() > 0.95 and not (grown & ~mask).any()
    clicked = band.decode(embedding, Prompts(points=(Point(120, 90),))).mask
    assert (clicked & grown).sum() > 0.95 * grown.sum()  # a click inside grows the region
    carved = band.decode(embedding, Prompts(box=BBox(60, 45, 180, 135),
                                            points=(Point(170, 90, False),))).mask
    assert carved.sum() < grown.sum() and not carved[85:95, 165:175].any()
