"""Lazy datasets: a :class:`Dataset` is an ordered sequence of :class:`CaseRef` (id, target,
metadata and a picklable loader); iterating it loads :class:`~msagent.types.Case` objects one
at a time, so listing a large dataset (or shipping it to Ray workers) reads no pixels."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import cv2
import numpy as np

from msagent import io
from msagent.types import Case, _dict, _tuple

log = logging.getLogger(__name__)
Loader = Callable[[], tuple[np.ndarray, np.ndarray]]


@attrs.frozen(eq=False)
class CaseRef:
    """A case not loaded yet: ``loader()`` returns (H×W×3 uint8 image, H×W bool mask).

    ``meta`` holds JSON-safe strings/numbers; readers set at least ``dataset``, ``modality``,
    ``class`` and ``split`` (empty strings when unknown).
    """

    id: str
    target: str
    loader: Loader
    meta: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)

    def load(self) -> Case:
        image, mask = self.loader()
        return Case(id=self.id, image=image, target=self.target, ground_truth=mask, meta=self.meta)


@attrs.frozen(eq=False)
class Dataset:
    """An ordered, lazily loaded collection of cases. Iterating yields :class:`Case` objects;
    ``dataset[i]`` loads one case, ``dataset[a:b]`` is a smaller Dataset. The ground truth of
    a loaded case may be empty when the source has an empty mask (check ``.any()``). A
    dataset of whole-volume cases (:class:`~msagent.datasets.volumes.VolumeCase` refs) yields
    :class:`~msagent.datasets.volumes.LoadedVolume` objects instead, one volume at a time."""

    refs: tuple[CaseRef, ...] = attrs.field(converter=_tuple)
    name: str = ""

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for ref in self.refs:
            if ref.id in seen:
                raise ValueError(f"duplicate case id {ref.id!r} in dataset {self.name!r}")
            seen.add(ref.id)

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self) -> Iterator[Case]:
        for ref in self.refs:
            yield ref.load()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Dataset(self.refs[index], self.name)
        return self.refs[index].load()

    def __add__(self, other: "Dataset") -> "Dataset":
        name = "+".join(n for n in (self.name, other.name) if n)
        return Dataset(self.refs + other.refs, name)

    @property
    def ids(self) -> list[str]:
        return [ref.id for ref in self.refs]

    def fingerprint(self) -> str:
        """SHA-256 of the case ids and targets in order (what a job's shards are based on)."""
        digest = hashlib.sha256()
        for ref in self.refs:
            digest.update(f"{ref.id}\x00{ref.target}\x01".encode())
        return digest.hexdigest()


def concat(datasets: Iterable[Dataset]) -> Dataset:
    """Datasets one after the other (ids must stay unique)."""
    refs: list[CaseRef] = []
    names = []
    for dataset in datasets:
        refs.extend(dataset.refs)
        if dataset.name:
            names.append(dataset.name)
    return Dataset(tuple(refs), "+".join(names))


@attrs.frozen
class ImageMaskFiles:
    """Loader of a 2-D image file and a mask file (nonzero = target). A mask of a different
    size is resized to the image with nearest-neighbour interpolation (as upstream does)."""

    image: str
    mask: str

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        image = io.to_rgb_uint8(self.image)
        mask = io.to_mask(self.mask, allow_empty=True, what=f"mask {self.mask}")
        if mask.shape != image.shape[:2]:
            log.debug("resizing mask %s from %s to %s", self.mask, mask.shape, image.shape[:2])
            mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
        return image, mask


def slug(text: str) -> str:
    """A short id-safe form of a text: lower case, runs of other characters → '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "target"


def unique_ids(refs: list[CaseRef]) -> list[CaseRef]:
    """Make ids unique by suffixing repeats with '#2', '#3', ... (order kept)."""
    counts: dict[str, int] = {}
    out = []
    for ref in refs:
        counts[ref.id] = counts.get(ref.id, 0) + 1
        out.append(ref if counts[ref.id] == 1 else attrs.evolve(ref, id=f"{ref.id}#{counts[ref.id]}"))
    return out


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form (as stored in metadata)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
