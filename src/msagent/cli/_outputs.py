"""Output-path checks shared by the 2-D and the volume forms of ``msagent segment``."""

from __future__ import annotations

from pathlib import Path


def check_path(path) -> None:
    """Refuse an output path that is a folder or lies under a file."""
    from msagent.errors import InvalidInput

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder; give a file name for the output")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise InvalidInput(f"cannot write {path}: {blocking} is a file, not a folder")
