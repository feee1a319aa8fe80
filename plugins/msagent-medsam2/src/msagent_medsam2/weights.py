"""Finding and loading SAM2.1 / MedSAM2 checkpoints (never downloads).

Resolution order, per backbone: the ``checkpoint=`` option, the backbone's environment
variable (``$MSAGENT_MEDSAM2_CHECKPOINT``, ``$MSAGENT_SAM2_CHECKPOINT``), the Hugging Face
cache (``huggingface_hub.try_to_load_from_cache``). Files are read with
``torch.load(weights_only=True, map_location="cpu")``; the official layout (sam2's
``_load_checkpoint``, and MedSAM2's files) is ``{"model": state_dict}``; flat state_dicts are
accepted too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import torch

from msagent.errors import WeightsMismatch, WeightsNotFound

log = logging.getLogger(__name__)

TRUNK_KEY = "image_encoder.trunk.patch_embed.proj.weight"
#: (trunk width, number of Hiera blocks) → SAM2.1 variant
HIERA_SHAPES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}


@attrs.frozen
class HubFile:
    """A checkpoint published on the Hugging Face Hub."""

    repo_id: str
    filename: str
    label: str = ""  # e.g. the variant it holds

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"


@attrs.frozen
class WeightsSource:
    """Where one backbone's weights may come from, and what to call them in messages."""

    what: str  # "MedSAM2", "SAM2.1"
    env: str
    files: tuple[HubFile, ...]

    def how_to_get(self, files: Sequence[HubFile] | None = None) -> str:
        files = list(files or self.files)
        commands = "; ".join(f"`hf download {f.repo_id} {f.filename}`"
                             + (f" ({f.label})" if f.label else "") for f in files)
        return (f"Put the weights in the Hugging Face cache with {commands} — or download "
                f"{files[0].url} anywhere and pass checkpoint=<path> or set {self.env}=<path>. "
                "msagent never downloads them.")


def hf_cache_dir() -> str | None:
    """The hub cache as the environment says now (``HF_HUB_CACHE``, then ``HF_HOME/hub``);
    None lets huggingface_hub use its default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hf_cached(file: HubFile) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(file.repo_id, file.filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def resolve_checkpoint(source: WeightsSource, checkpoint: str | os.PathLike | None = None,
                       files: Sequence[HubFile] | None = None) -> Path:
    """The checkpoint path: explicit, then ``source.env``, then the first of ``files``
    (default: all of ``source.files``) found in the HF cache; else :class:`WeightsNotFound`."""
    files = list(files or source.files)
    explicit = checkpoint or os.environ.get(source.env)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            origin = "checkpoint=" if checkpoint else f"${source.env}"
            raise WeightsNotFound(f"{source.what} weights not found at {path} (from {origin}). "
                                  + source.how_to_get(files))
        return path
    for file in files:
        path = hf_cached(file)
        if path is not None:
            log.info("using %s weights from the Hugging Face cache: %s", source.what, path)
            return path
    names = ", ".join(f"{f.repo_id}/{f.filename}" for f in files)
    raise WeightsNotFound(f"{source.what} weights are not on this machine: no checkpoint= given, "
                          f"${source.env} unset, and none of {names} in the Hugging Face cache. "
                          + source.how_to_get(files))


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU and unwrap ``{"model": …}``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise WeightsMismatch(f"cannot read {path} as a PyTorch checkpoint with "
                              f"weights_only=True ({type(exc).__name__}: {exc}); expected a "
                              "SAM2.1/MedSAM2 .pt file") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()} \
        if isinstance(state, Mapping) else state
    if not isinstance(state, Mapping) or TRUNK_KEY not in state:
        raise WeightsMismatch(f"{path} is not a SAM2 checkpoint (no {TRUNK_KEY}); expected "
                              "{'model': state_dict} as in sam2.1_hiera_*.pt / MedSAM2_latest.pt")
    return dict(state)


def infer_variant(state: Mapping[str, torch.Tensor], source: Path | str = "checkpoint") -> str:
    """The SAM2.1 variant from the Hiera trunk's width and depth."""
    width = int(state[TRUNK_KEY].shape[0])
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks.")}
    shape = (width, max(blocks) + 1 if blocks else 0)
    if shape not in HIERA_SHAPES:
        raise WeightsMismatch(f"{source} has a Hiera trunk of width {shape[0]} with {shape[1]} "
                              "blocks, which is none of SAM2.1 tiny/small/base_plus/large")
    return HIERA_SHAPES[shape]


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
              source: Path | str = "checkpoint") -> None:
    """Load ``state`` strictly; a mismatch raises :class:`WeightsMismatch`."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsMismatch(f"{source} does not fit the SAM2 architecture: {exc}") from None
