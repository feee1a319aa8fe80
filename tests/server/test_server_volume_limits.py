"""The server's volume uploads: the voxel limit from the headers (``max_voxels``,
``msagent serve --max-voxels``), irregular DICOM series, and NaN voxels shown black."""

from __future__ import annotations

import gzip
import io as _io

import numpy as np
import pytest
from PIL import Image

import msagent
from msagent.server import ServerConfig
from msagent.webapp import create_web_app

nib = pytest.importorskip("nibabel")


@pytest.fixture
def client_for():
    from fastapi.testclient import TestClient

    def make(**config):
        app = create_web_app(msagent.load_backbone("mybackbone"), ServerConfig(batch_window_ms=0, **config))
        return TestClient(app)

    return make


def nifti_bytes(data, affine=np.eye(4)):
    image = nib.Nifti1Image(data, affine)
    return gzip.compress(image.to_bytes())


def upload(client, name, data):
    return client.post("/v1/volumes", files=[("files", (name, data))])


def test_upload_over_max_voxels_is_refused_before_decoding(client_for):
    zeros = nifti_bytes(np.zeros((128, 128, 64), np.uint8))      # 1,048,576 voxels
    assert len(zeros) < 20_000
    with client_for(max_voxels=1_000_000) as client:
        refused = upload(client, "zeros.nii.gz", zeros)
        assert refused.status_code == 422
        assert "over the limit of 1,000,000" in refused.text
        assert client.app.state.msagent_volumes._items == {}
    with client_for(max_voxels=2_000_000) as client:
        assert upload(client, "zeros.nii.gz", zeros).status_code == 201


def test_default_server_limit_and_serve_flag(monkeypatch):
    from msagent.cli import build_parser
    from msagent.cli.serve import build_config

    monkeypatch.delenv("MSAGENT_MAX_VOXELS", raising=False)
    assert ServerConfig().max_voxels == 2**27
    parser = build_parser()
    assert build_config(parser.parse_args(["serve", "--max-voxels", "5000"])).max_voxels == 5000
    assert build_config(parser.parse_args(["serve"])).max_voxels == 2**27
    monkeypatch.setenv("MSAGENT_MAX_VOXELS", "7000")
    assert build_config(parser.parse_args(["serve"])).max_voxels == 7000


def test_nan_voxels_are_black_in_served_slices(client_for):
    data = np.full((20, 16, 3), 50.0, np.float32)
    data[10:, :, :] = 150.0
    data[:5, :5, 1] = np.nan
    data[6, 6, 1] = np.inf
    with client_for() as client:
        info = upload(client, "pet.nii.gz", nifti_bytes(data)).json()
        png = client.get(f"/v1/volumes/{info['volume_id']}/slice.png", params={"index": 1})
    shown = np.asarray(Image.open(_io.BytesIO(png.content)))
    volume = msagent.io.Volume(data, np.eye(4))
    nan_pixels = ~np.isfinite(volume.slice(1))
    assert nan_pixels.sum() == 26 and not shown[nan_pixels].any()
    assert shown[~nan_pixels].max() == 255 and info["window"][0] > 0


def test_dicom_series_with_a_missing_slice_is_refused(client_for, tmp_path):
    from msagent.testing import write_dicom_series

    pytest.importorskip("pydicom")
    pytest.importorskip("SimpleITK")
    write_dicom_series(tmp_path / "ct", [0, 2.5, 5, 10])
    files = [("files", (p.name, p.read_bytes())) for p in sorted((tmp_path / "ct").iterdir())]
    with client_for() as client:
        refused = client.post("/v1/volumes", files=files)
        assert refused.status_code == 422 and "5.000 mm between" in refused.text
        regular = [f for f in files if f[1][0] != "img001.dcm"]   # drop the slice at 10 mm
        assert client.post("/v1/volumes", files=regular).status_code == 201
