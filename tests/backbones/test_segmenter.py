import threading
import time

import numpy as np
import pytest

import msagent
from msagent.backbones.segmenter import check_prev_logits, check_prompts
from msagent.errors import SegmenterError
from msagent.types import BBox, MaskPrediction, Point, Prompts


# Not msagent.testing's stand-ins: this one sleeps on encode (cache races) and returns its
# embedding as the score.
class Counting(msagent.Segmenter):
    def __init__(self, delay=0.0, **kw):
        super().__init__(**kw)
        self.encodes = 0
        self.delay = delay

    def encode_image(self, image):
        time.sleep(self.delay)
        self.encodes += 1
        return float(image.mean())

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        mask = np.zeros(embedding.image_size, bool)
        return [MaskPrediction(mask, np.zeros((256, 256), np.float32), embedding.features)
                for _ in prompt_sets]


def image(value=0, shape=(8, 9, 3)):
    return np.full(shape, value, np.uint8)


def test_one_image_is_encoded_once_across_many_episodes():
    seg = Counting()
    embeddings = [seg.encode(image(5).copy()) for _ in range(8)]
    assert seg.encodes == 1
    assert seg.cache_info() == msagent.CacheInfo(hits=7, misses=1, size=1, maxsize=16)
    assert len({e.key for e in embeddings}) == 1


def test_lru_evicts_oldest_and_distinguishes_content():
    seg = Counting(cache_size=2)
    for value in (1, 2, 3, 1):
        seg.encode(image(value))
    assert seg.encodes == 4  # 1 was evicted by 3
    assert seg.cache_info().size == 2


def test_concurrent_first_requests_wait_for_one_encode():
    seg = Counting(delay=0.2)
    threads = [threading.Thread(target=seg.encode, args=(image(7),)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seg.encodes == 1 and seg.cache_info().hits == 5


def test_encode_batch_uses_the_batched_encoder_for_misses_only():
    seg = Counting()
    seg.encode(image(1))
    out = seg.encode_batch([image(1), image(2), image(3), image(2)])
    assert seg.encodes == 3 and [e.features for e in out] == [1.0, 2.0, 3.0, 2.0]
    assert seg.cache_info().misses == 3


def test_encode_rejects_non_rgb_uint8():
    with pytest.raises(SegmenterError, match="to_rgb_uint8"):
        Counting().encode(np.zeros((8, 8), np.float32))


def test_prompt_and_logit_checks():
    with pytest.raises(SegmenterError, match="at least one"):
        check_prompts(Prompts(), (10, 10))
    with pytest.raises(SegmenterError, match="outside"):
        check_prompts(Prompts(points=(Point(10, 0),)), (10, 10))
    check_prompts(Prompts(box=BBox(0, 0, 9, 9)), (10, 10))
    assert check_prev_logits(np.zeros((1, 1, 256, 256))).shape == (256, 256)
    with pytest.raises(SegmenterError, match="256"):
        check_prev_logits(np.zeros((64, 64)))


def test_decode_batch_default_matches_decode_and_checks_lengths():
    seg = Counting()
    emb = seg.encode(image(4))
    out = seg.decode_batch(emb, [Prompts(box=BBox(0, 0, 1, 1))] * 3)
    assert len(out) == 3
    with pytest.raises(SegmenterError, match="prev_logits"):
        seg.decode_batch(emb, [Prompts(box=BBox(0, 0, 1, 1))], [None, None])


class LockedCounting(Counting):
    """Counts encodes per image under a lock (threads call it concurrently)."""

    def __init__(self, **kw):
        super().__init__(delay=0.02, **kw)
        self.lock = threading.Lock()
        self.per_image: dict[float, int] = {}

    def encode_image(self, image):
        time.sleep(self.delay)
        with self.lock:
            self.encodes += 1
            self.per_image[float(image.mean())] = self.per_image.get(float(image.mean()), 0) + 1
        return float(image.mean())


@pytest.mark.parametrize("mixed", [False, True], ids=["encode_batch", "encode_batch+encode"])
def test_concurrent_encode_batch_encodes_each_image_once(mixed):
    seg = LockedCounting()
    images = [image(value) for value in (10, 20, 30, 40)]
    barrier = threading.Barrier(8)
    results: list[list] = [None] * 8

    def work(index):
        barrier.wait()
        if mixed and index % 2:
            results[index] = [seg.encode(img) for img in reversed(images)]
        else:
            results[index] = seg.encode_batch(images + images[:1])  # a repeated image too

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seg.encodes == 4 and set(seg.per_image.values()) == {1}
    assert seg.cache_info().misses == 4
    keys = {e.key for result in results for e in result}
    assert len(keys) == 4


def test_a_failed_batch_encode_releases_its_images():
    class Failing(Counting):
        fail = True

        def encode_images(self, images):
            if self.fail:
                raise RuntimeError("out of memory")
            return super().encode_images(images)

    seg = Failing()
    with pytest.raises(RuntimeError):
        seg.encode_batch([image(1), image(2)])
    seg.fail = False
    assert len(seg.encode_batch([image(1), image(2)])) == 2  # no lock left held
    assert seg.encodes == 2


# Not msagent.testing.BoxBackbone: this one can break the output contract on purpose (mask
# dtype, logits shape) and records what reached decode_prompts.
class BoxBackbone(msagent.Segmenter):
    """A backbone written against the current contract: two primitives, nothing else."""

    multimask_default = False

    def __init__(self, mask_dtype=bool, logits_shape=(256, 256), **kw):
        super().__init__(**kw)
        self.mask_dtype, self.logits_shape, self.seen = mask_dtype, logits_shape, []

    def encode_image(self, image):
        return float(image.mean())

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self.seen.append((list(prompt_sets), list(prev_logits), multimask))
        out = []
        for prompts in prompt_sets:
            mask = np.zeros(embedding.image_size, self.mask_dtype)
            if prompts.box is not None:
                b = prompts.box
                mask[b.y1:b.y2 + 1, b.x1:b.x2 + 1] = 1
            for p in prompts.points:
                mask[p.y, p.x] = p.positive
            out.append(MaskPrediction(mask, np.zeros(self.logits_shape, np.float32), 0.5))
        return out


def test_a_current_backbone_passes_the_conformance_suite():
    from msagent.testing import check_segmenter

    check_segmenter(BoxBackbone(), thin=True)


def test_the_front_doors_validate_before_the_backbone_runs():
    seg = BoxBackbone()
    emb = seg.encode(image(3, (20, 30, 3)))
    with pytest.raises(SegmenterError, match="2 prompt sets but 1 prev_logits"):
        seg.decode_batch(emb, [Prompts(box=BBox(0, 0, 3, 3))] * 2, [None])
    with pytest.raises(SegmenterError, match="outside the 30×20 image"):
        seg.decode(emb, Prompts(points=(Point(30, 0),)))
    with pytest.raises(SegmenterError, match="256×256 low-res logits"):
        seg.decode(emb, Prompts(box=BBox(0, 0, 3, 3)), np.zeros((64, 64)))
    with pytest.raises(SegmenterError, match="needs an Embedding"):
        seg.decode("not an embedding", Prompts(box=BBox(0, 0, 3, 3)))
    assert seg.seen == []  # none of these reached the backbone
    seg.decode(emb, Prompts(box=BBox(0, 0, 3, 3)), np.ones((1, 1, 256, 256)), text="liver")
    (prompts,), (prev,), multimask = seg.seen[0]
    assert prompts.text == "liver" and prev.shape == (256, 256) and prev.dtype == np.float32
    assert multimask is False  # the backbone's default, as a bool


@pytest.mark.parametrize("kw, message", [({"mask_dtype": np.uint8}, "mask must be 20×30 bool"),
                                         ({"logits_shape": (64, 64)}, "256×256 float32")])
def test_outputs_that_break_the_contract_name_the_backbone(kw, message):
    seg = BoxBackbone(**kw)
    seg.name = "threshold"
    emb = seg.encode(image(3, (20, 30, 3)))
    with pytest.raises(SegmenterError, match=f"backbone .threshold. broke the decode contract: .*{message}"):
        seg.decode(emb, Prompts(box=BBox(0, 0, 3, 3)))


def test_the_conformance_suite_fails_a_broken_backbone():
    from msagent.testing import check_segmenter

    class Forgetful(BoxBackbone):
        def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
            return super().decode_prompts(embedding, prompt_sets[:1], prev_logits[:1], multimask=multimask) * len(prompt_sets)

    with pytest.raises(AssertionError, match="conformance check 'decode_batch_equals_decode' failed: Forgetful: "
                                               "decode_batch must equal one decode per prompt set"):
        check_segmenter(Forgetful())


def test_a_backbone_must_implement_decode_prompts_not_the_front_door():
    class FrontDoorOnly(msagent.Segmenter):
        def encode_image(self, image):
            return 0

        def decode(self, embedding, prompts, prev_logits=None, *, multimask=True):
            return MaskPrediction(np.ones(embedding.image_size, bool), np.zeros((256, 256), np.float32), 1.0)

    with pytest.raises(TypeError, match="decode_prompts"):
        FrontDoorOnly()


def test_a_backbone_that_forgets_super_init_still_has_a_cache():
    class Forgetful(BoxBackbone):
        def __init__(self, threshold=0.5):  # no super().__init__()
            self.threshold, self.mask_dtype, self.logits_shape, self.seen = threshold, bool, (256, 256), []

    seg = Forgetful()
    seg.encode(image(1))
    seg.encode(image(1))
    assert seg.cache_info().hits == 1 and seg.cache_info().maxsize == 16
