"""Fixtures for msagent's tests and for plugin authors' tests, loaded by pytest through the
``pytest11`` entry point ``msagent`` (installing msagent is enough):

- ``phantom`` — :func:`msagent.testing.make_phantom`'s default (image, mask);
- ``mni_slice`` — an MNI152 axial slice and its brain mask (needs nilearn);
- ``hf_cache`` — an empty Hugging Face cache in a temporary folder, with ``$HF_HOME`` and
  ``$HF_HUB_CACHE`` pointed at it; call it as ``hf_cache(repo_id, filename, source)`` to put a
  file in it;
- ``isolated_registry`` — a fresh process-wide plugin registry for one test (the previous one
  is restored after); call it with plugin objects to register them.

Importing this module imports the ``msagent`` package (as any submodule does: numpy, attrs,
pluggy, OpenCV, SciPy; about 0.7 s on a 2-core CPU, measured once), never torch, nilearn,
transformers or the server stack: those load when a fixture that needs them runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


class HFCache:
    """A temporary Hugging Face cache: ``home`` is ``$HF_HOME``, ``root`` is ``$HF_HUB_CACHE``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "hub"
        self.root.mkdir(parents=True, exist_ok=True)

    def __call__(self, repo_id: str, filename: str, source: str | os.PathLike) -> Path:
        """Copy ``source`` into the cache as ``repo_id``'s ``filename``; return its path."""
        from msagent.testing.data import add_to_hf_cache

        return add_to_hf_cache(self.root, repo_id, filename, Path(source))


class IsolatedRegistry:
    """Installs registries for one test; :meth:`restore` puts the original back."""

    def __init__(self) -> None:
        from msagent.plugins import get_registry, set_registry

        self._set = set_registry
        self._previous = get_registry()
        set_registry(None)  # a fresh one is built, from the entry points, on first use

    def __call__(self, *plugins: object, load_entrypoints: bool = True):
        """Install a registry of the entry points (unless ``load_entrypoints=False``) and
        ``plugins``; return it."""
        from msagent.plugins import Registry, make_plugin_manager

        pm = make_plugin_manager(load_entrypoints=load_entrypoints)
        for index, plugin in enumerate(plugins):
            pm.register(plugin, name=f"test-plugin-{index}")
        registry = Registry(pm)
        self._set(registry)
        return registry

    def restore(self) -> None:
        self._set(self._previous)


@pytest.fixture
def phantom():
    """A bright ellipse on a dark noisy background: (160×224×3 uint8 image, bool mask)."""
    from msagent.testing.data import make_phantom

    return make_phantom()


@pytest.fixture(scope="session")
def mni_slice():
    """An axial MRI slice of the MNI152 T1 template with its brain mask (needs nilearn)."""
    from msagent.testing.data import mni152_slice

    return mni152_slice("brain", resolution=2)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> HFCache:
    """An empty Hugging Face cache, ``$HF_HOME`` and ``$HF_HUB_CACHE`` pointed at it."""
    cache = HFCache(tmp_path / "hf-home")
    monkeypatch.setenv("HF_HOME", str(cache.home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache.root))
    return cache


@pytest.fixture
def isolated_registry():
    """A fresh process-wide registry for this test; the previous one is restored after."""
    isolated = IsolatedRegistry()
    try:
        yield isolated
    finally:
        isolated.restore()
