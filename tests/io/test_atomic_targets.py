"""What the atomic writers do with a path that is not a regular file (issue 26, item 5):
character devices and FIFOs are written directly (never replaced by a file), a symlink is
written through to its target atomically, folders, sockets and block devices are refused."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from msagent.errors import OutputError
from msagent.io.atomic import atomic_output, atomic_write


def _fifo_reader(path: Path) -> tuple[threading.Thread, list[bytes]]:
    received: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as handle:  # blocks until the writer opens the FIFO
            received.append(handle.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, received


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_atomic_write_to_a_fifo_writes_into_it_and_keeps_it_a_fifo(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    thread, received = _fifo_reader(fifo)
    atomic_write(fifo, b'{"a": 1}')
    thread.join(10)
    assert received == [b'{"a": 1}']
    assert fifo.is_fifo()  # before: os.replace made it a regular JSON file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]  # no temporary left


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_atomic_output_to_a_fifo_copies_the_written_file_into_it(tmp_path):
    fifo = tmp_path / "mask.fifo"
    os.mkfifo(fifo)
    thread, received = _fifo_reader(fifo)
    data = os.urandom(300_000)  # more than a pipe's buffer
    with atomic_output(fifo, ".nii.gz") as tmp:
        assert tmp.parent != tmp_path and tmp.name.endswith(".nii.gz")  # not next to the FIFO
        tmp.write_bytes(data)
    thread.join(10)
    assert received == [data]
    assert fifo.is_fifo() and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.fifo"]


def test_atomic_writers_write_to_dev_null_and_leave_it_a_device(monkeypatch):
    from msagent.io import atomic

    null = Path("/dev/null")
    if not null.is_char_device():
        pytest.skip("no /dev/null character device")

    def guard(src, dst):  # a regression must fail here, not replace the machine's /dev/null
        Path(src).unlink(missing_ok=True)
        raise AssertionError(f"os.replace({src}, {dst}) onto a device")

    monkeypatch.setattr(atomic.os, "replace", guard)
    atomic_write(null, b"x" * 1000)
    with atomic_output(null, ".png") as tmp:
        tmp.write_bytes(b"png")
    assert null.is_char_device() and not tmp.exists()


def test_a_symlink_is_written_through_to_its_target_atomically(tmp_path):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "trajectory.json"
    target.write_bytes(b"old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    atomic_write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link is kept
    assert target.read_bytes() == b"new"
    with atomic_output(link, ".json") as tmp:
        assert tmp.parent == target.parent  # the temporary is next to the target: one rename
        tmp.write_bytes(b"newer")
    assert link.is_symlink() and target.read_bytes() == b"newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "latest.json"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["trajectory.json"]


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "real.json")
    atomic_write(link, b"{}")
    assert link.is_symlink() and (tmp_path / "real.json").read_bytes() == b"{}"


def test_a_relative_symlink_chain_is_followed(tmp_path):
    (tmp_path / "real.json").write_bytes(b"old")
    (tmp_path / "one.json").symlink_to("real.json")
    (tmp_path / "two.json").symlink_to("one.json")
    atomic_write(tmp_path / "two.json", b"new")
    assert (tmp_path / "two.json").is_symlink() and (tmp_path / "one.json").is_symlink()
    assert (tmp_path / "real.json").read_bytes() == b"new"


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OutputError, match="symlink"):
        atomic_write(tmp_path / "a", b"x")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()


def test_a_folder_is_refused_with_a_remedy(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        atomic_write(tmp_path / "out", b"x")
    with pytest.raises(OutputError, match="is a folder"):
        with atomic_output(tmp_path / "out"):
            pass
    assert (tmp_path / "out").is_dir()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_a_socket_is_refused_and_kept(tmp_path):
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        with pytest.raises(OutputError, match="socket"):
            atomic_write(path, b"x")
        assert path.is_socket()
    finally:
        server.close()


def test_a_regular_file_is_still_replaced_atomically(tmp_path, monkeypatch):
    from msagent.io import atomic

    renames = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace",
                        lambda a, b: (renames.append(Path(b).name), real_replace(a, b)))
    (tmp_path / "x.json").write_bytes(b"old")
    atomic_write(tmp_path / "x.json", b"new")
    atomic_write(tmp_path / "y.json", b"fresh")
    assert renames == ["x.json", "y.json"]
    assert (tmp_path / "x.json").read_bytes() == b"new"


def test_a_long_file_name_gets_a_temporary_that_fits(tmp_path):
    name = "a" * 250 + ".json"  # the file name fits (255 bytes), name + temp suffix would not
    atomic_write(tmp_path / name, b"{}")
    with atomic_output(tmp_path / name, ".json") as tmp:
        tmp.write_bytes(b"[]")
    assert (tmp_path / name).read_bytes() == b"[]"
    assert [p.name for p in tmp_path.iterdir()] == [name]
