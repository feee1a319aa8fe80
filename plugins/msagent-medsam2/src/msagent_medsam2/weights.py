"""Finding and loading SAM2.1 / MedSAM2 checkpoints (never downloads).

Resolution order, per backbone: the ``checkpoint=`` option, the backbone's environment
variable (``$MSAGENT_MEDSAM2_CHECKPOINT``, ``$MSAGENT_SAM2_CHECKPOINT``), the Hugging Face
cache (``huggingface_hub.try_to_load_from_cache``). Files are read with
``torch.load(weights_only=True, map_location="cpu")``; the official layout (sam2's
``_load_checkpoint``, and MedSAM2's files) is ``{"model": state_dict}``; flat state_dicts are
accepted too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import torch

from msagent.backbones import weights
from msagent.errors import WeightsMismatch

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
                f"{files[0].url} anywhere and pass checkpoint=<path> "
                f"(CLI: --backbone-option checkpoint=<path>) or set {self.env}=<path>. "
                "msagent never downloads them.")


def resolve_checkpoint(source: WeightsSource, checkpoint: str | os.PathLike | None = None,
                       files: Sequence[HubFile] | None = None) -> Path:
    """The checkpoint path: explicit, then ``source.env``, then the first of ``files``
    (default: all of ``source.files``) found in the HF cache; else :class:`WeightsNotFound`."""
    files = list(files or source.files)
    return weights.resolve_checkpoint(checkpoint, source.env,
                                      [(f.repo_id, f.filename) for f in files],
                                      what=source.what, hint=source.how_to_get(files))


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely onto the CPU, unwrap ``{"model": …}`` and check it is SAM2."""
    return weights.load_state_dict(path, require=("SAM2", TRUNK_KEY),
                                   expected="{'model': state_dict} as in sam2.1_hiera_*.pt / "
                                            "MedSAM2_latest.pt")


def infer_variant(state: Mapping[str, torch.Tensor], source: Path | str = "checkpoint") -> str:
    """The SAM2.1 variant from the Hiera trunk's width and depth."""
    width = int(state[TRUNK_KEY].shape[0])
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks.")}
    shape = (width, max(blocks) + 1 if blocks else 0)
    if shape not in HIERA_SHAPES:
        raise WeightsMismatch(f"{source} has a Hiera trunk of width {shape[0]} with {shape[1]} "
                              "blocks, which is none of SAM2.1 tiny/small/base_plus/large")
    return HIERA_SHAPES[shape]

