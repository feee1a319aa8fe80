"""Finding and reading model checkpoints for backbone plugins (never downloads).

One resolution order for every backbone: the ``checkpoint=`` option, the backbone's
environment variable, then files already in the Hugging Face cache
(``huggingface_hub.try_to_load_from_cache``), then any plugin-specific places (e.g. the
ModelScope cache). Checkpoints are read with ``torch.load(map_location="cpu",
weights_only=True)``; training wrappers (``{"model": ...}``, ``{"state_dict": ...}``,
``{"model_state_dict": ...}``) and a DataParallel ``module.`` prefix are removed.

This module imports neither NumPy nor torch at import time: torch is imported inside the
functions that read or load tensors, so ``import msagent`` stays light.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msagent.errors import WeightsMismatch, WeightsNotFound

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["explicit_checkpoint", "hf_cache_dir", "hf_cached", "load_into", "load_state_dict",
           "resolve_checkpoint", "unwrap_state_dict"]

#: training-script wrappers around a state_dict, tried in this order
WRAPPERS = ("model", "state_dict", "model_state_dict")


def hf_cache_dir() -> str | None:
    """The hub cache as the environment says now (``HF_HUB_CACHE``, then ``HF_HOME/hub``);
    None lets huggingface_hub use its default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hf_cached(repo_id: str, filename: str) -> Path | None:
    """``filename`` of ``repo_id`` if it is already in the Hugging Face cache, else None.

    Never downloads; None too when huggingface_hub is not installed.
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def explicit_checkpoint(explicit: str | os.PathLike | None, env_var: str, *, what: str,
                        hint: str) -> Path | None:
    """The path given as ``checkpoint=`` (``explicit``) or in ``$env_var``; None if neither.

    A given path that is not a file raises :class:`WeightsNotFound` naming where it came
    from, followed by ``hint`` (how to get the weights).
    """
    given = explicit or os.environ.get(env_var)
    if not given:
        return None
    path = Path(given).expanduser()
    if not path.is_file():
        origin = "checkpoint=" if explicit else f"${env_var}"
        raise WeightsNotFound(f"{what} weights not found at {path} (from {origin}). {hint}")
    return path


def resolve_checkpoint(explicit: str | os.PathLike | None, env_var: str,
                       hf_candidates: Iterable[tuple[str, str]] = (), *, what: str, hint: str,
                       fallbacks: Sequence[Callable[[], Path | None]] = ()) -> Path:
    """A checkpoint path: ``explicit``, then ``$env_var``, then the first of
    ``hf_candidates`` (``(repo_id, filename)`` pairs) in the Hugging Face cache, then the
    first of ``fallbacks`` that returns a path.

    :param what: the weights' name in messages, e.g. ``"MedSAM2"``.
    :param hint: how to get them (exact downloads, the option and the variable to set).
    :raises WeightsNotFound: nothing found; the message names what was looked for.
    """
    path = explicit_checkpoint(explicit, env_var, what=what, hint=hint)
    if path is not None:
        return path
    candidates = list(hf_candidates)
    for repo_id, filename in candidates:
        path = hf_cached(repo_id, filename)
        if path is not None:
            log.info("using %s weights from the Hugging Face cache: %s", what, path)
            return path
    for finder in fallbacks:
        path = finder()
        if path is not None:
            log.info("using %s weights from %s", what, path)
            return path
    names = ", ".join(f"{repo_id}/{filename}" for repo_id, filename in candidates)
    cached = f", and none of {names} in the Hugging Face cache" if names else ""
    raise WeightsNotFound(f"{what} weights are not on this machine: no checkpoint= given, "
                          f"${env_var} unset{cached}. {hint}")


def unwrap_state_dict(state: object, path: Path | str = "checkpoint", *,
                      wrappers: Sequence[str] = WRAPPERS,
                      strip_prefix: str = "module.") -> dict[str, torch.Tensor]:
    """The flat ``name → tensor`` mapping inside a loaded checkpoint.

    Wrappers named in ``wrappers`` are removed (first match wins, repeatedly, so
    ``{"model": {"state_dict": ...}}`` works); ``strip_prefix`` is removed when every key
    carries it (a DataParallel/DDP save). Anything that is not a mapping of tensors raises
    :class:`WeightsMismatch`.
    """
    import torch

    while isinstance(state, Mapping):
        inner = next((state[w] for w in wrappers if isinstance(state.get(w), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
        raise WeightsMismatch(f"{path} holds no state_dict (a mapping of parameter names to "
                              "tensors)")
    if strip_prefix and state and all(str(k).startswith(strip_prefix) for k in state):
        return {k.removeprefix(strip_prefix): v for k, v in state.items()}
    return dict(state)


def load_state_dict(path: Path | str, *, wrappers: Sequence[str] = WRAPPERS,
                    strip_prefix: str = "module.", expected: str = "",
                    require: tuple[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU and unwrap it
    (:func:`unwrap_state_dict`).

    :param expected: the file that was expected, for the message, e.g. ``"an official SAM .pth"``.
    :param require: ``(what, key)``: the state_dict must hold ``key``, else it "is not a
        <what> checkpoint".
    :raises WeightsMismatch: unreadable, unsafe (pickled objects), not a state_dict, or
        without the required key.
    """
    import torch

    tail = f"; expected {expected}" if expected else ""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise WeightsMismatch(f"cannot read {path} as a PyTorch checkpoint with "
                              f"weights_only=True ({type(exc).__name__}: {exc}){tail}") from None
    try:
        state = unwrap_state_dict(state, path, wrappers=wrappers, strip_prefix=strip_prefix)
    except WeightsMismatch as exc:
        raise WeightsMismatch(f"{exc}{tail}") from None
    if require is not None and require[1] not in state:
        raise WeightsMismatch(f"{path} is not a {require[0]} checkpoint (no {require[1]}){tail}")
    return state


def load_into(model: torch.nn.Module, state: Mapping[str, Any], source: Path | str = "checkpoint",
              *, what: str, hint: str = "") -> None:
    """Load ``state`` into ``model`` strictly.

    :raises WeightsMismatch: ``"<source> is not a <what> checkpoint: missing N (e.g. ...);
        unexpected N (...); wrong shape N (...). <hint>"``.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state)
                   if tuple(expected[k].shape) != tuple(state[k].shape))
    tail = f" {hint}" if hint else ""
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise WeightsMismatch(f"{source} is not a {what} checkpoint: {'; '.join(parts)}.{tail}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsMismatch(f"{source} is not a {what} checkpoint: {exc}{tail}") from None
