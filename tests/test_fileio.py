"""Atomic writers: the target appears whole or not at all, with the usual permissions."""

import os
import stat

import pytest

from rotated_ddetr.fileio import atomic_open, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "labels.txt"
    atomic_write_text(target, "a\n")
    atomic_write_text(target, "b\n")
    assert target.read_text() == "b\n"
    assert os.listdir(target.parent) == ["labels.txt"]
    atomic_write_bytes(tmp_path / "x.bin", b"\x00\x01")
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "labels.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half of the new")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["labels.txt"]


def test_written_files_get_the_umask_mode_not_private(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_bad_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="modes 'w' and 'wb'"), atomic_open(tmp_path / "a", "a"):
        pass
