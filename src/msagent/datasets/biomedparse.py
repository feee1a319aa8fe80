"""The BiomedParse / UniBioMed dataset layout.

One dataset folder holds ``{split}.json``, the images under ``{split}/`` and the masks under
``{split}_mask/``; a collection nests many such folders (e.g. ``BiomedParseData/amos22/CT``).
Two JSON shapes are read:

- COCO-like (BiomedParse, UniBioMed, MedSAM-Agent's evaluation): a dict whose
  ``annotations`` each carry ``mask_file``, ``sentences[0].sent`` (the target text), the image
  as ``file_name`` (or via ``image_id`` → ``images[].file_name``) and optionally ``split``;
- entry lists: a list (or a dict with ``images``) of entries, each with an image file
  (``file_name`` or ``image``) and nested ``annotations`` as above.

BiomedParse names files ``{image}_{modality}_{site}.png`` and masks
``{image}_{modality}_{site}_{target}.png``; modality, site and class are taken from explicit
fields when present, else from these names. Case ids are ``{dataset}/{split}/{mask stem}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from msagent.datasets._base import CaseRef, Dataset, ImageMaskFiles, relative, unique_ids
from msagent.errors import InvalidInput


def is_split_json(path: Path) -> bool:
    """``{split}.json`` next to a ``{split}/`` or ``{split}_mask/`` folder."""
    return path.suffix == ".json" and path.is_file() and (
        (path.parent / path.stem).is_dir() or (path.parent / f"{path.stem}_mask").is_dir())


def find_split_files(root: Path, split: str | None = None) -> list[Path]:
    """Every ``{split}.json`` under ``root`` (sorted, so the case order is stable)."""
    if root.is_file():
        return [root]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if is_split_json(path) and (split is None or path.stem == split):
                found.append(path)
    return found


def read_biomedparse(root: str | os.PathLike, split: str | None = None, *,
                     modality: str | None = None, dataset: str | None = None) -> Dataset:
    """Cases of every ``{split}.json`` under ``root`` (a collection, one dataset folder, or a
    JSON file). ``split`` limits to one split (default: all found); ``modality``/``dataset``
    override what the files say."""
    root = Path(root)
    if not root.exists():
        raise InvalidInput(f"dataset path not found: {root}")
    files = find_split_files(root, split)
    if not files:
        which = f"{split}.json" if split else "{split}.json"
        raise InvalidInput(f"no BiomedParse split file ({which} beside a {{split}}/ or "
                           f"{{split}}_mask/ folder) under {root}")
    base = root if root.is_dir() else root.parent.parent
    refs: list[CaseRef] = []
    for path in files:
        refs.extend(_read_split(path, dataset or _dataset_name(path.parent, base), modality))
    return Dataset(tuple(unique_ids(refs)), dataset or (root if root.is_dir() else root.parent).name)


def _dataset_name(folder: Path, base: Path) -> str:
    """The dataset folder's path below the collection root, or its own name."""
    return folder.name if folder == base else relative(folder, base)


def _read_split(path: Path, dataset: str, modality: str | None) -> list[CaseRef]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not a readable JSON file: {exc}") from None
    refs = []
    for image_file, ann, image_info in _annotations(data, path):
        refs.append(_case_ref(path, dataset, image_file, ann, image_info, modality))
    return refs


def _annotations(data: Any, path: Path) -> Iterator[tuple[str, dict, dict]]:
    """(image file, annotation, image record) for both JSON shapes."""
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        images = {img.get("id"): img for img in data.get("images", []) if isinstance(img, dict)}
        for ann in data["annotations"]:
            info = images.get(ann.get("image_id"), {})
            image_file = ann.get("file_name") or ann.get("image") or info.get("file_name")
            if not image_file:
                raise InvalidInput(f"{path}: annotation {ann.get('id', '?')} names no image "
                                   "(expected file_name, image or image_id)")
            yield image_file, ann, info
        return
    entries = data.get("images") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise InvalidInput(f"{path}: expected a dict with 'annotations' or a list of entries")
    for entry in entries:
        image_file = entry.get("file_name") or entry.get("image")
        for ann in entry.get("annotations", []):
            yield image_file, ann, entry


def _case_ref(path: Path, dataset: str, image_file: str, ann: dict, info: dict,
              modality: str | None) -> CaseRef:
    if "mask_file" not in ann:
        raise InvalidInput(f"{path}: an annotation of {image_file} has no mask_file")
    target = _target_text(ann, path)
    split = ann.get("split") or info.get("split") or path.stem
    image_path = path.parent / split / image_file
    mask_path = path.parent / f"{split}_mask" / ann["mask_file"]
    parsed = _parse_names(Path(image_file).stem, Path(ann["mask_file"]).stem)
    meta = {
        "dataset": dataset,
        "split": split,
        "modality": modality or ann.get("modality") or info.get("modality") or parsed["modality"],
        "site": ann.get("site") or info.get("site") or parsed["site"],
        "class": ann.get("class") or ann.get("category") or parsed["class"] or target,
        "image": relative(image_path, path.parent),
        "mask": relative(mask_path, path.parent),
    }
    case_id = f"{dataset}/{split}/{Path(ann['mask_file']).stem}"
    return CaseRef(case_id, target, ImageMaskFiles(str(image_path), str(mask_path)), meta)


def _target_text(ann: dict, path: Path) -> str:
    sentences = ann.get("sentences")
    if isinstance(sentences, list) and sentences:
        first = sentences[0]
        text = first.get("sent") if isinstance(first, dict) else first
        if isinstance(text, str) and text.strip():
            return text.strip()
    raise InvalidInput(f"{path}: annotation {ann.get('mask_file')} has no sentences[0].sent "
                       "target text")


def _parse_names(image_stem: str, mask_stem: str) -> dict[str, str]:
    """BiomedParse names: image ``{name}_{modality}_{site}``, mask ``{image}_{target}``."""
    parts = image_stem.rsplit("_", 2)
    modality, site = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
    target = ""
    if mask_stem.startswith(image_stem + "_"):
        target = mask_stem[len(image_stem) + 1:].replace("+", " ")
    return {"modality": modality, "site": site.replace("+", " "), "class": target}
