"""tests/server needs msagent[server] (fastapi, httpx): without it the whole folder is skipped
at collection, here, once (the modules import fastapi and httpx at the top)."""

import pytest

pytest.importorskip("fastapi", reason="pip install 'msagent[server]'")
pytest.importorskip("httpx", reason="pip install 'msagent[server]'")
