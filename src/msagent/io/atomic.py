"""Writing job outputs so that a resume can trust them, and checking them before it does.

- :func:`atomic_write`: a temporary file in the same folder, fsync, ``os.replace``: a reader
  sees the old file or the new one, never a torn one, whatever kills the writer. A file-system
  error (disk full, read-only folder, no permission) becomes :class:`OutputError`, one line
  naming the path and the remedy, and leaves no temporary file behind.
  :func:`atomic_output` is the same for writers that need a file name (nibabel, pydicom).

  What the path is decides how (:func:`output_target`): a regular file or a new name is
  replaced atomically; a symlink is followed and its final target replaced atomically (the
  link stays; a dangling link creates its target; a loop is refused); a character device
  (``/dev/null``, ``/dev/stdout``) or a FIFO is opened and written directly, like a shell
  redirect (no temporary file next to it, no atomicity: a FIFO waits for its reader); a
  folder, a socket or a block device is refused. Nothing but a regular file is ever renamed
  onto.
- :func:`read_json_file`: a JSON file the job wrote itself (manifests), or
  :class:`~msagent.errors.InvalidInput` saying it was damaged and what to do.
- :func:`parquet_is_complete`: whether a Parquet file written by a job is whole: its footer
  and every page read back, and its row count equals the one recorded in its metadata.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from msagent.errors import InvalidInput, OutputError

ROWS_KEY = b"msagent.rows"  # Parquet key-value metadata: the rows the writer meant to write
_REMEDIES: dict[int | None, str] = {
    errno.ENOSPC: "the disk is full: free space on it, or write to another folder",
    errno.EDQUOT: "the disk quota is used up: free space, or write to another folder",
    errno.EROFS: "the file system is read-only: write to another folder",
    errno.EACCES: "no permission to write there: write to another folder, or fix its permissions",
    errno.EPERM: "no permission to write there: write to another folder, or fix its permissions",
}


def remedy_for(exc: OSError) -> str:
    """What to do about a file-system error, in words."""
    return _REMEDIES.get(exc.errno, "check the folder and the disk, then run again (finished "
                                    "work is kept)")


def output_error(exc: OSError, path: str | os.PathLike) -> OutputError:
    """``exc`` (raised while writing ``path``) as one line with a remedy."""
    error = OutputError(f"cannot write {path}: {exc.strerror or exc}; {remedy_for(exc)}")
    error.errno, error.filename = exc.errno, str(path)  # still an OSError a caller can inspect
    return error


def output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where a write to ``path`` goes and whether it is a stream: ``(file, False)`` for a
    regular file or a new name (a symlink resolved to its final target), to be replaced
    atomically; ``(path, True)`` for a character device or a FIFO, to be written directly.
    Raises :class:`OutputError` for a folder, a socket, a block device or a symlink loop."""
    path = Path(path)
    try:
        mode: int | None = os.stat(path).st_mode  # follows symlinks
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(path, "a symlink that never resolves (a loop)") from None
        mode = None  # a new name (or a dangling link): created below
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return path, True
    if mode is not None and stat.S_ISDIR(mode):
        raise _refused(path, "a folder; give a file name inside it")
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode) \
            else "not a regular file"
        raise _refused(path, f"{kind}; msagent writes regular files, character devices "
                             "(/dev/null, /dev/stdout) and FIFOs")
    if path.is_symlink():
        path = Path(os.path.realpath(path))
        if path.is_symlink():  # realpath gives up on a loop it cannot stat
            raise _refused(path, "a symlink that never resolves (a loop)")
    return path, False


def _refused(path: Path, what: str) -> OutputError:
    error = OutputError(f"cannot write {path}: it is {what}")
    error.errno, error.filename = errno.EINVAL, str(path)
    return error


def _temporary(path: Path, suffix: str = "") -> Path:
    """The temporary name next to ``path``: its name, the process id and ``suffix``; a name
    too long for that (file names are at most 255 bytes) is shortened to its hash."""
    name = f".{path.name}.{os.getpid()}.tmp{suffix}"
    if len(os.fsencode(name)) > 255:
        digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
        name = f".{digest}.{os.getpid()}.tmp{suffix}"
    return path.with_name(name)


def _write_stream(path: Path, chunks) -> None:
    """Write ``chunks`` (bytes) into the character device or FIFO ``path``, opened without
    creating or truncating anything (a FIFO waits for its reader, as a shell redirect does)."""
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
    with open(fd, "wb") as handle:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by a file since it was looked at
            raise _refused(path, "a regular file now; write again")
        for chunk in chunks:
            handle.write(chunk)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and ``os.replace`` (a
    character device or a FIFO is written directly; see :func:`output_target`)."""
    requested = path
    path, stream = output_target(path)
    if stream:
        try:
            _write_stream(path, [data])
        except OutputError:
            raise
        except OSError as exc:
            raise output_error(exc, requested) from None
        return
    tmp = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(exc, requested) from None


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path next to ``path`` (ending in ``suffix``, for writers that choose the
    format by name, like ``.nii.gz``) for a writer that needs a file name; when the block
    ends, the file is fsynced and renamed onto ``path``. The temporary file never outlives
    the block; file-system errors (disk full, read-only, no permission) become
    :class:`OutputError`; the writer's other errors propagate as they are. For a character
    device or a FIFO (:func:`output_target`) the temporary is in the system's temporary
    folder and its bytes are copied into ``path``."""
    requested = path
    path, stream = output_target(path)
    scratch = Path(tempfile.mkdtemp(prefix="msagent-out-")) if stream else None
    tmp = scratch / f"out{suffix}" if scratch is not None else _temporary(path, suffix)
    try:
        if scratch is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as handle:
            if scratch is not None:
                _write_stream(path, iter(lambda: handle.read(1 << 20), b""))
            else:
                os.fsync(handle.fileno())
        if scratch is None:
            os.replace(tmp, path)
    except OSError as exc:
        if exc.errno is None or isinstance(exc, OutputError):  # not the file system's doing
            raise
        raise output_error(exc, requested) from None
    finally:
        tmp.unlink(missing_ok=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def read_json_file(path: str | os.PathLike, what: str, remedy: str, kind: type = dict) -> Any:
    """The JSON ``kind`` in ``path`` (a job's own manifest); InvalidInput if it is damaged."""
    try:
        value = json.loads(Path(path).read_bytes())
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        problem = type(exc).__name__
    else:
        if isinstance(value, kind):
            return value
        problem = f"a JSON {type(value).__name__}, not a {kind.__name__}"
    raise InvalidInput(f"{path} is not a readable {what} ({problem}); it was damaged outside "
                       f"msagent: {remedy}")


def parquet_bytes(rows, schema=None) -> bytes:
    """``rows`` (a list of dicts with ``schema``, or a pyarrow Table) as zstd Parquet bytes,
    with the row count in the file's metadata for :func:`parquet_is_complete`. Deterministic
    for the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    meta = {**(table.schema.metadata or {}), ROWS_KEY: str(table.num_rows).encode()}
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(meta), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def parquet_is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` reads back whole and holds the rows its writer recorded (files
    without that record, from older versions, only need to read back whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException, ValueError):
        return False
    recorded = (table.schema.metadata or {}).get(ROWS_KEY)
    return recorded is None or recorded == str(table.num_rows).encode()
