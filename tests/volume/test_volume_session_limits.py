"""The core of bounded 3-D sessions (issue 26, items 2 and 4): a propagation stops between
slices when asked (the Propagator contract's ``checkpoint``/``propagate_until``), a session
stopped mid-propagation stays as it was, and slice embeddings stay within their memory and
disk budgets without touching the backbone's 2-D embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from msagent.backbones.propagation import PropagationStopped, Propagator, Seed, SliceStack
from msagent.testing import BrightBackbone, make_tube
from msagent.types import BBox
from msagent.volume.embeddings import EmbeddingStore, SpillBudget
from msagent.volume.propagation import GenericPropagator
from msagent.volume.session import (
    PropagationCancelled,
    PropagationTimedOut,
    VolumeSession,
    VolumeSessionNotFound,
)
from msagent.volume.stack import build_stack


def tube_stack(count: int = 12) -> SliceStack:
    volume, _ = make_tube(count=count)
    gray = np.clip(volume, 0, 255).astype(np.uint8)
    return SliceStack(gray)


def seed_of(stack: SliceStack, index: int) -> Seed:
    return Seed(stack.gray[index] > 120)


def stop_after(n: int, calls: list[int]):
    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > n
    return should_stop


def test_generic_propagation_stops_between_slices_when_asked():
    stack = tube_stack()
    prop = GenericPropagator(BrightBackbone(), stack)
    prop.add_seed(6, seed_of(stack, 6))
    with pytest.raises(PropagationStopped) as stopped:
        prop.propagate_until(stop_after(4, []))  # the first check is before any slice
    assert stopped.value.done == 3 and prop.progress == 3
    assert prop.decodes == 3  # nothing decoded past the stop
    fresh = GenericPropagator(BrightBackbone(), stack)
    fresh.add_seed(6, seed_of(stack, 6))
    assert len(fresh.propagate_until(lambda: False)) == 12 and fresh.progress == 11


def test_a_propagator_without_checkpoints_still_runs_to_the_end():
    class Old(Propagator):  # a third-party propagator written before checkpoint()
        def propagate(self):
            self.results = {i: None for i in range(self.stack.count)}
            return self.results

    stack = tube_stack(4)
    assert len(Old(stack).propagate_until(lambda: False)) == 4
    with pytest.raises(PropagationStopped):  # checked once, before it starts
        Old(stack).propagate_until(lambda: True)


def session_on(count: int = 12, **kwargs) -> VolumeSession:
    volume, _ = make_tube(count=count)
    sliced = build_stack(volume, window=(200, 110))
    session = VolumeSession(sliced, BrightBackbone(), method="generic", target="tube", **kwargs)
    height, width = session.image_size
    session.add_box(6, BBox(0, 0, width - 1, height - 1))
    return session


def test_a_stopped_propagation_leaves_the_session_as_it_was():
    session = session_on()
    with pytest.raises(PropagationTimedOut, match="time limit"):
        session.propagate(deadline=0.0)  # already past
    assert session.state.results is None and session.state.pending == [6]
    assert session.propagation()["outcome"] == "timeout"
    assert session.propagate()  # and the next one runs to the end
    assert session.propagation()["outcome"] == "complete" and len(session.state.results) == 12


def test_cancel_and_drop_stop_a_running_propagation():
    session = session_on()
    real = session.store.work

    def cancel_at_third_decode(kind, fn, seen=[]):  # noqa: B006
        if kind == "decode":
            seen.append(1)
            if len(seen) == 3:
                session.cancel("a test")
        return real(kind, fn)

    session.store.work = cancel_at_third_decode
    with pytest.raises(PropagationCancelled, match="a test"):
        session.propagate()
    assert session.state.results is None and session.propagation()["done"] == 3

    session.store.work = real
    session.drop("deleted")
    with pytest.raises(VolumeSessionNotFound, match="deleted"):
        session.propagate()


def test_slice_encodes_bypass_the_2d_embedding_cache():
    segmenter = BrightBackbone(cache_size=4)
    two_d = segmenter.encode(np.zeros((8, 8, 3), np.uint8))
    stack = tube_stack()
    store = EmbeddingStore(segmenter, stack)
    for index in range(stack.count):
        store[index]
    assert segmenter.cache_info().size == 1 and segmenter._cache.contains(two_d.key)
    assert store.encodes == 12


def test_spilled_embeddings_are_removed_once_read_back_and_the_budgets_hold(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stack = tube_stack(8)
    store = EmbeddingStore(BrightBackbone(), stack, max_in_memory=2)
    for index in range(8):
        store[index]
    files = sorted(p.name for p in store.folder.iterdir())
    assert len(files) == 6 and store.spilled_bytes > 0
    one = store.spilled_bytes // 6
    store[0]  # read back: its file goes
    assert "0.pkl" not in {p.name for p in store.folder.iterdir()}
    store.close()
    assert not list(tmp_path.iterdir())  # close removes the folder

    # a store's own budget: what does not fit is forgotten (encoded again if needed)
    small = EmbeddingStore(BrightBackbone(), stack, max_in_memory=2, max_spill_bytes=2 * one)
    for index in range(8):
        small[index]
    assert small.spilled_bytes <= 2 * one and small.forgotten == 4
    encodes = small.encodes
    small[7], small[0]  # 7 in memory; 0 spilled or forgotten
    assert small.encodes in (encodes, encodes + 1)
    small.close()

    # the shared budget: two stores together
    budget = SpillBudget(3 * one)
    a = EmbeddingStore(BrightBackbone(), stack, max_in_memory=1, spill_budget=budget)
    b = EmbeddingStore(BrightBackbone(), stack, max_in_memory=1, spill_budget=budget)
    for index in range(4):
        a[index], b[index]
    assert budget.used <= 3 * one and a.spilled_bytes + b.spilled_bytes == budget.used
    a.close()
    b.close()
    assert budget.used == 0
