"""Test and demo data: synthetic phantoms with known masks, and real MRI slices.

``mni152_slice`` needs nilearn (``pip install nilearn``), which ships the MNI152 T1 template
and its brain, grey- and white-matter masks, so no download is involved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

MNI_TARGETS = {"brain": "brain", "gray matter": "gm", "white matter": "wm"}


def make_phantom(height: int = 160, width: int = 224, center=(90, 120), radii=(40, 55),
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse on a dark noisy background: (H×W×3 uint8 image, H×W bool mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy, cx = center
    ry, rx = radii
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    gray = np.where(mask, 190, 50) + rng.normal(0, 8, (height, width))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2), mask


def mni152_slice(target: str = "brain", z: int | None = None,
                 resolution: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """An axial slice of the MNI152 T1 template (float image, as displayed: anterior up) and
    the mask of ``target`` ("brain", "gray matter" or "white matter")."""
    from nilearn import datasets

    if target not in MNI_TARGETS:
        raise ValueError(f"unknown MNI152 target {target!r}; choose from {sorted(MNI_TARGETS)}")
    loader = {"brain": datasets.load_mni152_brain_mask, "gm": datasets.load_mni152_gm_mask,
              "wm": datasets.load_mni152_wm_mask}[MNI_TARGETS[target]]
    volume = datasets.load_mni152_template(resolution=resolution).get_fdata()
    labels = loader(resolution=resolution).get_fdata()
    z = volume.shape[2] // 2 if z is None else z
    return np.rot90(volume[:, :, z]).copy(), np.rot90(labels[:, :, z] > 0).copy()


def add_to_hf_cache(root: Path, repo_id: str, filename: str, source: Path) -> Path:
    """Copy ``source`` into a Hugging Face cache at ``root`` the way huggingface_hub lays it
    out (``models--org--name/snapshots/<rev>/filename`` plus ``refs/main``), so weight
    resolution can be tested offline."""
    repo = Path(root) / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    target = repo / "snapshots" / revision / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copyfile(source, target)
    return target


def check_segmenter(segmenter, image: np.ndarray | None = None, *, thin: bool = False) -> None:
    """The conformance suite every backbone's tests run: the contract of
    :class:`msagent.Segmenter`, checked on ``segmenter`` with a non-square phantom (or
    ``image``), and with a 1-pixel-high strip when ``thin``. Raises AssertionError naming what
    broke; costs one or two encodes and a few decodes.

    Checked: encode gives an Embedding of the image's size and a second encode of the same
    pixels hits the cache; decode of a box, of clicks, of a box with clicks and the previous
    logits gives an H×W bool mask, 256×256 float32 logits and a numeric score; decode is
    deterministic; decode_batch equals one decode per set; the async front doors equal the
    sync ones; misuse (a prompt outside the image, no prompt, logits of the wrong shape,
    mismatched batch lengths) raises SegmenterError; a text-prompted backbone decodes a text
    alone.
    """
    import asyncio

    from msagent.backbones.segmenter import Embedding
    from msagent.errors import SegmenterError
    from msagent.types import BBox, Point, Prompts

    def expect(condition: bool, what: str) -> None:
        if not condition:
            raise AssertionError(f"{type(segmenter).__name__}: {what}")

    image = make_phantom(96, 136, center=(44, 70), radii=(22, 34))[0] if image is None else image
    height, width = image.shape[:2]
    embedding = segmenter.encode(image)
    expect(isinstance(embedding, Embedding) and tuple(embedding.image_size) == (height, width),
           f"encode must return an Embedding of size {(height, width)}")
    cached = segmenter.cache_info()
    if cached.maxsize > 0:
        segmenter.encode(image.copy())
        expect(segmenter.cache_info().hits == cached.hits + 1, "a second encode of the same "
               "pixels must hit the embedding cache")
    box = BBox(width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    inside, outside = Point(width // 2, height // 2), Point(width // 4 + 1, height // 4 + 1, False)
    first = segmenter.decode(embedding, Prompts(box=box))
    sets = [Prompts(box=box), Prompts(points=(inside,)), Prompts(box=box, points=(inside, outside))]
    prevs = [None, None, first.low_res_logits]
    singles = [segmenter.decode(embedding, p, prev) for p, prev in zip(sets, prevs)]
    for prompts, prediction in zip(sets, singles):
        _check_prediction(prediction, (height, width), expect, f"decode({prompts})")
    again = segmenter.decode(embedding, sets[2], prevs[2])
    expect(np.array_equal(again.mask, singles[2].mask), "decode must be deterministic")
    batch = segmenter.decode_batch(embedding, sets, prevs)
    expect(len(batch) == len(sets), "decode_batch must return one prediction per prompt set")
    for single, batched in zip(singles, batch):
        expect(np.array_equal(single.mask, batched.mask)
               and np.allclose(single.low_res_logits, batched.low_res_logits, atol=1e-3),
               "decode_batch must equal one decode per prompt set")

    async def both():
        return await segmenter.aencode(image), await segmenter.adecode(embedding, sets[0])

    aembedding, aprediction = asyncio.run(both())
    expect(aembedding.key == embedding.key and np.array_equal(aprediction.mask, singles[0].mask),
           "aencode/adecode must equal encode/decode")
    wrong_logits = np.zeros((64, 64), np.float32)
    misuse = {
        "a click outside the image": lambda: segmenter.decode(embedding, Prompts(points=(Point(width, 0),))),
        "no prompt": lambda: segmenter.decode(embedding, Prompts()),
        "logits of the wrong shape": lambda: segmenter.decode(embedding, sets[0], wrong_logits),
        "one prev_logits for two sets": lambda: segmenter.decode_batch(embedding, sets[:2], [None]),
    }
    for what, call in misuse.items():
        if what == "no prompt" and segmenter.accepts_text:
            continue
        try:
            call()
        except SegmenterError:
            continue
        raise AssertionError(f"{type(segmenter).__name__}: {what} must raise SegmenterError")
    if segmenter.accepts_text:
        _check_prediction(segmenter.decode(embedding, Prompts(text="the bright object")),
                          (height, width), expect, "decode of a text alone")
    if thin:
        strip = np.ascontiguousarray(image[height // 2:height // 2 + 1])
        thin_embedding = segmenter.encode(strip)
        prediction = segmenter.decode(thin_embedding, Prompts(box=BBox(0, 0, width - 1, 0)))
        _check_prediction(prediction, (1, width), expect, "decode on a 1-pixel-high image")


def _check_prediction(prediction, size: tuple[int, int], expect, what: str) -> None:
    from msagent.backbones.segmenter import LOW_RES

    mask, logits = prediction.mask, prediction.low_res_logits
    expect(isinstance(mask, np.ndarray) and mask.shape == size and mask.dtype == bool,
           f"{what}: the mask must be a {size} bool array")
    expect(isinstance(logits, np.ndarray) and logits.shape == (LOW_RES, LOW_RES)
           and logits.dtype == np.float32, f"{what}: low_res_logits must be 256×256 float32")
    expect(np.isfinite(logits).all(), f"{what}: low_res_logits must be finite")
    expect(isinstance(float(prediction.score), float), f"{what}: the score must be a number")
