import pytest

from msagent.testing import mni152_slice


@pytest.fixture(scope="session")
def mni_slice():
    return mni152_slice("brain", resolution=2)
