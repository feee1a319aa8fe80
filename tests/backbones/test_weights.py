"""msagent.backbones.weights: checkpoint resolution order, messages, and safe state_dict reading."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from msagent.backbones import weights
from msagent.errors import WeightsMismatch, WeightsNotFound
from msagent.testing import add_to_hf_cache

ENV = "MSAGENT_TEST_CHECKPOINT"
REPO, FILE = "org/tiny-model", "tiny.pt"



@pytest.fixture
def env(monkeypatch, tmp_path):
    """No variable set; an empty HF cache at ``tmp_path / "hf"``."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return monkeypatch


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"w": torch.ones(2)}, path)
    return path


def resolve(explicit=None, candidates=((REPO, FILE),), **kwargs):
    return weights.resolve_checkpoint(explicit, ENV, candidates, what="Tiny",
                                      hint="Get it with `hf download org/tiny-model`.", **kwargs)


def test_order_is_explicit_then_env_then_hf_cache_then_fallbacks(env, tiny, tmp_path):
    other = tmp_path / "other.pt"
    shutil.copyfile(tiny, other)
    cached = add_to_hf_cache(tmp_path / "hf", REPO, FILE, tiny)
    assert resolve() == cached
    env.setenv(ENV, str(other))
    assert resolve() == other
    assert resolve(tiny) == tiny  # the option wins over the variable
    env.delenv(ENV)
    shutil.rmtree(tmp_path / "hf")
    assert resolve(fallbacks=[lambda: None, lambda: other]) == other


def test_later_hf_candidates_are_tried(env, tiny, tmp_path):
    cached = add_to_hf_cache(tmp_path / "hf", "org/second", "b.pt", tiny)
    assert resolve(candidates=[(REPO, FILE), ("org/second", "b.pt")]) == cached


def test_hf_cache_is_read_from_the_environment_at_call_time(env, tiny, tmp_path):
    assert weights.hf_cached(REPO, FILE) is None
    cached = add_to_hf_cache(tmp_path / "home" / "hub", REPO, FILE, tiny)
    env.delenv("HF_HUB_CACHE")
    env.setenv("HF_HOME", str(tmp_path / "home"))
    assert weights.hf_cache_dir() == str(tmp_path / "home" / "hub")
    assert weights.hf_cached(REPO, FILE) == cached


def test_missing_weights_say_where_they_were_looked_for_and_what_to_do(env, tmp_path):
    with pytest.raises(WeightsNotFound) as info:
        resolve()
    message = str(info.value)
    for part in ("Tiny weights are not on this machine", "checkpoint=", f"${ENV}",
                 f"{REPO}/{FILE}", "Hugging Face cache", "hf download org/tiny-model"):
        assert part in message
    with pytest.raises(WeightsNotFound, match="from checkpoint="):
        resolve(tmp_path / "missing.pt")
    env.setenv(ENV, str(tmp_path / "also-missing.pt"))
    with pytest.raises(WeightsNotFound, match=rf"also-missing.pt \(from \${ENV}\)"):
        resolve()


def test_explicit_checkpoint_is_none_when_nothing_given(env):
    assert weights.explicit_checkpoint(None, ENV, what="Tiny", hint="") is None


def test_wrappers_are_unwrapped_and_the_module_prefix_stripped(tmp_path):
    tensors = {"a.weight": torch.ones(2, 2), "a.bias": torch.zeros(2)}
    prefixed = {f"module.{k}": v for k, v in tensors.items()}
    layouts = [tensors, {"model": tensors}, {"state_dict": prefixed, "epoch": 3},
               {"model_state_dict": prefixed, "optimizer_state_dict": {"state": {}}},
               {"model": {"state_dict": tensors}}]
    for i, layout in enumerate(layouts):
        torch.save(layout, tmp_path / f"{i}.pt")
        loaded = weights.load_state_dict(tmp_path / f"{i}.pt")
        assert loaded.keys() == tensors.keys()
        torch.testing.assert_close(loaded["a.weight"], tensors["a.weight"])


def test_wrapper_order_and_prefix_are_choices():
    inner, outer = {"x": torch.zeros(1)}, {"y": torch.zeros(1)}
    both = {"model": outer, "model_state_dict": inner}
    assert weights.unwrap_state_dict(both).keys() == {"y"}
    assert weights.unwrap_state_dict(both, wrappers=("model_state_dict",)).keys() == {"x"}
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert weights.unwrap_state_dict(mixed).keys() == {"module.a", "b"}  # not all prefixed
    assert weights.unwrap_state_dict({"m.a": torch.zeros(1)}, strip_prefix="m.").keys() == {"a"}


def test_unreadable_unsafe_or_non_state_dict_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatch, match=r"cannot read .*garbage.pt.*weights_only=True"):
        weights.load_state_dict(garbage, expected="tiny.pt")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, unsafe)  # a pickled module
    with pytest.raises(WeightsMismatch, match="expected tiny.pt"):
        weights.load_state_dict(unsafe, expected="tiny.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(WeightsMismatch, match="holds no state_dict"):
        weights.load_state_dict(tmp_path / "meta.pt")
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "other.pt")
    with pytest.raises(WeightsMismatch, match=r"not a Tiny checkpoint \(no tiny.w\); expected t"):
        weights.load_state_dict(tmp_path / "other.pt", require=("Tiny", "tiny.w"),
                                expected="tiny.pt")


def test_load_into_names_missing_unexpected_and_misshapen_keys():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = dict(model.state_dict())
    state.pop("1.bias")
    state["0.weight"] = torch.zeros(3, 5)
    state["extra"] = torch.zeros(1)
    with pytest.raises(WeightsMismatch) as info:
        weights.load_into(model, state, "bad.pt", what="Tiny", hint="Use tiny.pt.")
    message = str(info.value)
    assert message.startswith("bad.pt is not a Tiny checkpoint")
    for part in ("missing 1 (e.g. 1.bias)", "unexpected 1 (e.g. extra)",
                 "wrong shape 1 (e.g. 0.weight)", "Use tiny.pt."):
        assert part in message
    good = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    weights.load_into(model, good, what="Tiny")
    assert torch.all(model[0].weight == 0.5)


def test_importing_the_module_imports_no_torch():
    code = ("import sys, msagent.backbones.weights; "
            "assert 'torch' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)
