"""One rule for the foreground of a mask image with channels (issue 26, item 7): non-zero in
any colour channel, a palette image's index, or alpha when alpha varies; colour and a varying
alpha that mark different pixels are refused. Before, only the red channel was read, so a
green mask, a palette PNG or an alpha-only mask was silently empty: a server session started
from nothing (201) and ``eval --refine-from`` recorded "ok" without an initial mask."""

from __future__ import annotations

import io as _io

import numpy as np
import pytest
from PIL import Image

from msagent import io
from msagent.agent.refine import check_initial_mask, initial_for_case
from msagent.errors import InvalidMask

H, W = 20, 30
FG = np.zeros((H, W), bool)
FG[5:12, 8:20] = True


def green() -> Image.Image:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[FG, 1] = 255
    return Image.fromarray(rgb)


def palette(fg_colour=(0, 200, 0), bg_colour=(0, 0, 0)) -> Image.Image:
    image = Image.fromarray(FG.astype(np.uint8), mode="L").convert("P")
    image.putpalette([*bg_colour, *fg_colour] + [0] * (254 * 3))
    return image


def alpha_only() -> Image.Image:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[FG, 3] = 255
    return Image.fromarray(rgba)


def gray_alpha_only() -> Image.Image:
    la = np.zeros((H, W, 2), np.uint8)
    la[FG, 1] = 255
    return Image.fromarray(la, mode="LA")


def opaque_blue() -> Image.Image:  # an opaque RGBA (alpha 255 everywhere) with a blue mask
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[FG, 2] = 255
    return Image.fromarray(rgba)


def overlay() -> Image.Image:  # a canvas export: coloured, opaque foreground; transparent rest
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[FG] = (0, 255, 0, 255)
    return Image.fromarray(rgba)


# palette: the foreground's colour must not matter, nor a non-black background colour
KINDS = {"green": green, "palette": palette, "palette-white-bg": lambda: palette((255, 0, 0), (255, 255, 255)),
         "alpha-only": alpha_only, "gray-alpha-only": gray_alpha_only, "opaque-blue": opaque_blue,
         "overlay": overlay}


def png(image: Image.Image) -> bytes:
    buffer = _io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", KINDS)
def test_to_mask_reads_the_foreground_in_any_channel(kind, tmp_path):
    image = KINDS[kind]()
    image.save(tmp_path / "m.png")
    assert np.array_equal(io.to_mask(tmp_path / "m.png", (H, W)), FG)  # a file
    assert np.array_equal(io.to_mask(image, (H, W)), FG)  # a PIL image
    if image.mode in ("RGB", "RGBA"):
        assert np.array_equal(io.to_mask(np.asarray(image), (H, W)), FG)  # an array


@pytest.mark.parametrize("kind", KINDS)
def test_initial_masks_use_the_same_rule(kind, tmp_path):
    image = KINDS[kind]()
    image.save(tmp_path / "case-1.png")
    assert np.array_equal(check_initial_mask(tmp_path / "case-1.png", (H, W)), FG)
    assert np.array_equal(check_initial_mask(image, (H, W)), FG)

    class Case:
        id = "case-1"
        ground_truth = FG

    mask, source = initial_for_case(Case(), str(tmp_path))  # eval --refine-from FOLDER
    assert source == "prediction:case-1.png"
    assert np.array_equal(check_initial_mask(mask, (H, W)), FG)


@pytest.mark.parametrize("kind", KINDS)
def test_an_uploaded_initial_mask_uses_the_same_rule(kind):
    pytest.importorskip("fastapi")
    from msagent.server.services import initial_mask_upload

    array = initial_mask_upload(png(KINDS[kind]()), max_pixels=10_000)
    assert np.array_equal(check_initial_mask(array, (H, W)), FG)


def test_a_webapp_ground_truth_upload_uses_the_same_rule():
    pytest.importorskip("fastapi")
    from msagent.webapp.volumes.store import ground_truth_upload

    for make in KINDS.values():
        got = ground_truth_upload(png(make()), "gt.png", (H, W), max_pixels=10_000)
        assert np.array_equal(got, FG)


def test_colour_and_alpha_that_disagree_are_refused_everywhere(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[FG, 3] = 255  # alpha marks the target...
    rgba[:3, :3, 0] = 255  # ...and red marks another place (transparent there)
    image = Image.fromarray(rgba)
    image.save(tmp_path / "m.png")
    for read in (lambda: io.to_mask(tmp_path / "m.png", (H, W)),
                 lambda: io.to_mask(image, (H, W)),
                 lambda: check_initial_mask(tmp_path / "m.png", (H, W))):
        with pytest.raises(InvalidMask, match="alpha"):
            read()
    pytest.importorskip("fastapi")
    from msagent.server.services import initial_mask_upload

    with pytest.raises(InvalidMask, match="alpha"):
        initial_mask_upload(png(image), max_pixels=10_000)


def test_gray_masks_keep_their_values_for_the_binary_check(tmp_path):
    """A probability map saved as gray RGB is still refused as non-binary, not thresholded."""
    ramp = np.repeat(np.linspace(0, 255, W, dtype=np.uint8)[None, :, None], H, 0).repeat(3, 2)
    with pytest.raises(InvalidMask, match="binary"):
        check_initial_mask(ramp, (H, W))
    two = np.zeros((H, W, 3), np.uint8)
    two[FG] = (0, 7, 0)
    assert np.array_equal(check_initial_mask(two, (H, W)), FG)


def test_a_server_session_starts_from_a_green_initial_mask():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from msagent.io.wire import png_bytes
    from msagent.server import ServerConfig, create_app
    from msagent.testing import BrightBackbone
    from msagent.types import decode_mask

    image = np.zeros((H, W, 3), np.uint8)
    image[FG] = 250
    files = {"image": ("i.png", png_bytes(image), "image/png"),
             "initial_mask": ("m.png", png(green()), "image/png")}
    with TestClient(create_app(BrightBackbone(), ServerConfig(batch_window_ms=0))) as client:
        created = client.post("/v1/sessions", files=files)
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        start = client.get(f"/v1/sessions/{sid}/mask", params={"format": "rle"})
        assert start.status_code == 200, start.text  # before: 409, no mask (started from nothing)
        assert np.array_equal(decode_mask(start.json()), FG)
