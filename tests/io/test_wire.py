"""Wire formats shared by the server and the remote backbone, and upstream form parsing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from msagent.backbones.segmenter import image_key
from msagent.errors import InvalidImage, InvalidInput
from msagent.io.wire import (
    ImageTooLarge,
    decode_upload,
    pack_array,
    png_bytes,
    unpack_array,
)
from msagent.types import BBox, Point


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_logits_round_trip_exactly_in_float32_and_closely_in_float16():
    logits = np.random.default_rng(0).normal(0, 8, (256, 256)).astype(np.float32)
    assert np.array_equal(unpack_array(pack_array(logits, "float32")), logits)
    half = unpack_array(pack_array(logits, "float16"))
    assert np.allclose(half, logits, rtol=1e-3, atol=1e-4)  # float16: 11 significant bits
    assert np.array_equal(unpack_array(pack_array(half, "float16")), half)  # stable
    huge = unpack_array(pack_array(np.full((2, 2), 1e9, np.float32), "float16"))
    assert np.isfinite(huge).all()  # clipped to float16's range, not inf


@pytest.mark.parametrize("packed, words", [
    ({"dtype": "int8", "shape": [1], "data": "AA=="}, "dtype"),
    ({"dtype": "float32", "shape": [0], "data": ""}, "positive integers"),
    ({"dtype": "float32", "shape": [4096, 4096], "data": ""}, "over the limit"),
    ({"dtype": "float32", "shape": [2], "data": "AAAA"}, "needs 8"),
    ({"dtype": "float32", "shape": [1], "data": "not base64!"}, "base64"),
    ({"dtype": "float32", "shape": [1], "data": pack_array(np.array([np.nan]), "float32")["data"]},
     "NaN"),
])
def test_bad_arrays_are_invalid_input(packed, words):
    with pytest.raises(InvalidInput, match=words):
        unpack_array(packed)


def test_uploads_decode_to_the_clients_array_and_hash():
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(decode_upload(png_bytes(rgb), max_pixels=10_000), rgb)
    buffer = io.BytesIO()
    np.save(buffer, rgb)
    assert image_key(decode_upload(buffer.getvalue(), max_pixels=10_000)) == image_key(rgb)
    rgba = Image.fromarray(np.dstack([rgb, np.full((20, 30), 9, np.uint8)]))
    assert np.array_equal(decode_upload(encoded(rgba, "PNG"), max_pixels=10_000), rgb)
    jpeg = decode_upload(encoded(Image.fromarray(rgb), "JPEG"), max_pixels=10_000)
    assert jpeg.shape == (20, 30, 3) and jpeg.dtype == np.uint8


def test_sixteen_bit_and_float_uploads_are_windowed():
    ramp = np.arange(600, dtype=np.uint16).reshape(20, 30) * 50
    gray16 = decode_upload(encoded(Image.fromarray(ramp), "PNG"), max_pixels=10_000)
    assert gray16.shape == (20, 30, 3) and gray16.min() == 0 and gray16.max() == 255
    buffer = io.BytesIO()
    np.save(buffer, ramp.astype(np.float32) - 1000)
    assert decode_upload(buffer.getvalue(), max_pixels=10_000).max() == 255


def test_unreadable_and_oversized_uploads():
    with pytest.raises(InvalidImage, match="empty"):
        decode_upload(b"", max_pixels=100)
    with pytest.raises(InvalidImage, match="not a readable image"):
        decode_upload(b"GIF89a garbage", max_pixels=100)
    with pytest.raises(InvalidImage, match="not a readable .npy"):
        decode_upload(b"\x93NUMPY\x01\x00garbage", max_pixels=100)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3, 4, 5)))
    with pytest.raises(InvalidImage, match="2-D image"):
        decode_upload(buffer.getvalue(), max_pixels=10_000)
    bomb = encoded(Image.new("L", (5000, 5000)), "PNG")  # small file, 25 MP
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_upload(bomb, max_pixels=1_000_000)


def test_upstream_form_fields_parse_like_upstream():
    pytest.importorskip("fastapi")
    from msagent.server.compat import parse_prompts

    prompts = parse_prompts("[[10, 20], [30.4, 40.6]]", "[1, 0]", "[50, 60, 5, 6]")
    assert prompts.box == BBox(5, 6, 50, 60)  # corners put in order
    assert prompts.points == (Point(10, 20, True), Point(30, 41, False))
    assert parse_prompts("[[1, 2]]", None, None).points == (Point(1, 2, True),)
    assert parse_prompts(None, None, "[[1, 2, 3, 4]]").box == BBox(1, 2, 3, 4)
    for args, words in [(("[[1, 2]]", "[1, 0]", None), "2 labels for 1 points"),
                        ((None, None, "[1, 2, 3]"), r"\[x1, y1, x2, y2\]"),
                        ((None, None, "{"), "must be JSON"),
                        (("[[1, NaN]]", None, None), "finite numbers"),
                        (("[[1, 2, 3]]", None, None), r"\[\[x, y\], ...\]")]:
        with pytest.raises(InvalidInput, match=words):
            parse_prompts(*args)
