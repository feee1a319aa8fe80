import numpy as np
import pytest
from PIL import Image

from msagent import io
from msagent.errors import InvalidImage, InvalidMask


def test_gray_16bit_is_windowed_to_rgb_uint8():
    rng = np.random.default_rng(0)
    ct = rng.integers(0, 1200, (30, 40)).astype(np.uint16)
    ct[0, 0] = 65000  # a hot pixel must not flatten the rest
    rgb = io.to_rgb_uint8(ct)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].std() > 40 and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_float_bool_channel_first_and_alpha_inputs():
    assert io.to_rgb_uint8(np.linspace(0, 1, 100).reshape(10, 10)).max() == 255
    assert set(np.unique(io.to_rgb_uint8(np.eye(5, dtype=bool)))) == {0, 255}
    assert io.to_rgb_uint8(np.zeros((3, 20, 30), np.uint8)).shape == (20, 30, 3)
    assert io.to_rgb_uint8(np.zeros((20, 30, 4), np.uint8)).shape == (20, 30, 3)
    assert not io.to_rgb_uint8(np.full((5, 5), 7.0)).any()  # constant image: black, no crash


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 5)), "empty"),
    (np.array([[1.0, np.nan]]), "NaN"),
    (np.zeros((40, 64, 64)), "3-D volume"),
    (np.zeros((2, 3, 4, 5)), "3-D volume"),
    (np.array([["a", "b"]]), "numeric"),
])
def test_bad_arrays_get_clear_errors(bad, message):
    with pytest.raises(InvalidImage, match=message):
        io.to_rgb_uint8(bad)


def test_files_png_npy_corrupt_missing_and_too_large(tmp_path):
    Image.fromarray(np.full((12, 14), 99, np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", np.ones((12, 14), np.float32))
    assert io.to_rgb_uint8(tmp_path / "a.png").shape == (12, 14, 3)
    assert io.to_rgb_uint8(str(tmp_path / "b.npy")).shape == (12, 14, 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InvalidImage, match="not a readable image"):
        io.to_rgb_uint8(tmp_path / "bad.png")
    with pytest.raises(InvalidImage, match="not found"):
        io.to_rgb_uint8(tmp_path / "missing.png")
    with pytest.raises(InvalidImage, match="over the limit"):
        io.to_rgb_uint8(tmp_path / "a.png", max_pixels=100)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidImage, match="unsupported"):
        io.to_rgb_uint8(tmp_path / "notes.txt")


def test_masks_size_and_emptiness_are_checked(tmp_path):
    mask = np.zeros((10, 12), np.uint8); mask[2:5, 3:6] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert io.to_mask(tmp_path / "m.png", (10, 12)).sum() == 9
    with pytest.raises(InvalidMask, match="must match"):
        io.to_mask(mask, (12, 10))
    with pytest.raises(InvalidMask, match="empty"):
        io.to_mask(np.zeros((10, 12)), (10, 12))
    assert not io.to_mask(np.zeros((4, 4)), allow_empty=True).any()


def test_png_writes_are_atomic_and_round_trip(tmp_path):
    mask = np.zeros((7, 9), bool); mask[1:3] = True
    io.save_mask_png(mask, tmp_path / "out" / "mask.png")
    assert np.array_equal(io.to_mask(tmp_path / "out" / "mask.png"), mask)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mask.png"]


@pytest.mark.parametrize("bad", [np.array([["x"]]), np.full((8, 9), "1"), np.array([[None]], object),
                                 np.ones((8, 9), complex)])
def test_a_ground_truth_must_be_bool_or_numeric(bad):
    from msagent.errors import InvalidMask
    from msagent.io import to_mask

    with pytest.raises(InvalidMask, match="bool or numeric"):
        to_mask(bad)


@pytest.mark.slow
def test_the_agent_checks_its_ground_truth(litemedsam):
    import msagent
    from msagent.errors import InvalidMask

    image = np.zeros((8, 9, 3), np.uint8)
    agent = msagent.Agent(msagent.load_policy("oracle-box"), litemedsam)
    with pytest.raises(InvalidMask, match="bool or numeric"):
        agent.run(image, "x", np.full((8, 9), "x"))
    with pytest.raises(InvalidMask, match="must match the image"):
        agent.run(image, "x", np.ones((9, 8), bool))
    with pytest.raises(InvalidMask, match="bool or numeric"):
        msagent.segment(image, "x", backbone=litemedsam, policy="oracle-box", ground_truth=np.array([["x"]]))
